"""Azure's Python SDK against the aca-reconciler simulator.

Every check uses the SDK as a user would: ManagedIdentityCredential (IDENTITY_ENDPOINT /
IDENTITY_HEADER), ContainerAppsAPIClient pointed at the simulator, its pagers and LRO pollers,
and MonitorManagementClient for the Azure Monitor metrics of an app.
Prints one line per check and a closing `N passed, N failed` line.
"""

import datetime
import json
import os
import sys
import time
import traceback
import urllib.request
import ssl

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.appcontainers import ContainerAppsAPIClient
from azure.mgmt.appcontainers.models import ContainerApp
from azure.mgmt.monitor import MonitorManagementClient

BASE = os.environ["SIM_BASE"]
CERT = os.environ["SIM_CERT"]
SUB = "6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b"
RG = "rg-xshopai-prod"

credential = ManagedIdentityCredential()
client = ContainerAppsAPIClient(
    credential,
    SUB,
    base_url=BASE,
    credential_scopes=["https://management.azure.com/.default"],
    connection_verify=CERT,
    polling_interval=0.2,
)
monitor = MonitorManagementClient(
    credential,
    SUB,
    base_url=BASE,
    credential_scopes=["https://management.azure.com/.default"],
    connection_verify=CERT,
)
tls = ssl.create_default_context(cafile=CERT)


def sim(method, path, body=None):
    """The simulator's /_sim/ control plane (not Azure)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + "/_sim/" + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, context=tls) as r:
        text = r.read()
        return json.loads(text) if text else None


CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def list_by_resource_group_follows_next_link():
    names = [a.name for a in client.container_apps.list_by_resource_group(RG)]
    assert names == ["ca-auth-service", "ca-cart-service", "ca-order-service", "ca-user-service", "ca-web-bff"], names
    pages = sim("GET", "requests")["byOperation"]["ContainerApps_ListByResourceGroup"]
    assert pages >= 3, f"page size 2 over 5 apps is 3 pages, saw {pages} requests"


@check
def list_by_subscription():
    apps = list(client.container_apps.list_by_subscription())
    assert len(apps) == 5 and all(a.id.startswith(f"/subscriptions/{SUB}/") for a in apps), [a.id for a in apps]


@check
def get_reads_the_model():
    app = client.container_apps.get(RG, "ca-user-service")
    assert app.provisioning_state == "Succeeded"
    assert app.configuration.ingress.target_port == 8080
    assert app.template.containers[0].image.startswith("crxshopaiprod.azurecr.io/user-service:")
    assert app.latest_revision_name.startswith("ca-user-service--")


@check
def get_missing_app_raises_resource_not_found():
    try:
        client.container_apps.get(RG, "ca-does-not-exist")
    except ResourceNotFoundError as e:
        assert e.error.code == "ResourceNotFound", e.error.code
    else:
        raise AssertionError("no error")


def update_scale(lro_mode, min_replicas):
    sim("PATCH", "config", {"lroMode": lro_mode, "lroMs": 600})
    poller = client.container_apps.begin_update(
        RG, "ca-cart-service", ContainerApp(location="UK South", template={"scale": {"minReplicas": min_replicas, "maxReplicas": 10}})
    )
    result = poller.result()
    assert poller.status() == "Succeeded", poller.status()
    app = client.container_apps.get(RG, "ca-cart-service")
    assert app.template.scale.min_replicas == min_replicas, app.template.scale
    assert app.provisioning_state == "Succeeded", app.provisioning_state
    # Unowned settings survive the merge patch.
    assert app.template.scale.rules[0].name == "http-scaling"
    assert app.configuration.dapr.enabled
    return result


@check
def begin_update_synchronous_200():
    update_scale("sync", 2)


@check
def begin_update_202_with_azure_async_operation():
    before = sim("GET", "requests")["byOperation"].get("ContainerAppOperationStatuses_Get", 0)
    update_scale("async", 3)
    after = sim("GET", "requests")["byOperation"].get("ContainerAppOperationStatuses_Get", 0)
    assert after > before, "the poller followed Azure-AsyncOperation"


@check
def begin_update_202_with_location_only():
    before = sim("GET", "requests")["byOperation"].get("ContainerAppOperationResults_Get", 0)
    update_scale("locationOnly", 4)
    after = sim("GET", "requests")["byOperation"].get("ContainerAppOperationResults_Get", 0)
    assert after > before, "the poller followed Location"


@check
def list_and_get_revisions():
    revisions = list(client.container_apps_revisions.list_revisions(RG, "ca-user-service"))
    assert len(revisions) >= 6, len(revisions)
    assert all(r.name.startswith("ca-user-service--") for r in revisions)
    one = client.container_apps_revisions.get_revision(RG, "ca-user-service", revisions[-1].name)
    assert one.active and one.running_state == "Running", (one.active, one.running_state)
    replicas = client.container_apps_revision_replicas.list_replicas(RG, "ca-user-service", one.name)
    assert len(replicas.value) == one.replicas, (len(replicas.value), one.replicas)


@check
def activate_deactivate_restart():
    revisions = list(client.container_apps_revisions.list_revisions(RG, "ca-web-bff"))
    inactive = next(r for r in revisions if not r.active)
    client.container_apps_revisions.activate_revision(RG, "ca-web-bff", inactive.name)
    assert client.container_apps_revisions.get_revision(RG, "ca-web-bff", inactive.name).active
    client.container_apps_revisions.deactivate_revision(RG, "ca-web-bff", inactive.name)
    assert not client.container_apps_revisions.get_revision(RG, "ca-web-bff", inactive.name).active
    current = client.container_apps.get(RG, "ca-web-bff").latest_ready_revision_name
    client.container_apps_revisions.restart_revision(RG, "ca-web-bff", current)
    restarts = sim("GET", "restarts")
    assert any(r["revision"] == current for r in restarts), restarts
    assert sim("GET", "outages") == [], sim("GET", "outages")


@check
def a_bad_traffic_split_is_a_400_with_the_arm_error():
    try:
        client.container_apps.begin_update(
            RG, "ca-user-service",
            ContainerApp(location="UK South", configuration={"ingress": {"traffic": [{"latestRevision": True, "weight": 60}]}}),
        ).result()
    except HttpResponseError as e:
        assert e.status_code == 400 and e.error.code == "ContainerAppInvalidTrafficWeight", (e.status_code, e.error.code)
    else:
        raise AssertionError("accepted weights that sum to 60")


@check
def monitor_reads_requests_per_revision_and_status_code_category():
    app = client.container_apps.get(RG, "ca-order-service")
    serving = app.latest_ready_revision_name
    image = app.template.containers[0].image
    sim("PATCH", "config", {"metricsDelayMs": 0})
    sim("POST", "behaviours", {"image": image, "errorRate": 0.25})
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)
    sim("POST", "traffic", {"subscription": SUB, "resourceGroup": RG, "app": "ca-order-service", "requestsPerSecond": 200})
    time.sleep(2.5)
    end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
    result = monitor.metrics.list(
        app.id,
        timespan=f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
        interval="PT1M",
        metricnames="Requests",
        aggregation="Total",
        filter="revisionName eq '*' and statusCodeCategory eq '*'",
        metricnamespace="Microsoft.App/containerApps",
    )
    assert result.namespace == "microsoft.app/containerapps", result.namespace
    (requests,) = result.value
    assert requests.name.value == "Requests" and requests.error_code == "Success", requests.error_code
    totals = {}
    for series in requests.timeseries:
        dims = {m.name.value: m.value for m in series.metadatavalues}
        totals[(dims["revisionname"], dims["statuscodecategory"])] = sum(p.total or 0 for p in series.data)
    assert set(totals) == {(serving, "2xx"), (serving, "5xx")}, totals
    failed, ok = totals[(serving, "5xx")], totals[(serving, "2xx")]
    assert ok + failed >= 300, totals
    assert abs(failed / (ok + failed) - 0.25) <= 0.02, totals
    sim("POST", "traffic", {"subscription": SUB, "resourceGroup": RG, "app": "ca-order-service", "requestsPerSecond": 0})


def main():
    passed = failed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report every failure, then go on
            failed += 1
            print(f"FAIL {fn.__name__}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {fn.__name__}")
    print(f"sdk conformance: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
