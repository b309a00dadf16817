#!/usr/bin/env bash
# A canary in the simulator, with curl: a new revision whose image fails a fifth of its
# requests gets 10% of 100 requests per second; after 30 s, Azure Monitor's metrics API says so,
# and the canary's label URL answers. Prints each command and its output (the transcript in
# docs/simulator.md). Usage: bash docs/simulator-traffic.sh   (needs curl and jq; ports 8080
# and 8081 free).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
cp -r desired-state "$work/seed"
cat >"$work/seed/.simulator.yaml" <<'EOF'
# Read by `simulate --seed DIR` only (the desired-state loader skips dot-files).
images:
  crxshopaiprod.azurecr.io/user-service:v1.2.0: {errorRate: 0.2}
EOF
cargo build --quiet
target/debug/aca-reconciler simulate --listen 127.0.0.1:8080 --seed "$work/seed" --lro sync \
  --revision-ready 1s --metrics-delay 5s --ingress-listen 127.0.0.1:8081 \
  >"$work/sim.out" 2>"$work/sim.err" &
trap 'kill %1 2>/dev/null; rm -rf "$work"' EXIT
until grep -q "Serving until" "$work/sim.out" 2>/dev/null; do sleep 0.1; done

run() { printf '\n$ %s\n' "$1"; eval "$1"; }
run "grep -E 'simulator on|ingress' $work/sim.out"
run "TOKEN=\$(curl -s -X POST localhost:8080/_sim/token | jq -r .access_token)"
run "APP=/subscriptions/6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/resourceGroups/rg-xshopai-prod/providers/Microsoft.App/containerApps/ca-user-service"
run "curl -s -X PATCH \"localhost:8080\$APP?api-version=2026-01-01\" -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' \\
    -d '{\"properties\": {\"template\": {\"revisionSuffix\": \"canary\", \"containers\": [{\"name\": \"user-service\", \"image\": \"crxshopaiprod.azurecr.io/user-service:v1.2.0\"}]}}}' | jq -r .properties.latestRevisionName"
sleep 1.5
run "curl -s -X PATCH \"localhost:8080\$APP?api-version=2026-01-01\" -H \"Authorization: Bearer \$TOKEN\" -H 'Content-Type: application/json' \\
    -d '{\"properties\": {\"configuration\": {\"ingress\": {\"traffic\": [{\"revisionName\": \"ca-user-service--v119\", \"weight\": 90}, {\"revisionName\": \"ca-user-service--canary\", \"weight\": 10, \"label\": \"canary\"}]}}}}' \\
    | jq -c .properties.configuration.ingress.traffic"
run "curl -s -X POST localhost:8080/_sim/traffic -d '{\"subscription\": \"6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b\", \"resourceGroup\": \"rg-xshopai-prod\", \"app\": \"ca-user-service\", \"requestsPerSecond\": 100}' | jq -c '{app, requestsPerSecond, since}'"
run "SINCE=\$(curl -s localhost:8080/_sim/traffic | jq -r '.[] | select(.app == \"ca-user-service\").since')"
run "curl -s -i -H 'Host: ca-user-service---canary.xshopaiprod.uksouth.azurecontainerapps.io' localhost:8081/health"
echo
run "sleep 35   # 30 s of traffic, and the 5 s ingestion delay"
run "curl -s -G \"localhost:8080\$APP/providers/Microsoft.Insights/metrics\" -H \"Authorization: Bearer \$TOKEN\" \\
    --data-urlencode api-version=2023-10-01 --data-urlencode metricnames=Requests --data-urlencode aggregation=Total \\
    --data-urlencode interval=FULL --data-urlencode \"timespan=\$SINCE/PT30S\" \\
    --data-urlencode \"\\\$filter=revisionName eq '*' and statusCodeCategory eq '*'\" | jq ."
run "curl -s localhost:8080/_sim/outages"
