//! The traffic model: the requests an app's users send, split over its revisions as
//! `configuration.ingress.traffic` says at each moment, answered as each revision behaves, and
//! kept the way Azure Monitor keeps them (per second, then per minute), so that the metrics
//! route can report exactly what was served.
//!
//! Pure: no I/O, time passed in. The world advances each app's model lazily (`World::tick`) up
//! to every moment at which its routing changes (a write, a revision becoming ready, an
//! operation ending), so every request is routed by the rules in force when it arrived.
//!
//! Exactness: requests arrive evenly, the n-th one `n / rate` seconds after the rate was set,
//! so `floor(rate x elapsed)` have arrived at any moment. A split over weights `w_1..w_k` (sum
//! `W`) gives the first target `floor(K w_1 / W)` of the first `K` requests since the rules
//! last changed and splits the rest the same way over the others, and a revision failing a
//! share `p` of its requests fails `floor(n p)` of its first `n`. Counts depend only on time,
//! never on when the ticks came, and a two-way split (the canary case) is within one request of
//! its ideal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Millis;

/// How long Azure keeps platform metrics [doc: learn.microsoft.com "Azure Monitor data
/// retention": platform metrics 93 days]; older counts are dropped.
pub const RETENTION_MS: Millis = 93 * 86_400_000;

/// Per-second counts are kept this long past their ingestion, then merged into minutes.
pub const SECOND_DETAIL_MS: Millis = 10 * 60_000;

/// How one revision answers (`/_sim/behaviours`, or `.simulator.yaml` beside a seed). Every
/// field is optional: a revision's own entry overrides its image's field by field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behaviour {
    /// Share of requests answered with `errorStatus` (0 to 1; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The status of a failed request (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_status: Option<u16>,
    /// The path whose status is `healthStatus` (default `/health`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// The status of the health path (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<u16>,
    /// How long each answer takes (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}

impl Behaviour {
    /// Checks the values, naming the first bad one.
    ///
    /// # Errors
    /// A rate outside 0..=1, a status outside its range, a health path without a leading `/`.
    pub fn check(&self) -> Result<(), String> {
        if let Some(r) = self.error_rate
            && !(r.is_finite() && (0.0..=1.0).contains(&r))
        {
            return Err(format!(
                "errorRate {r} is not a share between 0 and 1 (0.2 fails 20% of requests)"
            ));
        }
        if let Some(s) = self.error_status
            && !(400..=599).contains(&s)
        {
            return Err(format!("errorStatus {s} is not an HTTP error (400 to 599)"));
        }
        if let Some(s) = self.health_status
            && !(100..=599).contains(&s)
        {
            return Err(format!("healthStatus {s} is not an HTTP status"));
        }
        if let Some(p) = &self.health_path
            && !p.starts_with('/')
        {
            return Err(format!("healthPath `{p}` must start with `/`"));
        }
        Ok(())
    }

    fn overlaid(mut self, over: &Behaviour) -> Behaviour {
        if over.error_rate.is_some() {
            self.error_rate = over.error_rate;
        }
        if over.error_status.is_some() {
            self.error_status = over.error_status;
        }
        if over.health_path.is_some() {
            self.health_path.clone_from(&over.health_path);
        }
        if over.health_status.is_some() {
            self.health_status = over.health_status;
        }
        if over.latency_ms.is_some() {
            self.latency_ms = over.latency_ms;
        }
        self
    }
}

/// Behaviours by image (every revision running it) and by revision name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Behaviours {
    /// By full image reference, as the revision's template writes it.
    pub images: BTreeMap<String, Behaviour>,
    /// By revision name, lower case.
    pub revisions: BTreeMap<String, Behaviour>,
}

impl Behaviours {
    /// Nothing declared.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.revisions.is_empty()
    }

    /// What the revision `name`, running `template`, does: its image's behaviour (the first
    /// container whose image has one), overlaid with its own.
    pub fn resolve(&self, name: &str, template: &Value) -> Resolved {
        let by_image = template
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("image").and_then(Value::as_str))
            .find_map(|image| self.images.get(image))
            .cloned()
            .unwrap_or_default();
        let b = match self.revisions.get(&name.to_ascii_lowercase()) {
            Some(own) => by_image.overlaid(own),
            None => by_image,
        };
        Resolved {
            error_ppm: b
                .error_rate
                .map_or(0, |r| (r.clamp(0.0, 1.0) * 1_000_000.0).round() as u64),
            error_status: b.error_status.unwrap_or(500),
            health_path: b.health_path.unwrap_or_else(|| "/health".to_owned()),
            health_status: b.health_status.unwrap_or(200),
            latency_ms: b.latency_ms.unwrap_or(0),
        }
    }
}

/// A revision's behaviour with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Failed requests per million.
    pub error_ppm: u64,
    /// Status of a failed request.
    pub error_status: u16,
    /// The health path.
    pub health_path: String,
    /// Its status.
    pub health_status: u16,
    /// Added to each answer.
    pub latency_ms: u64,
}

/// Where an app's requests go at one moment: the effective split (`latestRevision` resolved)
/// and, for each target, how it answers (`None`: not running, so 503).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Targets in a fixed order, weight above 0.
    pub targets: Vec<Target>,
}

/// One target of the split.
#[derive(Debug, Clone)]
pub struct Target {
    /// Revision name.
    pub revision: String,
    /// Its weight.
    pub weight: u64,
    /// How it answers; `None` when it is not running.
    pub serving: Option<Resolved>,
}

impl Routing {
    fn key(&self) -> Vec<(String, u64)> {
        self.targets
            .iter()
            .map(|t| (t.revision.clone(), t.weight))
            .collect()
    }

    fn total(&self) -> u64 {
        self.targets.iter().map(|t| t.weight).sum()
    }

    /// How many of the first `k` requests since the split began each target gets. The first
    /// target takes `floor(k w_1 / W)`, the next the same share of what is left by the weights
    /// left, and so on: every count only grows with `k`, the first two are within one request
    /// of `k w_i / W`, and over any multiple of `W` requests the split is exact.
    fn shares(&self, k: u64) -> Vec<u64> {
        let mut left = u128::from(k);
        let mut weight_left = u128::from(self.total());
        self.targets
            .iter()
            .map(|t| {
                let w = u128::from(t.weight);
                let share = (left * w).checked_div(weight_left).unwrap_or(0);
                left -= share;
                weight_left -= w;
                u64::try_from(share).unwrap_or(u64::MAX)
            })
            .collect()
    }
}

/// Replicas and restarts of one running revision, as the `Replicas` and `RestartCount` metrics
/// see them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gauge {
    /// Running replicas.
    pub replicas: u64,
    /// Restarts so far.
    pub restarts: u32,
}

/// The running revisions' gauges from a moment on, until the next snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GaugeSnapshot {
    /// From when.
    pub at: Millis,
    /// Running revisions.
    pub revisions: BTreeMap<String, Gauge>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Split {
    key: Vec<(String, u64)>,
    routed: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Counter {
    ppm: u64,
    served: u64,
}

/// One app's traffic: its users' request rate and everything served, by second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Traffic {
    /// Requests per second the app's users send (0: none).
    pub requests_per_second: f64,
    /// When that rate began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Millis>,
    /// Requests answered: second (the start of a minute, once merged) -> revision -> status ->
    /// count.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<i64, BTreeMap<String, BTreeMap<u16, u64>>>,
    /// Replicas and restarts of the running revisions over time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gauges: Vec<GaugeSnapshot>,
    /// The model is computed up to here (a loaded dump resumes from its first tick).
    #[serde(skip)]
    advanced: Option<Millis>,
    #[serde(skip)]
    split: Split,
    #[serde(skip)]
    counters: BTreeMap<String, Counter>,
    #[serde(skip)]
    compacted_minute: i64,
}

/// What an HTTP request that reached a revision got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The revision that answered (or would have).
    pub revision: String,
    /// The status.
    pub status: u16,
    /// How long the answer takes.
    pub latency_ms: u64,
}

impl Traffic {
    /// Nothing to keep in a dump.
    pub fn is_empty(&self) -> bool {
        self.requests_per_second == 0.0 && self.requests.is_empty() && self.gauges.is_empty()
    }

    fn rate_milli(&self) -> u128 {
        (self.requests_per_second.max(0.0) * 1000.0).round() as u128
    }

    /// Requests arrived between `since` and `t`.
    fn arrived(&self, t: Millis) -> u128 {
        match self.since {
            Some(since) if t > since => self.rate_milli() * (t - since) as u128 / 1_000_000,
            _ => 0,
        }
    }

    /// Whether users send requests.
    pub fn is_sending(&self) -> bool {
        self.rate_milli() > 0 && self.since.is_some()
    }

    /// Sets the rate from `now` on. The caller has advanced the model to `now`.
    pub fn set_rate(&mut self, requests_per_second: f64, now: Millis) {
        self.requests_per_second = requests_per_second;
        self.since = Some(now);
        self.advanced = Some(now);
    }

    /// Marks the model computed up to `to` without serving anything (no users, or no route).
    pub fn skip_to(&mut self, to: Millis) {
        if self.advanced.is_none_or(|a| a < to) {
            self.advanced = Some(to);
        }
    }

    /// Serves the requests that arrived between the last advance and `to`, one second at a
    /// time, by `routing` (constant over that time: the world advances before every change).
    /// Per-second counts older than `detail_until` are merged into minutes.
    pub fn advance(&mut self, routing: &Routing, to: Millis, detail_until: Millis) {
        let Some(from) = self.advanced else {
            self.advanced = Some(to);
            return;
        };
        if to <= from {
            return;
        }
        self.advanced = Some(to);
        if !self.is_sending() || routing.total() == 0 {
            return;
        }
        // A simulator resumed after a long stop does not serve what no one could have seen.
        let mut a = from.max(to - RETENTION_MS);
        while a < to {
            let second = a.div_euclid(1000);
            let b = ((second + 1) * 1000).min(to);
            let n = u64::try_from(self.arrived(b) - self.arrived(a)).unwrap_or(u64::MAX);
            if n > 0 {
                self.route(routing, second, n);
            }
            a = b;
        }
        self.compact(to, detail_until);
    }

    /// Splits `n` requests of `second` over the targets.
    fn route(&mut self, routing: &Routing, second: i64, n: u64) {
        let key = routing.key();
        if self.split.key != key {
            self.split = Split { key, routed: 0 };
        }
        let before = routing.shares(self.split.routed);
        self.split.routed += n;
        let after = routing.shares(self.split.routed);
        for ((t, a), b) in routing.targets.iter().zip(after).zip(before) {
            if a > b {
                self.answer(second, &t.revision, t.serving.as_ref(), a - b);
            }
        }
    }

    /// Answers `n` ordinary requests sent to `revision` in `second`.
    fn answer(&mut self, second: i64, revision: &str, serving: Option<&Resolved>, n: u64) {
        let Some(b) = serving else {
            // Traffic sent to a revision that cannot serve fails as the ingress answers it
            // [assumption: envoy's 503 "no healthy upstream", as an outage is logged today].
            self.record(second, revision, 503, n);
            return;
        };
        let errors = self.errors(revision, b.error_ppm, n);
        self.record(second, revision, b.error_status, errors);
        self.record(second, revision, 200, n - errors);
    }

    /// Of the next `n` requests a revision serves, how many fail: `floor(served x p)` so far.
    fn errors(&mut self, revision: &str, ppm: u64, n: u64) -> u64 {
        let c = self.counters.entry(revision.to_owned()).or_default();
        if c.ppm != ppm {
            *c = Counter { ppm, served: 0 };
        }
        let before = u128::from(c.served) * u128::from(ppm) / 1_000_000;
        c.served += n;
        let after = u128::from(c.served) * u128::from(ppm) / 1_000_000;
        u64::try_from(after - before).unwrap_or(0)
    }

    fn record(&mut self, second: i64, revision: &str, status: u16, n: u64) {
        if n == 0 {
            return;
        }
        *self
            .requests
            .entry(second)
            .or_default()
            .entry(revision.to_owned())
            .or_default()
            .entry(status)
            .or_insert(0) += n;
    }

    /// Routes one request through the split (a request to the app's own URL): its target.
    pub fn pick<'r>(&mut self, routing: &'r Routing) -> Option<&'r Target> {
        let key = routing.key();
        if self.split.key != key {
            self.split = Split { key, routed: 0 };
        }
        if routing.total() == 0 {
            return None;
        }
        let before = routing.shares(self.split.routed);
        self.split.routed += 1;
        let after = routing.shares(self.split.routed);
        let i = after.iter().zip(&before).position(|(a, b)| a > b)?;
        routing.targets.get(i)
    }

    /// Answers one HTTP request to `path` of `revision` at `now`, and counts it.
    pub fn answer_one(
        &mut self,
        now: Millis,
        revision: &str,
        serving: Option<&Resolved>,
        path: &str,
    ) -> Answer {
        let second = now.div_euclid(1000);
        let (status, latency_ms) = match serving {
            None => (503, 0),
            Some(b) if path == b.health_path => (b.health_status, b.latency_ms),
            Some(b) => {
                let failed = self.errors(revision, b.error_ppm, 1) > 0;
                (if failed { b.error_status } else { 200 }, b.latency_ms)
            }
        };
        self.record(second, revision, status, 1);
        Answer {
            revision: revision.to_owned(),
            status,
            latency_ms,
        }
    }

    /// Records the running revisions' gauges from `at` on, if they changed.
    pub fn log_gauges(&mut self, at: Millis, revisions: BTreeMap<String, Gauge>) {
        match self.gauges.last_mut() {
            Some(last) if last.revisions == revisions => {}
            Some(last) if last.at >= at => last.revisions = revisions,
            _ => self.gauges.push(GaugeSnapshot { at, revisions }),
        }
    }

    /// Whether any gauge was ever logged.
    pub fn has_gauges(&self) -> bool {
        !self.gauges.is_empty()
    }

    /// Merges per-second counts older than `detail_until` into their minute, and drops what
    /// is past retention; once per minute of `now`.
    fn compact(&mut self, now: Millis, detail_until: Millis) {
        let minute = now.div_euclid(60_000);
        if minute == self.compacted_minute {
            return;
        }
        self.compacted_minute = minute;
        let oldest = (now - RETENTION_MS).div_euclid(1000);
        self.requests = self.requests.split_off(&oldest);
        let boundary = detail_until.div_euclid(60_000) * 60;
        let old: Vec<i64> = self
            .requests
            .range(..boundary)
            .map(|(s, _)| *s)
            .filter(|s| s.rem_euclid(60) != 0)
            .collect();
        for s in old {
            let Some(counts) = self.requests.remove(&s) else {
                continue;
            };
            let into = self.requests.entry(s - s.rem_euclid(60)).or_default();
            for (revision, by_status) in counts {
                let r = into.entry(revision).or_default();
                for (status, n) in by_status {
                    *r.entry(status).or_insert(0) += n;
                }
            }
        }
        let cut = now - RETENTION_MS;
        let keep_from = self.gauges.iter().rposition(|g| g.at <= cut).unwrap_or(0);
        self.gauges.drain(..keep_from);
    }

    /// Everything answered, per revision and status (for `GET /_sim/traffic`).
    pub fn totals(&self) -> BTreeMap<String, BTreeMap<u16, u64>> {
        let mut out: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
        for by_revision in self.requests.values() {
            for (revision, by_status) in by_revision {
                let r = out.entry(revision.clone()).or_default();
                for (status, n) in by_status {
                    *r.entry(*status).or_insert(0) += n;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(targets: &[(&str, u64, Option<u64>)]) -> Routing {
        Routing {
            targets: targets
                .iter()
                .map(|(name, weight, ppm)| Target {
                    revision: (*name).to_owned(),
                    weight: *weight,
                    serving: ppm.map(|p| Resolved {
                        error_ppm: p,
                        error_status: 500,
                        health_path: "/health".into(),
                        health_status: 200,
                        latency_ms: 0,
                    }),
                })
                .collect(),
        }
    }

    fn count(t: &Traffic, revision: &str, status: u16) -> u64 {
        t.totals()
            .get(revision)
            .and_then(|s| s.get(&status))
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn a_split_is_exact_whatever_the_ticks() {
        let r = routing(&[
            ("a", 90, Some(0)),
            ("b", 10, Some(200_000)),
            ("c", 0, Some(0)),
        ]);
        let mut even = Traffic::default();
        even.set_rate(100.0, 0);
        even.advance(&r, 30_000, 0);
        let mut ragged = Traffic::default();
        ragged.set_rate(100.0, 0);
        let mut t = 0;
        for step in [1, 7, 333, 999, 1, 2_500, 12_345] {
            t += step;
            ragged.advance(&r, t, 0);
        }
        ragged.advance(&r, 30_000, 0);
        for traffic in [&even, &ragged] {
            assert_eq!(count(traffic, "a", 200), 2_700);
            assert_eq!(count(traffic, "b", 500), 60, "20% of 300");
            assert_eq!(count(traffic, "b", 200), 240);
            assert_eq!(count(traffic, "c", 200), 0);
        }
    }

    #[test]
    fn a_revision_that_cannot_serve_answers_503_and_a_fractional_rate_counts_whole_requests() {
        let r = routing(&[("a", 100, None)]);
        let mut t = Traffic::default();
        t.set_rate(2.5, 1_000);
        t.advance(&r, 5_000, 0);
        assert_eq!(count(&t, "a", 503), 10, "2.5 per second for 4 s");
        t.advance(&r, 5_399, 0);
        assert_eq!(count(&t, "a", 503), 10, "the next one arrives at 5.4 s");
        t.advance(&r, 5_400, 0);
        assert_eq!(count(&t, "a", 503), 11);
    }

    #[test]
    fn picking_one_at_a_time_follows_the_weights() {
        let r = routing(&[("a", 75, Some(0)), ("b", 25, Some(0)), ("z", 0, Some(0))]);
        let mut t = Traffic::default();
        let picks: Vec<String> = (0..8)
            .map(|_| t.pick(&r).map(|x| x.revision.clone()).unwrap_or_default())
            .collect();
        assert_eq!(picks.iter().filter(|p| *p == "b").count(), 2);
        assert!(!picks.iter().any(|p| p == "z"));
    }

    #[test]
    fn shares_only_grow_sum_to_k_and_a_two_way_split_is_within_one() {
        let four = routing(&[
            ("a", 34, Some(0)),
            ("b", 16, Some(0)),
            ("c", 17, Some(0)),
            ("d", 33, Some(0)),
        ]);
        let two = routing(&[("a", 93, Some(0)), ("b", 7, Some(0))]);
        for r in [&four, &two] {
            let mut last = vec![0; r.targets.len()];
            for k in 0..2_000u64 {
                let s = r.shares(k);
                assert_eq!(s.iter().sum::<u64>(), k);
                assert!(s.iter().zip(&last).all(|(a, b)| a >= b), "k={k}: {s:?}");
                last = s;
            }
        }
        for k in 0..2_000u64 {
            let s = two.shares(k);
            let ideal = k as f64 * 7.0 / 100.0;
            assert!((s[1] as f64 - ideal).abs() < 1.0, "k={k}: {s:?}");
        }
    }

    #[test]
    fn old_seconds_merge_into_their_minute() {
        let r = routing(&[("a", 100, Some(0))]);
        let mut t = Traffic::default();
        t.set_rate(1.0, 0);
        t.advance(&r, 180_000, 120_000);
        assert!(t.requests.contains_key(&0) && t.requests.contains_key(&60));
        assert!(!t.requests.contains_key(&1), "merged into minute 0");
        assert!(
            t.requests.contains_key(&121),
            "recent seconds keep their detail"
        );
        assert_eq!(count(&t, "a", 200), 180);
    }
}
