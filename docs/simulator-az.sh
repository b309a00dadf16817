#!/usr/bin/env bash
# Runs the operations runbook's own `az containerapp` commands against the simulator.
# Usage: AZ=/path/to/az bash docs/simulator-az.sh   (az from `pip install azure-cli`)
# It runs the simulator and az inside a fresh network namespace that has only loopback
# (`unshare -n`, as root), so nothing can reach the internet; az's telemetry, surveys and
# dynamic extension installs are switched off too.
set -euo pipefail
cd "$(dirname "$0")/.."
AZ=${AZ:-az}
if [ -z "${IN_NETNS:-}" ]; then
  exec unshare -n env IN_NETNS=1 AZ="$AZ" bash "$0" "$@"
fi
ip link set lo up

work=$(mktemp -d)
export AZURE_CONFIG_DIR=$work/az AZURE_CORE_COLLECT_TELEMETRY=false AZURE_CORE_SURVEY_MESSAGE=false
export AZURE_EXTENSION_USE_DYNAMIC_INSTALL=no AZURE_CORE_NO_COLOR=true AZURE_CORE_ONLY_SHOW_ERRORS=true
export AZURE_CORE_DISABLE_PROGRESS_BAR=true
cargo build --quiet
target/debug/aca-reconciler simulate --listen 127.0.0.1:8443 --tls --tls-cert "$work/sim.pem" \
  --seed desired-state --revision-ready 2s >"$work/sim.out" 2>"$work/sim.err" &
trap 'kill %1 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "Serving until" "$work/sim.out" 2>/dev/null; do sleep 0.1; done
export REQUESTS_CA_BUNDLE=$work/sim.pem
# As on Container Apps, the identity endpoint is in the environment of every command: az asks
# it again whenever a token expires (without it, MSAL would try the VM metadata address).
export IDENTITY_ENDPOINT=https://127.0.0.1:8443/msi/token IDENTITY_HEADER=simulator

run() { printf '\n$ %s\n' "$*"; "$@"; }
RG=rg-xshopai-prod
run $AZ cloud register --name AcaSimulator \
  --endpoint-resource-manager https://127.0.0.1:8443 \
  --endpoint-active-directory https://127.0.0.1:8443 \
  --endpoint-active-directory-resource-id https://management.azure.com/ \
  --endpoint-active-directory-graph-resource-id https://127.0.0.1:8443/ \
  --endpoint-management https://management.core.windows.net/
run $AZ cloud set --name AcaSimulator
run $AZ login --identity --query "[].{name:name, id:id}" -o table
run $AZ account set --subscription 6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b
run $AZ containerapp list --resource-group $RG \
  --query "[].{Name:name, Status:properties.runningStatus, Replicas:properties.template.scale.minReplicas}" -o table
run $AZ containerapp show --name ca-user-service --resource-group $RG --query "properties.runningStatus" -o tsv
run $AZ containerapp revision list --name ca-user-service --resource-group $RG \
  --query "[].{Name:name, Active:properties.active, Weight:properties.trafficWeight, State:properties.runningState}" -o table
run $AZ containerapp update --name ca-user-service --resource-group $RG --min-replicas 5 --max-replicas 20 \
  --query "properties.template.scale.{min:minReplicas, max:maxReplicas}" -o tsv
run $AZ containerapp update --name ca-user-service --resource-group $RG \
  --image crxshopaiprod.azurecr.io/user-service:v1.2.0 --query "properties.latestRevisionName" -o tsv
old=$($AZ containerapp revision list --name ca-user-service --resource-group $RG --query "[0].name" -o tsv)
run $AZ containerapp revision activate --name ca-user-service --resource-group $RG --revision "$old"
run $AZ containerapp revision deactivate --name ca-user-service --resource-group $RG --revision "$old"
current=$($AZ containerapp show --name ca-user-service --resource-group $RG --query "properties.latestReadyRevisionName" -o tsv)
run $AZ containerapp revision restart --name ca-user-service --resource-group $RG --revision "$current"
run $AZ containerapp revision set-mode --name ca-cart-service --resource-group $RG --mode single -o none
run $AZ containerapp show --name ca-cart-service --resource-group $RG --query "properties.configuration.activeRevisionsMode" -o tsv
run $AZ containerapp ingress traffic set --name ca-user-service --resource-group $RG \
  --revision-weight "$current=100" --query "[].{revision:revisionName, weight:weight}" -o table
printf '\n$ curl -s %s/_sim/outages   # the simulator'"'"'s outage log\n' https://127.0.0.1:8443
curl -s --cacert "$work/sim.pem" https://127.0.0.1:8443/_sim/outages; echo
