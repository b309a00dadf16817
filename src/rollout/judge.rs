//! The verdict of one analysis check, from its numbers: a pure function, so that every branch
//! is a unit test and the reason an operator reads at 3 a.m. is the one the tests read.
//!
//! # Contract
//!
//! - `canary` (and `stable`) are `None` exactly when the metrics were **not read**: either the
//!   spec reads none ([`AnalysisSpec::reads_metrics`] is false; they are then ignored), or the
//!   read failed. A spec that reads metrics with `canary == None` is judged
//!   [`Verdict::Error`] (hold the step, count nothing), unless a probe failed: a failed probe
//!   is a failure whatever the metrics say.
//! - A revision that served nothing in the window is `Some(Counts::default())`, never `None`
//!   ([`crate::analysis`] fills in the revisions Azure Monitor has no series for).
//! - `stable` is `None` (or ignored) when there is no stable revision.
//!
//! # Order of the gates
//!
//! Every failing gate is reported (probes first, then the metrics), joined by `; `. With no
//! failure: too few canary requests is [`Verdict::NoData`], except at weight 0 (a blue/green
//! preview, which gets no user traffic by design), where the metric gates are skipped and the
//! probes decide.

use super::{AnalysisSpec, Counts, ProbeResult, Verdict};

/// Judges one check (see the module docs for the contract): the verdict and its reason in
/// numbers, e.g. `success rate 81.2% < 99% over 1,204 requests`.
pub fn judge(
    spec: &AnalysisSpec,
    weight: u32,
    stable: Option<Counts>,
    canary: Option<Counts>,
    probes: &[ProbeResult],
) -> (Verdict, String) {
    let mut failures: Vec<String> = probes
        .iter()
        .filter(|p| !p.passed())
        .map(probe_failure)
        .collect();
    let probes_note = (!probes.is_empty()).then(|| {
        format!(
            "probes {}/{}",
            probes.iter().filter(|p| p.passed()).count(),
            probes.len()
        )
    });
    let with_probes = |text: String| match &probes_note {
        Some(p) if text.is_empty() => p.clone(),
        Some(p) => format!("{text}; {p}"),
        None if text.is_empty() => "no gates to check".to_owned(),
        None => text,
    };

    if !spec.reads_metrics() {
        return if failures.is_empty() {
            (Verdict::Pass, with_probes(String::new()))
        } else {
            (Verdict::Fail, failures.join("; "))
        };
    }
    let Some(canary) = canary else {
        return if failures.is_empty() && weight == 0 && !probes.is_empty() {
            // A preview at 0% has no users by design: its probes decide, read or not.
            (
                Verdict::Pass,
                with_probes("metrics not read (not judged at weight 0)".to_owned()),
            )
        } else if failures.is_empty() {
            (Verdict::Error, "the metrics could not be read".to_owned())
        } else {
            (Verdict::Fail, failures.join("; "))
        };
    };

    if canary.requests < spec.min_requests {
        if !failures.is_empty() {
            return (Verdict::Fail, failures.join("; "));
        }
        let few = format!(
            "{} < minRequests {}",
            requests(canary.requests),
            count(spec.min_requests)
        );
        return if weight == 0 {
            (
                Verdict::Pass,
                with_probes(format!(
                    "metrics not judged at weight 0 (no user traffic by design: {few})"
                )),
            )
        } else {
            (Verdict::NoData, few)
        };
    }

    // `requests >= min_requests` and, min_requests being 0, possibly no request at all.
    let Some(rate) = canary.success_rate() else {
        return if failures.is_empty() {
            (Verdict::Pass, with_probes("no requests".to_owned()))
        } else {
            (Verdict::Fail, failures.join("; "))
        };
    };
    if let Some(min) = spec.success_rate_min
        && rate < min
    {
        failures.push(format!(
            "success rate {}% < {}% over {}",
            percent_below(rate, min),
            threshold(min),
            requests(canary.requests)
        ));
    }
    // The stable revision's rate counts only with as many requests as the canary needs.
    let stable_rate = stable
        .filter(|s| s.requests >= spec.min_requests)
        .and_then(|s| s.success_rate());
    if let (Some(max), Some(base)) = (spec.max_drop_vs_stable, stable_rate)
        && base - rate > max
    {
        failures.push(format!(
            "success rate {}% is {} points below the stable revision's {}% (maxDrop {})",
            one_decimal(rate),
            one_decimal(base - rate),
            one_decimal(base),
            threshold(max)
        ));
    }
    if !failures.is_empty() {
        return (Verdict::Fail, failures.join("; "));
    }
    let stable_note = match (stable_rate, stable) {
        (Some(base), _) => format!(" (stable {}%)", one_decimal(base)),
        (None, Some(s)) if spec.max_drop_vs_stable.is_some() => format!(
            " (stable not compared: {} < minRequests {})",
            requests(s.requests),
            count(spec.min_requests)
        ),
        _ => String::new(),
    };
    (
        Verdict::Pass,
        with_probes(format!(
            "success rate {}% over {}{stable_note}",
            one_decimal(rate),
            requests(canary.requests)
        )),
    )
}

fn probe_failure(p: &ProbeResult) -> String {
    match (p.status, &p.error) {
        (Some(status), _) => format!(
            "probe GET {} answered {status}, expected {}",
            p.url, p.expected
        ),
        (None, Some(e)) => format!("probe GET {} gave no answer: {e}", p.url),
        (None, None) => format!("probe GET {} gave no answer", p.url),
    }
}

/// `1,204 requests`, `1 request`.
fn requests(n: u64) -> String {
    format!("{} request{}", count(n), if n == 1 { "" } else { "s" })
}

/// Thousands separators: `1,204`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One decimal, with thousands separators: `99.8`, `1,204.0`.
pub fn one_decimal(x: f64) -> String {
    let text = format!("{:.1}", x.abs());
    let (whole, frac) = text.split_once('.').unwrap_or((&text, "0"));
    let sign = if x < 0.0 && text != "0.0" { "-" } else { "" };
    match whole.parse::<u64>() {
        Ok(w) => format!("{sign}{}.{frac}", count(w)),
        Err(_) => format!("{sign}{text}"),
    }
}

/// A threshold as written: `99`, `99.5`, `0.25`.
fn threshold(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A rate below `min`, with enough decimals not to look equal to it: `98.96` against 99 is
/// `98.96`, never `99.0`.
fn percent_below(rate: f64, min: f64) -> String {
    if (rate * 10.0).round() / 10.0 < min {
        return one_decimal(rate);
    }
    for decimals in 2..=4 {
        let scale = 10f64.powi(decimals);
        let shown = (rate * scale).round() / scale;
        if shown < min {
            return format!("{shown:.*}", decimals as usize);
        }
    }
    format!("{rate}")
}

#[cfg(test)]
mod tests {
    use super::super::{NoData, Probe};
    use super::*;

    fn spec() -> AnalysisSpec {
        AnalysisSpec {
            interval_ms: 60_000,
            max_failed_checks: 2,
            no_data: NoData::Hold,
            min_requests: 50,
            success_rate_min: Some(99.0),
            max_drop_vs_stable: Some(1.0),
            probes: vec![Probe {
                path: "/health".to_owned(),
                expect_status: 200,
            }],
        }
    }

    fn counts(requests: u64, errors: u64) -> Option<Counts> {
        Some(Counts { requests, errors })
    }

    fn probe(status: Option<u16>) -> ProbeResult {
        ProbeResult {
            url: "https://ca-web--r2.env.uksouth.azurecontainerapps.io/health".to_owned(),
            expected: 200,
            status,
            error: status
                .is_none()
                .then(|| "cannot connect: connection refused".to_owned()),
        }
    }

    #[test]
    fn a_good_canary_passes_with_its_numbers() {
        let (v, reason) = judge(
            &spec(),
            10,
            counts(10_000, 10),
            counts(1_204, 2),
            &[probe(Some(200))],
        );
        assert_eq!(v, Verdict::Pass);
        assert_eq!(
            reason,
            "success rate 99.8% over 1,204 requests (stable 99.9%); probes 1/1"
        );
    }

    #[test]
    fn a_failed_probe_fails_the_check_whatever_the_metrics() {
        let (v, reason) = judge(
            &spec(),
            10,
            counts(1_000, 0),
            counts(1_000, 0),
            &[probe(Some(503))],
        );
        assert_eq!(v, Verdict::Fail);
        assert_eq!(
            reason,
            "probe GET https://ca-web--r2.env.uksouth.azurecontainerapps.io/health answered 503, expected 200"
        );
        let (v, reason) = judge(&spec(), 10, None, counts(3, 0), &[probe(None)]);
        assert_eq!(v, Verdict::Fail, "a failed probe is not NoData");
        assert!(
            reason.ends_with("/health gave no answer: cannot connect: connection refused"),
            "{reason}"
        );
        let (v, _) = judge(&spec(), 10, None, None, &[probe(None)]);
        assert_eq!(v, Verdict::Fail, "nor an Error");
    }

    #[test]
    fn a_low_success_rate_fails_with_the_rate_threshold_and_count() {
        let (v, reason) = judge(&spec(), 10, None, counts(1_204, 226), &[]);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(reason, "success rate 81.2% < 99% over 1,204 requests");
        // Just below: never shown as equal to the threshold.
        let (v, reason) = judge(&spec(), 10, None, counts(10_000, 104), &[]);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(reason, "success rate 98.96% < 99% over 10,000 requests");
        let (_, reason) = judge(&spec(), 10, None, counts(100_000, 1_004), &[]);
        assert_eq!(reason, "success rate 98.996% < 99% over 100,000 requests");
        // Both a probe and the rate: both said.
        let (_, reason) = judge(&spec(), 10, None, counts(1_204, 226), &[probe(Some(500))]);
        assert!(
            reason.contains("answered 500") && reason.contains("; success rate 81.2%"),
            "{reason}"
        );
    }

    #[test]
    fn a_drop_below_the_stable_revision_fails() {
        let s = AnalysisSpec {
            success_rate_min: Some(95.0),
            ..spec()
        };
        let (v, reason) = judge(&s, 50, counts(2_000, 10), counts(1_000, 30), &[]);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(
            reason,
            "success rate 97.0% is 2.5 points below the stable revision's 99.5% (maxDrop 1)"
        );
        // Within the allowed drop.
        let (v, _) = judge(&s, 50, counts(2_000, 10), counts(1_000, 12), &[]);
        assert_eq!(v, Verdict::Pass);
    }

    #[test]
    fn a_stable_revision_with_too_few_requests_is_not_compared() {
        let s = AnalysisSpec {
            success_rate_min: None,
            ..spec()
        };
        let (v, reason) = judge(&s, 90, counts(10, 0), counts(1_000, 100), &[]);
        assert_eq!(v, Verdict::Pass);
        assert_eq!(
            reason,
            "success rate 90.0% over 1,000 requests (stable not compared: 10 requests < minRequests 50)"
        );
        // No stable revision at all: nothing to compare, nothing said.
        let (v, reason) = judge(&s, 90, None, counts(1_000, 100), &[]);
        assert_eq!(v, Verdict::Pass);
        assert_eq!(reason, "success rate 90.0% over 1,000 requests");
    }

    #[test]
    fn too_few_requests_is_no_data_with_the_count_and_threshold() {
        let (v, reason) = judge(
            &spec(),
            10,
            counts(500, 0),
            counts(12, 0),
            &[probe(Some(200))],
        );
        assert_eq!(v, Verdict::NoData);
        assert_eq!(reason, "12 requests < minRequests 50");
        let (v, reason) = judge(&spec(), 10, None, counts(1, 1), &[]);
        assert_eq!(v, Verdict::NoData);
        assert_eq!(reason, "1 request < minRequests 50");
    }

    #[test]
    fn at_weight_0_the_probes_decide() {
        let (v, reason) = judge(
            &spec(),
            0,
            counts(500, 0),
            counts(0, 0),
            &[probe(Some(200))],
        );
        assert_eq!(v, Verdict::Pass);
        assert_eq!(
            reason,
            "metrics not judged at weight 0 (no user traffic by design: 0 requests < minRequests 50); probes 1/1"
        );
        let (v, _) = judge(
            &spec(),
            0,
            counts(500, 0),
            counts(0, 0),
            &[probe(Some(404))],
        );
        assert_eq!(v, Verdict::Fail);
        // With enough requests at weight 0 (someone uses the preview URL), they are judged.
        let (v, _) = judge(&spec(), 0, None, counts(100, 50), &[probe(Some(200))]);
        assert_eq!(v, Verdict::Fail);
    }

    #[test]
    fn unread_metrics_are_an_error_and_unasked_ones_are_ignored() {
        let (v, reason) = judge(&spec(), 10, None, None, &[probe(Some(200))]);
        assert_eq!(v, Verdict::Error);
        assert_eq!(reason, "the metrics could not be read");
        let probes_only = AnalysisSpec {
            success_rate_min: None,
            max_drop_vs_stable: None,
            ..spec()
        };
        let (v, reason) = judge(&probes_only, 10, None, None, &[probe(Some(200))]);
        assert_eq!((v, reason.as_str()), (Verdict::Pass, "probes 1/1"));
        let (v, reason) = judge(&probes_only, 10, None, None, &[probe(Some(301))]);
        assert_eq!(v, Verdict::Fail);
        assert!(reason.contains("answered 301, expected 200"), "{reason}");
        let nothing = AnalysisSpec {
            probes: Vec::new(),
            ..probes_only
        };
        assert_eq!(
            judge(&nothing, 10, None, None, &[]),
            (Verdict::Pass, "no gates to check".to_owned())
        );
        // minRequests 0 and no request: nothing to judge the rate on.
        let zero = AnalysisSpec {
            min_requests: 0,
            ..spec()
        };
        assert_eq!(
            judge(&zero, 10, None, counts(0, 0), &[]),
            (Verdict::Pass, "no requests".to_owned())
        );
    }

    #[test]
    fn numbers_read_the_way_people_write_them() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(one_decimal(99.84), "99.8");
        assert_eq!(one_decimal(1_204.0), "1,204.0");
        assert_eq!(one_decimal(-2.5), "-2.5");
        assert_eq!(threshold(99.0), "99");
        assert_eq!(threshold(99.5), "99.5");
        assert_eq!(threshold(0.25), "0.25");
    }
}
