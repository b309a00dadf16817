//! The controller's schedule: when each app is looked at next, and why. Pure: time is passed
//! in, nothing is spawned or awaited, so every rule is tested under tokio's paused time.
//!
//! - One due time per app; the earliest wins. An app in flight is never handed out again
//!   until its report is [recorded](Schedule::record).
//! - A report that asks to look again ([`crate::apply::Requeue`]) is due then, with what it
//!   waits for: it resumes the wait, without its group's list.
//! - Otherwise the [error policy](Schedule::error_policy) decides: an app in sync, suspended or
//!   blocked comes back at its resource group's resync (blocked is not a failure: retrying
//!   cannot cure it, a change of its spec or of the live app can, and the fingerprint shows
//!   both); a failure backs off exponentially with jitter, capped, reset by a success.
//! - The unit of cost is the resource group: observing any of its apps costs one list of all
//!   of them. So the resync is jittered (±10%) per resource group, and when one app of a
//!   group comes due, its siblings due within the jitter window ride along on the same list.
//! - A verdict (in sync, or blocked) from a full read is remembered with the app's
//!   fingerprint; while it holds, the app's revisions are not read, for up to
//!   `reverify_after` resyncs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::apply::{AppReport, Failure, Verification, Wait};
use crate::pass::Verdict;
use crate::spec::AppKey;
use crate::state::AppState;

/// How the schedule behaves.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// Full resync period.
    pub interval: Duration,
    /// First retry delay after a failure (doubled per failure).
    pub backoff_base: Duration,
    /// Largest retry delay.
    pub backoff_cap: Duration,
    /// A verdict is trusted for this many resyncs without a full read.
    pub reverify_after: u32,
    /// The waits of one resource group are looked at together, at most once per this tick:
    /// one list of the group answers them all ([`crate::apply::bulk`]).
    pub wait_tick: Duration,
}

/// When an app is due, and what it resumes.
#[derive(Debug, Clone)]
struct Due {
    at: Instant,
    wait: Option<Wait>,
}

/// The apps a pass takes on.
#[derive(Debug, Default)]
pub struct Batch {
    /// Observe (through their groups' lists) and reconcile.
    pub observe: Vec<AppKey>,
    /// Resume their waits.
    pub resume: Vec<(AppKey, Wait)>,
    /// Verdicts still trusted, by app, for the observed apps.
    pub verdicts: BTreeMap<AppKey, Verdict>,
    /// Observed apps whose first full verification may wait ([`Schedule::spread`]).
    pub spread: BTreeSet<AppKey>,
}

impl Batch {
    /// Every app of the batch.
    pub fn apps(&self) -> impl Iterator<Item = &AppKey> {
        self.observe
            .iter()
            .chain(self.resume.iter().map(|(k, _)| k))
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.observe.is_empty() && self.resume.is_empty()
    }
}

/// The schedule.
#[derive(Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    due: BTreeMap<AppKey, Due>,
    in_flight: BTreeSet<AppKey>,
    failures: BTreeMap<AppKey, u32>,
    /// App -> (its verdict, resyncs since it was read in full).
    verdicts: BTreeMap<AppKey, (Verdict, u32)>,
    /// Resource group -> its next resync.
    group_next: BTreeMap<(String, String), Instant>,
    /// Resource group -> when its waits were last handed out together.
    waits_taken: BTreeMap<(String, String), Instant>,
    /// Apps not looked at since the controller started, whose first full verification may
    /// wait ([`crate::apply::Reconcile::spread`]).
    spread: BTreeSet<AppKey>,
}

fn group_of(k: &AppKey) -> (&str, &str) {
    (&k.subscription, &k.resource_group)
}

/// ±10% of `d`, from a cheap per-call random number (jitter needs no cryptography).
pub fn jittered(d: Duration) -> Duration {
    let factor = 0.9 + (random() % 2001) as f64 / 10_000.0;
    d.mul_f64(factor)
}

/// A random age in `0..limit`.
fn stagger(limit: u32) -> u32 {
    u32::try_from(random() % u64::from(limit.max(1))).unwrap_or(0)
}

/// A random number from std's per-instance hash keys: enough for jitter, no dependency.
fn random() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8)
}

impl Schedule {
    /// An empty schedule.
    pub fn new(config: ScheduleConfig) -> Self {
        Self {
            config,
            due: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            failures: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            group_next: BTreeMap::new(),
            waits_taken: BTreeMap::new(),
            spread: BTreeSet::new(),
        }
    }

    /// Lets the first full verification of `apps` wait, each until a random resync within
    /// `reverify_after` (as an app verified for the first time is re-verified), when its first
    /// look finds it in sync as far as its group's list shows: a controller started on a fleet
    /// reads one slice of it in full per resync, not all of it at the first.
    pub fn spread(&mut self, apps: impl IntoIterator<Item = AppKey>) {
        self.spread.extend(apps);
    }

    /// When an entry can be handed out: a wait no sooner than a tick after its group's waits
    /// were last handed out (they were looked at then, on one list).
    fn ready_at(&self, key: &AppKey, due: &Due) -> Instant {
        if due.wait.is_none() {
            return due.at;
        }
        let (sub, rg) = group_of(key);
        match self.waits_taken.get(&(sub.to_owned(), rg.to_owned())) {
            Some(last) => due.at.max(*last + self.config.wait_tick),
            None => due.at,
        }
    }

    /// Makes `app` due at `at` (or keeps an earlier due time). A wait it had is dropped: it
    /// will be observed afresh (a new spec, a trigger).
    pub fn due_at(&mut self, app: &AppKey, at: Instant) {
        let entry = self
            .due
            .entry(app.clone())
            .or_insert(Due { at, wait: None });
        entry.at = entry.at.min(at);
        entry.wait = None;
    }

    /// Forgets an app no document names any more.
    pub fn forget(&mut self, app: &AppKey) {
        self.due.remove(app);
        self.verdicts.remove(app);
        self.failures.remove(app);
    }

    /// Forgets every verdict: the next look at each app reads it in full.
    pub fn clear_verdicts(&mut self) {
        self.verdicts.clear();
        self.spread.clear();
    }

    /// Apps waiting to be handed out.
    pub fn queue_depth(&self) -> usize {
        self.due.len()
    }

    /// Apps waiting on Azure between two reconciles (a requeue with a wait).
    pub fn waiting(&self) -> usize {
        self.due.values().filter(|d| d.wait.is_some()).count()
    }

    /// Apps being worked on.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// When the next app comes due (`None`: none is scheduled).
    pub fn next_due(&self) -> Option<Instant> {
        self.due.iter().map(|(k, d)| self.ready_at(k, d)).min()
    }

    /// Hands out every app due by `now` that is not in flight, with its group siblings due
    /// within the jitter window (not backing off, not resuming a wait), and marks them in
    /// flight. The waits of a group go together: when one is due, every other due within a
    /// wait tick rides along, and the group's waits are next handed out a tick later, so
    /// that one list of the group a tick answers them all.
    pub fn take_ready(&mut self, now: Instant) -> Batch {
        let mut ready: Vec<AppKey> = self
            .due
            .iter()
            .filter(|(k, d)| self.ready_at(k, d) <= now && !self.in_flight.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        let waiting: BTreeSet<(String, String)> = ready
            .iter()
            .filter(|k| self.due.get(*k).is_some_and(|d| d.wait.is_some()))
            .map(|k| (k.subscription.clone(), k.resource_group.clone()))
            .collect();
        let tick = now + self.config.wait_tick;
        let wait_riders: Vec<AppKey> = self
            .due
            .iter()
            .filter(|(k, d)| {
                d.at > now
                    && d.at <= tick
                    && d.wait.is_some()
                    && !self.in_flight.contains(*k)
                    && waiting.contains(&(k.subscription.clone(), k.resource_group.clone()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for group in waiting {
            self.waits_taken.insert(group, now);
        }
        ready.extend(wait_riders);
        let listed: BTreeSet<(&str, &str)> = ready
            .iter()
            .filter(|k| self.due.get(*k).is_some_and(|d| d.wait.is_none()))
            .map(group_of)
            .collect();
        let window = now + self.config.interval / 10;
        let riders: Vec<AppKey> = self
            .due
            .iter()
            .filter(|(k, d)| {
                d.at > now
                    && d.at <= window
                    && d.wait.is_none()
                    && !self.in_flight.contains(*k)
                    && !self.failures.contains_key(*k)
                    && listed.contains(&group_of(k))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut batch = Batch::default();
        for key in ready.into_iter().chain(riders) {
            let Some(due) = self.due.remove(&key) else {
                continue;
            };
            self.in_flight.insert(key.clone());
            match due.wait {
                Some(wait) => batch.resume.push((key, wait)),
                None => {
                    if self.spread.remove(&key) {
                        batch.spread.insert(key.clone());
                    }
                    if let Some((verdict, age)) = self.verdicts.get(&key)
                        && *age < self.config.reverify_after
                    {
                        batch.verdicts.insert(key.clone(), verdict.clone());
                    }
                    batch.observe.push(key);
                }
            }
        }
        batch
    }

    /// How long to wait after `failures` failures in a row: base * 2^(n-1), jittered, capped.
    /// A failure that trying again cannot cure by itself (Azure refused: a 403, a 400) starts
    /// four steps further on: its cause is fixed by a person, so hammering it helps no one, yet
    /// it is still looked at again (permissions do get granted).
    pub fn error_policy(&self, failures: u32, retryable: bool) -> Duration {
        let steps = failures.saturating_sub(1) + if retryable { 0 } else { 4 };
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << steps.min(16));
        jittered(exp.min(self.config.backoff_cap))
    }

    /// Records an app's report: frees it, and schedules it (when `managed`, i.e. a document
    /// still names it). Returns when it is due next.
    pub fn record(&mut self, report: &AppReport, managed: bool, now: Instant) -> Option<Instant> {
        self.remember(report);
        self.in_flight.remove(&report.app);
        if report.standby {
            // Not a failure of the app: it waits for this replica to lead again.
            if managed {
                self.due_at(&report.app, now);
            }
            return managed.then_some(now);
        }
        let (at, wait) = if let Some(requeue) = &report.requeue {
            self.failures.remove(&report.app);
            (now + requeue.after, Some(requeue.wait.clone()))
        } else {
            match report.state {
                AppState::InSync
                | AppState::Suspended
                | AppState::Blocked
                | AppState::RolledBack
                | AppState::Progressing => {
                    self.failures.remove(&report.app);
                    (self.group_resync(&report.app, now), None)
                }
                _ => {
                    let n = self.failures.entry(report.app.clone()).or_insert(0);
                    *n += 1;
                    let n = *n;
                    let retryable = report.error.as_ref().is_none_or(Failure::is_retryable);
                    (now + self.error_policy(n, retryable), None)
                }
            }
        };
        if !managed {
            return None;
        }
        let entry = self.due.entry(report.app.clone()).or_insert(Due {
            at,
            wait: wait.clone(),
        });
        // Something made the app due earlier while it was in flight (an edit, a trigger):
        // that wins, and observes it afresh.
        if at < entry.at {
            *entry = Due { at, wait };
        }
        Some(entry.at)
    }

    /// Failures in a row of `app`.
    pub fn failures(&self, app: &AppKey) -> u32 {
        self.failures.get(app).copied().unwrap_or(0)
    }

    /// Frees the apps of a pass that ended without reporting them (it panicked): each is
    /// recorded as failing, or it would wait for that pass forever.
    pub fn abandon(&mut self, apps: &[AppKey], now: Instant) -> Vec<AppReport> {
        let lost: Vec<AppReport> = apps
            .iter()
            .filter(|a| self.in_flight.contains(*a))
            .map(|a| AppReport::new(a.clone(), AppState::Failing).because(Failure::Abandoned))
            .collect();
        for r in &lost {
            self.record(r, true, now);
        }
        lost
    }

    /// Drops group resync times that have passed.
    pub fn tidy(&mut self, now: Instant) {
        self.group_next.retain(|_, at| *at > now);
        let tick = self.config.wait_tick;
        self.waits_taken.retain(|_, at| *at + tick > now);
    }

    /// One resync time per resource group: every app of the group settling in this cycle
    /// shares it, however far apart they settle, so they come due, and are listed, together. A
    /// time less than half an interval away is the last cycle's.
    fn group_resync(&mut self, app: &AppKey, now: Instant) -> Instant {
        let (sub, rg) = group_of(app);
        let entry = self
            .group_next
            .entry((sub.to_owned(), rg.to_owned()))
            .or_insert(now);
        if *entry <= now + self.config.interval / 2 {
            *entry = now + jittered(self.config.interval);
        }
        *entry
    }

    fn remember(&mut self, report: &AppReport) {
        match report.verified {
            // In sync as its list shows, not read in full yet: trusted, from a random age, so
            // that its first full read comes within `reverify_after` resyncs.
            Verification::Listed(fingerprint) => {
                let verdict = Verdict {
                    fingerprint,
                    state: report.state,
                    error: None,
                };
                let age = stagger(self.config.reverify_after);
                self.verdicts.insert(report.app.clone(), (verdict, age));
            }
            Verification::Full(fingerprint) => {
                // An app verified for the first time starts at a random age, so that a fleet
                // verified together (at start, or after POST /reconcile) is re-verified a slice
                // at each resync instead of all at once every `reverify_after` resyncs. Never
                // later than the limit: the age only starts higher.
                let age = if self.verdicts.contains_key(&report.app) {
                    0
                } else {
                    stagger(self.config.reverify_after)
                };
                let verdict = Verdict {
                    fingerprint,
                    state: report.state,
                    error: report.error.clone(),
                };
                self.verdicts.insert(report.app.clone(), (verdict, age));
            }
            Verification::Unchanged => {
                if let Some(v) = self.verdicts.get_mut(&report.app) {
                    v.1 += 1;
                }
            }
            Verification::No => {
                self.verdicts.remove(&report.app);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{Awaited, Requeue};

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            interval: Duration::from_secs(300),
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(60),
            reverify_after: 6,
            wait_tick: Duration::from_secs(2),
        }
    }

    fn key(rg: &str, name: &str) -> AppKey {
        AppKey::new("00000000-0000-0000-0000-000000000000", rg, name)
    }

    fn report(app: &AppKey, state: AppState) -> AppReport {
        AppReport::new(app.clone(), state)
    }

    fn secs(d: Option<Instant>, from: Instant) -> f64 {
        d.map_or(f64::NAN, |d| d.duration_since(from).as_secs_f64())
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_growing_capped_and_a_success_resets_them() {
        let mut s = Schedule::new(config());
        let a = key("rg", "a");
        let now = Instant::now();
        s.due_at(&a, now);
        let mut delays = Vec::new();
        for _ in 0..6 {
            let batch = s.take_ready(Instant::now());
            assert_eq!(batch.observe, std::slice::from_ref(&a));
            let next = s.record(&report(&a, AppState::Failing), true, Instant::now());
            delays.push(secs(next, Instant::now()));
            tokio::time::advance(Duration::from_secs(120)).await;
        }
        let expected = [5.0, 10.0, 20.0, 40.0, 60.0, 60.0];
        for (d, e) in delays.iter().zip(expected) {
            assert!((e * 0.9..=e * 1.1).contains(d), "{delays:?}");
        }
        let refused = s.error_policy(1, false).as_secs_f64();
        assert!(
            (54.0..=66.0).contains(&refused),
            "a refusal starts further on: {refused}"
        );
        assert_eq!(s.failures(&a), 6);
        s.take_ready(Instant::now());
        let next = s.record(&report(&a, AppState::InSync), true, Instant::now());
        assert_eq!(s.failures(&a), 0, "a success resets the backoff");
        let resync = secs(next, Instant::now());
        assert!((270.0..=330.0).contains(&resync), "{resync}");
        s.take_ready(Instant::now());
        let next = s.record(&report(&a, AppState::Failing), true, Instant::now());
        let first = secs(next, Instant::now());
        assert!((4.5..=5.5).contains(&first), "starts over: {first}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_app_is_not_a_failure_and_comes_back_at_its_resync() {
        let mut s = Schedule::new(config());
        let a = key("rg", "a");
        s.due_at(&a, Instant::now());
        s.take_ready(Instant::now());
        let mut r = report(&a, AppState::Blocked).because(crate::plan::Blocked::UnknownContainer {
            container: "x".into(),
            have: "app".into(),
        });
        r.verified = Verification::Full(42);
        let next = s.record(&r, true, Instant::now());
        assert_eq!(s.failures(&a), 0);
        assert!(secs(next, Instant::now()) >= 270.0);
        // Its verdict is handed to the next observation, so an unchanged app is not re-read.
        tokio::time::advance(Duration::from_secs(400)).await;
        let batch = s.take_ready(Instant::now());
        let v = &batch.verdicts[&a];
        assert_eq!((v.fingerprint, v.state), (42, AppState::Blocked));
    }

    #[tokio::test(start_paused = true)]
    async fn a_requeue_is_honoured_with_its_wait_and_skips_the_group_list() {
        let mut s = Schedule::new(config());
        let (a, b) = (key("rg", "a"), key("rg", "b"));
        let now = Instant::now();
        s.due_at(&a, now);
        s.take_ready(now);
        let mut r = report(&a, AppState::Applying);
        r.requeue = Some(Requeue {
            after: Duration::from_secs(2),
            wait: Wait {
                on: Awaited::Revision("a--r1".into()),
                since: now,
                ours: true,
                check: None,
            },
        });
        let next = s.record(&r, true, now);
        assert_eq!(secs(next, now), 2.0);
        // A sibling due soon does not ride along on a resume: there is no list to share.
        s.due_at(&b, now + Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            s.take_ready(Instant::now()).is_empty(),
            "not before it is due"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let batch = s.take_ready(Instant::now());
        assert!(batch.observe.is_empty(), "{batch:?}");
        assert_eq!(batch.resume.len(), 1);
        assert!(matches!(&batch.resume[0].1.on, Awaited::Revision(r) if r == "a--r1"));
        // An edit while it is away makes it due at once, observed afresh.
        s.due_at(&a, Instant::now());
        s.record(&r, true, Instant::now());
        let batch = s.take_ready(Instant::now());
        assert!(batch.resume.is_empty(), "{batch:?}");
        assert_eq!(
            batch.observe,
            [a, b],
            "observed afresh, and now its sibling rides along"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn siblings_due_soon_ride_along_and_a_group_shares_one_resync() {
        let mut s = Schedule::new(config());
        let (a, b, c, other) = (
            key("rg", "a"),
            key("rg", "b"),
            key("rg", "c"),
            key("rg-other", "d"),
        );
        let now = Instant::now();
        s.due_at(&a, now);
        s.due_at(&b, now + Duration::from_secs(20)); // within the 30 s window
        s.due_at(&c, now + Duration::from_secs(100)); // not
        s.due_at(&other, now + Duration::from_secs(20)); // another group
        let batch = s.take_ready(now);
        assert_eq!(batch.observe, [a.clone(), b.clone()]);
        assert_eq!(s.in_flight(), 2);
        assert!(
            s.take_ready(now).is_empty(),
            "in flight: never handed out twice"
        );
        let first = s.record(&report(&a, AppState::InSync), true, now);
        tokio::time::advance(Duration::from_secs(50)).await;
        let second = s.record(&report(&b, AppState::InSync), true, Instant::now());
        assert_eq!(first, second, "one resync time for the group");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pass_that_ends_without_reporting_frees_its_apps_as_failing() {
        let mut s = Schedule::new(config());
        let (a, b) = (key("rg", "a"), key("rg", "b"));
        let now = Instant::now();
        s.due_at(&a, now);
        s.due_at(&b, now);
        let batch = s.take_ready(now);
        let held: Vec<AppKey> = batch.apps().cloned().collect();
        // `a` was reported before the pass died; `b` was not.
        s.record(&report(&a, AppState::InSync), true, now);
        let lost = s.abandon(&held, now);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].app, b);
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.failures(&b), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(s.take_ready(Instant::now()).observe, [b]);
    }

    #[test]
    fn first_verifications_are_staggered_over_the_reverify_period() {
        let ages: BTreeSet<u32> = (0..200).map(|_| stagger(6)).collect();
        assert!(ages.iter().all(|a| *a < 6), "{ages:?}");
        assert!(ages.len() >= 4, "spread over the period: {ages:?}");
        assert_eq!(stagger(0), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_waits_of_a_group_are_handed_out_together_once_a_tick() {
        let mut s = Schedule::new(config());
        let (a, b, c, other) = (
            key("rg", "a"),
            key("rg", "b"),
            key("rg", "c"),
            key("rg2", "d"),
        );
        let now = Instant::now();
        for k in [&a, &b, &c, &other] {
            s.due_at(k, now);
        }
        s.take_ready(now);
        let wait = |app: &AppKey, after: u64| {
            let mut r = report(app, AppState::Applying);
            r.requeue = Some(Requeue {
                after: Duration::from_millis(after),
                wait: Wait {
                    on: Awaited::Busy,
                    since: now,
                    ours: true,
                    check: None,
                },
            });
            r
        };
        s.record(&wait(&a, 1_000), true, now);
        s.record(&wait(&b, 2_500), true, now);
        s.record(&wait(&c, 20_000), true, now);
        s.record(&wait(&other, 1_500), true, now);
        tokio::time::advance(Duration::from_secs(1)).await;
        let batch = s.take_ready(Instant::now());
        let resumed: Vec<&AppKey> = batch.resume.iter().map(|(k, _)| k).collect();
        assert_eq!(
            resumed,
            [&a, &b],
            "b, due within a tick, rides along; c, due much later, does not; another group's wait is its own"
        );
        for r in [wait(&a, 100), wait(&b, 100)] {
            s.record(&r, true, Instant::now());
        }
        // Due again 0.1 s later, but the group's waits were looked at a tick ago at most.
        assert_eq!(
            secs(s.next_due(), Instant::now()),
            0.5,
            "the other group's wait"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        let batch = s.take_ready(Instant::now());
        assert_eq!(batch.resume.len(), 1);
        assert_eq!(
            secs(s.next_due(), Instant::now()),
            1.5,
            "a tick after the last"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_spread_first_look_is_trusted_until_its_turn_and_only_once() {
        let mut s = Schedule::new(config());
        let (a, b) = (key("rg", "a"), key("rg", "b"));
        let now = Instant::now();
        s.due_at(&a, now);
        s.due_at(&b, now);
        s.spread([a.clone()]);
        let batch = s.take_ready(now);
        assert_eq!(batch.spread, BTreeSet::from([a.clone()]), "{batch:?}");
        // In sync as listed: a verdict, trusted from a random age below the limit.
        let mut r = report(&a, AppState::InSync);
        r.verified = Verification::Listed(7);
        s.record(&r, true, now);
        s.record(&report(&b, AppState::InSync), true, now);
        let (verdict, age) = s.verdicts.get(&a).cloned().unwrap();
        assert_eq!((verdict.fingerprint, verdict.state), (7, AppState::InSync));
        assert!(age < s.config.reverify_after, "{age}");
        // Its next look is not spread again: it is verified as any app is.
        tokio::time::advance(Duration::from_secs(400)).await;
        let batch = s.take_ready(Instant::now());
        assert_eq!(batch.observe.len(), 2, "{batch:?}");
        assert!(batch.spread.is_empty(), "{batch:?}");
        assert!(batch.verdicts.contains_key(&a));
        // POST /reconcile verifies everything in full: nothing is spread.
        s.spread([b.clone()]);
        s.clear_verdicts();
        assert!(s.spread.is_empty());
    }
}
