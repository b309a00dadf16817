//! Metrics of the Azure calls: requests by route and status, and the throttling headroom ARM
//! reports (`x-ms-ratelimit-remaining-subscription-*`). Routes are a small fixed set of names,
//! so label cardinality stays bounded whatever the URLs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `acar_arm_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `containerApps.list`, `revisions.activate`, ...
    pub route: String,
    /// HTTP status, or `error` when no response arrived.
    pub status: String,
}

/// Labels of `acar_arm_ratelimit_remaining`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `reads` or `writes`.
    pub kind: String,
}

/// The metrics.
#[derive(Debug, Default)]
pub struct ArmMetrics {
    /// Requests by route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// The last `x-ms-ratelimit-remaining-subscription-*` seen.
    pub remaining: Family<KindLabels, Gauge>,
}

impl ArmMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "arm_requests",
            "Azure requests by route and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "arm_ratelimit_remaining",
            "Requests ARM says remain in the subscription's bucket (last seen)",
            self.remaining.clone(),
        );
    }

    /// Counts a request.
    pub fn record(&self, method: &str, path: &str, status: Option<u16>) {
        let labels = RequestLabels {
            route: route(method, path).to_owned(),
            status: status.map_or_else(|| "error".to_owned(), |s| s.to_string()),
        };
        self.requests.get_or_create(&labels).inc();
    }
}

/// A bounded name for an ARM or ACR path.
pub fn route(method: &str, path: &str) -> &'static str {
    let p = path.to_ascii_lowercase();
    let ends = |s: &str| p.ends_with(s);
    match method {
        _ if p.contains("/containerappoperationstatuses/")
            || p.contains("/containerappoperationresults/") =>
        {
            "operations.get"
        }
        _ if p.contains("/oauth2/") => "acr.token",
        "DELETE" if p.contains("/manifests/") => "acr.deleteManifest",
        "DELETE" if p.contains("/_tags/") => "acr.deleteTag",
        "GET" if ends("/_tags") => "acr.listTags",
        "GET" if ends("/_catalog") => "acr.listRepositories",
        "POST" if ends("/activate") => "revisions.activate",
        "POST" if ends("/deactivate") => "revisions.deactivate",
        "POST" if ends("/restart") => "revisions.restart",
        "GET" if ends("/providers/microsoft.insights/metrics") => "metrics.list",
        "GET" if ends("/replicas") => "replicas.list",
        "GET" if ends("/revisions") => "revisions.list",
        "GET" if p.contains("/revisions/") => "revisions.get",
        "GET" if ends("/containerapps") => "containerApps.list",
        "GET" if p.contains("/containerapps/") => "containerApps.get",
        "PATCH" => "containerApps.update",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_fixed_set() {
        let app = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps/ca";
        assert_eq!(
            route(
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.App/containerApps"
            ),
            "containerApps.list"
        );
        assert_eq!(route("GET", app), "containerApps.get");
        assert_eq!(route("PATCH", app), "containerApps.update");
        assert_eq!(route("GET", &format!("{app}/revisions")), "revisions.list");
        assert_eq!(
            route(
                "GET",
                &format!("{app}/providers/Microsoft.Insights/metrics")
            ),
            "metrics.list"
        );
        assert_eq!(
            route("POST", &format!("{app}/revisions/ca--x/deactivate")),
            "revisions.deactivate"
        );
        assert_eq!(
            route(
                "GET",
                "/subscriptions/s/providers/Microsoft.App/locations/l/containerappOperationStatuses/1"
            ),
            "operations.get"
        );
        assert_eq!(
            route("DELETE", "/acr/v1/team/api/_tags/v1"),
            "acr.deleteTag"
        );
    }
}
