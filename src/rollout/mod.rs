//! Progressive delivery: a new revision walks weighted steps (canary) or waits on a preview
//! label and then switches at once (blue/green), with analysis between steps and an automatic
//! rollback.
//!
//! - [`RolloutSpec`]: what the YAML asks (`spec.rollout`).
//! - [`RolloutState`]: where a rollout stands, kept in Azure in one app tag ([`STATE_TAG`]) so
//!   that a restart, a crash or a change of leader resumes the same step at the same point.
//!   Every transition writes the traffic and this tag in **one** PATCH: either both moved or
//!   neither did.
//! - [`Command`]: a person's `rollout promote|abort|retry`, left in a second tag
//!   ([`COMMAND_TAG`]) by the CLI and removed by the PATCH that carries it out, so it is
//!   honoured by whichever replica leads, survives restarts, and is applied once.
//! - [`Check`]: one analysis check (metrics and probes), taken by [`crate::analysis`] and fed
//!   to the planner, which stays a pure function of spec + live app + revisions + check + now.

pub mod decide;

use serde::Serialize;

pub mod judge;

use crate::time::Millis;

/// The Azure tag that holds a rollout's state ([`RolloutState::encode`]).
pub const STATE_TAG: &str = "aca-reconciler-rollout";

/// The Azure tag a person's command waits in ([`Command::encode`]).
pub const COMMAND_TAG: &str = "aca-reconciler-rollout-command";

/// Azure's limit on a tag value [doc: learn.microsoft.com azure-resource-manager/management/
/// tag-resources, "Limitations": values of 256 characters at most].
pub const TAG_VALUE_MAX: usize = 256;

/// `spec.rollout`.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSpec {
    /// Canary or blue/green.
    pub strategy: Strategy,
    /// The weights the new revision walks, each held for its pause. Blue/green: the preview
    /// (weight 0, on the preview label) and the switch (weight 100).
    pub steps: Vec<Step>,
    /// Wait for a person before the switch to 100%.
    pub approval: Approval,
    /// The checks between steps; `None`: steps advance on time alone.
    pub analysis: Option<AnalysisSpec>,
    /// No progress for this long: roll back (hold, with `noData: hold`, when the checks had no
    /// data).
    pub progress_deadline_ms: u64,
    /// Blue/green: the label the new revision is reached at before the switch.
    pub preview_label: String,
}

/// How the new revision gets traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Stepped weights.
    Canary,
    /// A preview label at 0%, then 100% at once.
    BlueGreen,
}

/// One step: the new revision's share, held for `pause_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Percent of traffic on the new revision, 0..=100.
    pub weight: u32,
    /// How long the step is held (and checked) before the next.
    pub pause_ms: u64,
}

/// Whether the switch to 100% waits for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Approval {
    /// Go on when the checks pass.
    Auto,
    /// Wait for `aca-reconciler rollout promote` before the switch to 100%.
    Manual,
}

/// `rollout.analysis`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    /// One check per interval while a step is held.
    pub interval_ms: u64,
    /// Failed checks in one rollout before it rolls back.
    pub max_failed_checks: u32,
    /// What a check with too few requests to judge means.
    pub no_data: NoData,
    /// Requests the new revision must have served in a check's window to be judged.
    pub min_requests: u64,
    /// Lowest share of non-5xx requests of the new revision, percent.
    pub success_rate_min: Option<f64>,
    /// Largest drop of the new revision's success rate below the stable one's, in
    /// percentage points, over the same window.
    pub max_drop_vs_stable: Option<f64>,
    /// HTTP GETs on the new revision's own URL (blue/green: the preview label's).
    pub probes: Vec<Probe>,
}

impl RolloutSpec {
    /// The index of the move to 100% (a step of 100%, else the promotion after the last
    /// step): where a manual rollout waits for `rollout promote`.
    pub fn gate(&self) -> usize {
        self.steps
            .iter()
            .position(|s| s.weight >= 100)
            .unwrap_or(self.steps.len())
    }
}

impl AnalysisSpec {
    /// Whether a check reads Azure Monitor (the probes alone do not).
    pub fn reads_metrics(&self) -> bool {
        self.success_rate_min.is_some() || self.max_drop_vs_stable.is_some()
    }
}

/// `noData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NoData {
    /// Hold the step (and report why) until there is data.
    Hold,
    /// Count the check as failed.
    Fail,
}

/// One probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Path, starting with `/`.
    pub path: String,
    /// The status that passes.
    pub expect_status: u16,
}

/// Where a rollout stands (the [`STATE_TAG`] value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Progressing, promoted or rolled back.
    pub phase: Phase,
    /// The step being held; `-1` while the new revision is starting.
    pub step: i32,
    /// When this step (or the rollout, at `-1`) began: epoch milliseconds.
    pub since: Millis,
    /// Failed checks so far in this rollout.
    pub failed_checks: u32,
    /// When the last failed check counted was taken (a check is counted once).
    pub last_failed_at: Millis,
    /// The revision traffic returns to (`""`: none ran before).
    pub stable: String,
    /// The new revision.
    pub canary: String,
    /// Why it rolled back (or why it was promoted early), in numbers.
    pub reason: String,
}

/// A rollout's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Walking the steps.
    Progressing,
    /// Done: the new revision carries 100% and is the stable one.
    Promoted,
    /// Traffic went back to the stable revision; the same revision is not tried again until
    /// the spec changes or a person retries.
    RolledBack,
}

impl Phase {
    /// The word in the tag, the logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolledBack",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "progressing" => Phase::Progressing,
            "promoted" => Phase::Promoted,
            "rolledBack" => Phase::RolledBack,
            _ => return None,
        })
    }
}

impl RolloutState {
    /// The state `app`'s tag holds, if it holds one this release wrote.
    pub fn of(app: &crate::arm::models::ContainerApp) -> Option<Self> {
        app.tags.get(STATE_TAG).and_then(|v| Self::decode(v))
    }

    /// The tag value: `v1;PHASE;STEP;SINCE;FAILED;LASTFAILED;STABLE;CANARY;REASON`, times in
    /// epoch milliseconds (a step's pause counts from the very moment it began), the reason cut so that the whole fits [`TAG_VALUE_MAX`] characters
    /// (revision names are at most 54 characters and hold no `;`).
    pub fn encode(&self) -> String {
        let head = format!(
            "v1;{};{};{};{};{};{};{};",
            self.phase.as_str(),
            self.step,
            self.since,
            self.failed_checks,
            self.last_failed_at,
            self.stable,
            self.canary,
        );
        let room = TAG_VALUE_MAX.saturating_sub(head.chars().count());
        let mut reason: String = self.reason.chars().take(room).collect();
        if self.reason.chars().count() > room && room > 0 {
            reason.pop();
            reason.push('…');
        }
        head + &reason
    }

    /// Reads a tag value; `None` when it is not one [`Self::encode`] wrote (it is then
    /// treated as no rollout, and rewritten by the next transition).
    pub fn decode(value: &str) -> Option<Self> {
        let mut parts = value.splitn(9, ';');
        if parts.next()? != "v1" {
            return None;
        }
        let phase = Phase::parse(parts.next()?)?;
        let step = parts.next()?.parse().ok()?;
        let since = parts.next()?.parse::<i64>().ok()?;
        let failed_checks = parts.next()?.parse().ok()?;
        let last_failed_at = parts.next()?.parse::<i64>().ok()?;
        let stable = parts.next()?.to_owned();
        let canary = parts.next()?.to_owned();
        let reason = parts.next().unwrap_or_default().to_owned();
        if canary.is_empty() || step < -1 {
            return None;
        }
        Some(Self {
            phase,
            step,
            since,
            failed_checks,
            last_failed_at,
            stable,
            canary,
            reason,
        })
    }
}

/// What a person asks of a rollout in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verb {
    /// Skip to 100% on the new revision now (also approves a manual rollout).
    Promote,
    /// Roll back now.
    Abort,
    /// Run a rolled-back revision's rollout again.
    Retry,
}

impl Verb {
    /// The word on the command line and in the tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Promote => "promote",
            Verb::Abort => "abort",
            Verb::Retry => "retry",
        }
    }
}

/// A command waiting in [`COMMAND_TAG`]: what, for which new revision (a command meant for an
/// earlier rollout is never applied to a later one), and when it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    /// What.
    pub verb: Verb,
    /// The new revision of the rollout it is meant for.
    pub canary: String,
    /// When it was asked, epoch milliseconds (whole seconds).
    pub at: Millis,
}

impl Command {
    /// The tag value: `VERB;CANARY;AT` (epoch seconds).
    pub fn encode(&self) -> String {
        format!(
            "{};{};{}",
            self.verb.as_str(),
            self.canary,
            self.at.div_euclid(1000)
        )
    }

    /// Reads a tag value; `None` when it is not one [`Self::encode`] wrote.
    pub fn decode(value: &str) -> Option<Self> {
        let mut parts = value.split(';');
        let verb = match parts.next()? {
            "promote" => Verb::Promote,
            "abort" => Verb::Abort,
            "retry" => Verb::Retry,
            _ => return None,
        };
        let canary = parts.next()?.to_owned();
        let at = parts.next()?.parse::<i64>().ok()?.checked_mul(1000)?;
        if canary.is_empty() || parts.next().is_some() {
            return None;
        }
        Some(Self { verb, canary, at })
    }
}

/// One revision's requests in a check's window (Azure Monitor `Requests`, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Every request.
    pub requests: u64,
    /// Those answered 5xx.
    pub errors: u64,
}

impl Counts {
    /// The share of non-5xx requests, percent; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| {
            100.0 * (self.requests.saturating_sub(self.errors)) as f64 / self.requests as f64
        })
    }
}

/// One probe's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    /// The URL asked.
    pub url: String,
    /// The status expected.
    pub expected: u16,
    /// The status answered (`None`: no answer).
    pub status: Option<u16>,
    /// Why there was no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProbeResult {
    /// Whether it answered what was expected.
    pub fn passed(&self) -> bool {
        self.status == Some(self.expected)
    }
}

/// What a check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Every gate passed.
    Pass,
    /// A gate failed (counts towards `maxFailedChecks`).
    Fail,
    /// Too few requests to judge (`minRequests`): `noData` decides.
    NoData,
    /// The metrics could not be read: the step holds, nothing is counted.
    Error,
}

impl Verdict {
    /// The word in logs and the `result` label of `acar_analysis_checks_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NoData => "noData",
            Verdict::Error => "error",
        }
    }
}

/// One analysis check of a rollout step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// When it was taken (epoch ms).
    pub at: Millis,
    /// The new revision it judged.
    pub canary: String,
    /// The step it was taken in.
    pub step: i32,
    /// The metrics window, epoch ms `[start, end)`.
    pub window: (Millis, Millis),
    /// The stable revision's requests (`None`: metrics not read).
    pub stable: Option<Counts>,
    /// The new revision's requests (`None`: metrics not read).
    pub canary_counts: Option<Counts>,
    /// The probes' answers.
    pub probes: Vec<ProbeResult>,
    /// The conclusion.
    pub verdict: Verdict,
    /// The conclusion in numbers, e.g. "success rate 81.2% < 99% over 1,204 requests".
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(reason: &str) -> RolloutState {
        RolloutState {
            phase: Phase::Progressing,
            step: 1,
            since: 1_733_370_000_000,
            failed_checks: 1,
            last_failed_at: 1_733_370_060_000,
            stable: "user-service--r0123456789".to_owned(),
            canary: "user-service--rabcdef0123".to_owned(),
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn state_round_trips_through_its_tag() {
        let s = state("success rate 81.2% < 99% over 1,204 requests; checks 2/2");
        assert_eq!(RolloutState::decode(&s.encode()), Some(s));
        let no_stable = RolloutState {
            stable: String::new(),
            reason: String::new(),
            ..state("")
        };
        assert_eq!(RolloutState::decode(&no_stable.encode()), Some(no_stable));
    }

    #[test]
    fn a_long_reason_is_cut_to_fit_azures_tag_limit() {
        let long = RolloutState {
            stable: format!("{}--r1", "a".repeat(50)),
            canary: format!("{}--r2", "b".repeat(50)),
            ..state(&"x".repeat(400))
        };
        let value = long.encode();
        assert_eq!(value.chars().count(), TAG_VALUE_MAX);
        assert!(value.ends_with('…'));
        let back = RolloutState::decode(&value).unwrap_or_else(|| panic!("{value}"));
        assert_eq!((back.stable, back.canary), (long.stable, long.canary));
    }

    #[test]
    fn foreign_values_are_not_states_or_commands() {
        for v in [
            "",
            "v2;progressing;1;0;0;0;a;b;",
            "v1;sideways;1;0;0;0;a;b;",
            "v1;progressing;x",
        ] {
            assert_eq!(RolloutState::decode(v), None, "{v}");
        }
        let c = Command {
            verb: Verb::Abort,
            canary: "app--r1".to_owned(),
            at: 1_733_370_000_000,
        };
        assert_eq!(Command::decode(&c.encode()), Some(c));
        for v in [
            "",
            "promote",
            "promote;",
            "jump;app--r1;1",
            "abort;app--r1;1;extra",
        ] {
            assert_eq!(Command::decode(v), None, "{v}");
        }
    }

    #[test]
    fn success_rate_is_the_share_of_non_5xx() {
        let c = Counts {
            requests: 1000,
            errors: 188,
        };
        assert_eq!(c.success_rate(), Some(81.2));
        assert_eq!(Counts::default().success_rate(), None);
    }
}
