//! Azure Monitor's metrics API for one app (N§11): the query that reads the `Requests` of
//! two revisions split by status category in one call, and a strict reading of its answer.
//! Pure; [`super::ArmClient::request_counts`] sends it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Error;
use crate::rollout::Counts;
use crate::time::{self, Millis};

/// The api-version of `Microsoft.Insights/metrics` (N§11: `metrics_API.json` 2023-10-01, the
/// version Microsoft Learn's Metrics - List page shows).
pub const API_VERSION: &str = "2023-10-01";

/// The metric namespace of container apps.
pub const NAMESPACE: &str = "Microsoft.App/containerApps";

/// The path of an app's metrics (`{appId}/providers/Microsoft.Insights/metrics`).
pub fn path(app_id: &str) -> String {
    format!("{app_id}/providers/Microsoft.Insights/metrics")
}

/// `revisionName eq 'a' or revisionName eq 'b' and statusCodeCategory eq '*'`: the values of
/// one dimension joined by `or`, split by another with `'*'` (N§11, the `$filter` text of
/// `metrics_API.json`: "`or` cannot separate two different metadata names").
pub fn filter(revisions: &[&str]) -> String {
    let names: Vec<String> = revisions
        .iter()
        .map(|r| format!("revisionName eq '{}'", r.replace('\'', "''")))
        .collect();
    format!("{} and statusCodeCategory eq '*'", names.join(" or "))
}

/// Azure Monitor's timestamps: `2025-01-01T10:00:00Z` (whole seconds).
fn timestamp(ms: Millis) -> String {
    time::format_arm(ms).replace("+00:00", "Z")
}

/// The query string (encoded, without `?`) of the `Requests` of `revisions` in
/// `[start, end)`: the total per revision and status category over the whole window
/// (`interval=FULL`, as the spec's `GetMetricError` example asks). `ValidateDimensions=false`:
/// a revision Azure has no data for yet has no series instead of failing the call (N§11).
pub fn query(revisions: &[&str], window: (Millis, Millis)) -> String {
    let pairs = [
        ("api-version", API_VERSION.to_owned()),
        ("metricnames", "Requests".to_owned()),
        ("metricnamespace", NAMESPACE.to_owned()),
        ("aggregation", "Total".to_owned()),
        (
            "timespan",
            format!("{}/{}", timestamp(window.0), timestamp(window.1)),
        ),
        ("interval", "FULL".to_owned()),
        ("$filter", filter(revisions)),
        // Series per call are capped at `top` (default 10) once `$filter` is given: two
        // revisions by five status categories fill that exactly.
        ("top", "50".to_owned()),
        ("ValidateDimensions", "false".to_owned()),
    ];
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (spaces as `%20`, never
/// `+`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct Body {
    value: Vec<Metric>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metric {
    name: Name,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    timeseries: Vec<Series>,
}

#[derive(Deserialize)]
struct Name {
    value: String,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metadatavalues: Vec<Dimension>,
    #[serde(default)]
    data: Vec<Point>,
}

#[derive(Deserialize)]
struct Dimension {
    name: Name,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct Point {
    #[serde(default)]
    total: Option<f64>,
}

/// Reads the answer to [`query`]: the counts of each of `revisions` (one with no series
/// served nothing: zero). `path` and `request_id` go into the error, for Azure support.
///
/// # Errors
/// A body that is not the metrics response, a `Requests` item that reports an error (Azure
/// answers 200 and puts a metric's failure in its item), a series without the revision or the
/// status category, a revision that was not asked, a total that is not a count.
pub fn parse(
    path: &str,
    body: &[u8],
    request_id: Option<&str>,
    revisions: &[&str],
) -> Result<BTreeMap<String, Counts>, Error> {
    let fail = |message: String| Error::Decode {
        resource: path.to_owned(),
        message: match request_id {
            Some(id) => format!("{message} (x-ms-request-id {id})"),
            None => message,
        },
    };
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| fail(format!("not an Azure Monitor metrics response: {e}")))?;
    let metric = body
        .value
        .iter()
        .find(|m| m.name.value.eq_ignore_ascii_case("Requests"))
        .ok_or_else(|| fail("the answer holds no Requests metric".to_owned()))?;
    if let Some(code) = metric
        .error_code
        .as_deref()
        .filter(|c| !c.eq_ignore_ascii_case("Success"))
    {
        return Err(fail(format!(
            "Azure Monitor could not read Requests: {code}: {}",
            metric.error_message.as_deref().unwrap_or("no message")
        )));
    }
    let mut counts: BTreeMap<String, Counts> = revisions
        .iter()
        .map(|r| ((*r).to_owned(), Counts::default()))
        .collect();
    for series in &metric.timeseries {
        // Dimension names come back lower-cased (the spec's GetMetric example): compare
        // without regard to case.
        let dimension = |name: &str| {
            series
                .metadatavalues
                .iter()
                .find(|d| d.name.value.eq_ignore_ascii_case(name))
                .and_then(|d| d.value.as_deref())
        };
        let revision = dimension("revisionName")
            .ok_or_else(|| fail("a Requests series has no revisionName".to_owned()))?;
        let category = dimension("statusCodeCategory").ok_or_else(|| {
            fail(format!(
                "the Requests series of {revision} has no statusCodeCategory"
            ))
        })?;
        let entry = counts
            .iter_mut()
            .find(|(name, _)| name.eq_ignore_ascii_case(revision))
            .map(|(_, c)| c)
            .ok_or_else(|| {
                fail(format!(
                    "a Requests series for revision {revision}, which was not asked for"
                ))
            })?;
        let mut total = 0.0;
        for point in &series.data {
            match point.total {
                Some(t) if t.is_finite() && t >= 0.0 => total += t,
                Some(t) => {
                    return Err(fail(format!(
                        "the Requests total {t} of {revision} is not a count"
                    )));
                }
                None => {}
            }
        }
        if total > u64::MAX as f64 {
            return Err(fail(format!(
                "the Requests total {total} of {revision} is not a count"
            )));
        }
        let n = total.round() as u64;
        entry.requests = entry.requests.saturating_add(n);
        if category.eq_ignore_ascii_case("5xx") {
            entry.errors = entry.errors.saturating_add(n);
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_asks_both_revisions_split_by_status_in_one_call() {
        let q = query(&["ca--a", "ca--b"], (1_733_392_860_000, 1_733_392_920_000));
        assert!(q.starts_with("api-version=2023-10-01&metricnames=Requests&"));
        assert!(
            q.contains("&timespan=2024-12-05T10%3A01%3A00Z%2F2024-12-05T10%3A02%3A00Z&"),
            "{q}"
        );
        assert!(
            q.contains("&%24filter=revisionName%20eq%20%27ca--a%27%20or%20revisionName%20eq%20%27ca--b%27%20and%20statusCodeCategory%20eq%20%27%2A%27&"),
            "{q}"
        );
        assert!(q.ends_with("&ValidateDimensions=false"), "{q}");
        assert_eq!(
            filter(&["x"]),
            "revisionName eq 'x' and statusCodeCategory eq '*'"
        );
    }

    fn series(revision: &str, category: &str, totals: &[f64]) -> serde_json::Value {
        serde_json::json!({
            "metadatavalues": [
                {"name": {"value": "revisionname", "localizedValue": "revisionname"}, "value": revision},
                {"name": {"value": "statuscodecategory", "localizedValue": "statuscodecategory"}, "value": category},
            ],
            "data": totals.iter().map(|t| serde_json::json!({"timeStamp": "2024-12-05T10:01:00Z", "total": t})).collect::<Vec<_>>(),
        })
    }

    fn body(timeseries: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "cost": 2, "timespan": "x", "interval": "PT1M", "namespace": "microsoft.app/containerapps",
            "value": [{"id": "x", "type": "Microsoft.Insights/metrics", "name": {"value": "Requests", "localizedValue": "Requests"},
                        "unit": "Count", "timeseries": timeseries, "errorCode": "Success"}],
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn series_are_summed_per_revision_and_5xx_are_errors() {
        let b = body(serde_json::json!([
            series("ca--a", "2xx", &[900.0, 100.0]),
            series("ca--a", "4xx", &[10.0]),
            series("ca--a", "5xx", &[2.0]),
            series("CA--B", "5xx", &[1.0]),
            {"metadatavalues": [
                {"name": {"value": "revisionname"}, "value": "ca--b"},
                {"name": {"value": "statuscodecategory"}, "value": "2xx"}],
             "data": [{"timeStamp": "t"}, {"timeStamp": "t", "total": 3.0}]},
        ]));
        let c = parse("/p", &b, Some("rid"), &["ca--a", "ca--b", "ca--c"]).unwrap();
        assert_eq!(
            c["ca--a"],
            Counts {
                requests: 1_012,
                errors: 2
            }
        );
        assert_eq!(
            c["ca--b"],
            Counts {
                requests: 4,
                errors: 1
            }
        );
        assert_eq!(c["ca--c"], Counts::default(), "no series: nothing served");
    }

    #[test]
    fn unexpected_shapes_are_errors_with_the_request_id() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"<html>".to_vec(), "not an Azure Monitor metrics response"),
            (b"{\"value\": []}".to_vec(), "no Requests metric"),
            (
                serde_json::json!({"value": [{"name": {"value": "Requests"}, "timeseries": [],
                    "errorCode": "InvalidSamplingType", "errorMessage": "Sampling type is not found."}]})
                .to_string()
                .into_bytes(),
                "InvalidSamplingType: Sampling type is not found.",
            ),
            (
                body(serde_json::json!([{"metadatavalues": [], "data": []}])),
                "no revisionName",
            ),
            (
                body(serde_json::json!([{"metadatavalues": [{"name": {"value": "revisionname"}, "value": "ca--a"}]}])),
                "no statusCodeCategory",
            ),
            (
                body(serde_json::json!([series("ca--z", "2xx", &[1.0])])),
                "not asked for",
            ),
            (
                body(serde_json::json!([series("ca--a", "2xx", &[-1.0])])),
                "not a count",
            ),
            (
                body(serde_json::json!([series("ca--a", "2xx", &[1e300])])),
                "not a count",
            ),
        ];
        for (b, needle) in cases {
            let e = parse("/m", &b, Some("req-1"), &["ca--a"])
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(e.contains("x-ms-request-id req-1"), "{e}");
        }
    }
}
