#!/usr/bin/env bash
# Regenerates the dashboard screenshots in docs/ (README, "Dashboard"): runs the controller on
# the embedded simulator, waits until there is something to see, and has Debian's headless
# Chromium (`apt-get install chromium`; or set CHROMIUM) photograph the page.
#
#   docs/dashboard-overview.png   the example platform (desired-state/), after its first passes
#   docs/dashboard-rollout.png    examples/rollout's cart-service, a canary walking its steps
#
# Usage: scripts/screenshots.sh   (from anywhere; takes about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
chromium="${CHROMIUM:-chromium}"
command -v "$chromium" >/dev/null || { echo "needs Chromium: apt-get install chromium (or set CHROMIUM)" >&2; exit 1; }
cargo build --quiet
bin="$PWD/target/debug/aca-reconciler"
port=$(( 20000 + RANDOM % 20000 ))
url="http://127.0.0.1:$port"
pid=""
profile="$(mktemp -d)"
demo=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$profile" ${demo:+"$demo"}; }
trap cleanup EXIT

start() { # DIRECTORY DESIRED_STATE (relative to it, as the page shows it)
    [ -n "$pid" ] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
    (cd "$1" && exec "$bin" run --simulate --desired-state "$2" --listen "127.0.0.1:$port" --interval 20s >/dev/null 2>&1) &
    pid=$!
}

wait_for() { # SECONDS GREP-PATTERN-ON-/status [THE LINE AFTER]
    for _ in $(seq "$1"); do
        curl -sf "$url/status" | grep -A1 "$2" | grep -q "${3:-$2}" && return 0
        sleep 1
    done
    echo "gave up waiting for $2 in $url/status" >&2
    exit 1
}

shot() { # FILE URL WIDTHxHEIGHT
    "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$profile" --window-size="$3" --virtual-time-budget=2500 \
        --screenshot="$1" "$2" 2>/dev/null
    echo "wrote $1 ($(stat -c %s "$1") bytes)"
}

# The overview: the ten example apps converged, registry retention done.
start . desired-state
curl -s --retry 20 --retry-connrefused --retry-delay 1 -o /dev/null "$url/healthz"
wait_for 60 '"ready": true'
wait_for 60 '"retention"'
sleep 2
shot docs/dashboard-overview.png "$url/" 1280,1350

# A rollout in progress: cart-service's canary at its second step, a few checks plotted
# (user-service's canary, which fails 20% of its requests, has rolled back by then). The example
# checks every 15 s; a copy checks every 5 s (and so judges from 5 requests, not 20) so that
# the plot has more than a point or two.
demo="$(mktemp -d)"
mkdir -p "$demo/examples/rollout"
cp -r examples/rollout/. "$demo/examples/rollout/"
sed -i -e "s/interval: 15s/interval: 5s/" -e "s/minRequests: 20/minRequests: 5/" "$demo/examples/rollout/_defaults.yaml"
start "$demo" examples/rollout
curl -s --retry 20 --retry-connrefused --retry-delay 1 -o /dev/null "$url/healthz"
# (The rollout's own weight is followed by its stable revision; its steps' by their pause.)
wait_for 120 '"weight": 50,' '"stable"'
sleep 15
shot docs/dashboard-rollout.png "$url/#/app/6f1c2a8e-3b4d-4e5f-9a7b-1c2d3e4f5a6b/rg-xshopai-prod/ca-cart-service" 1280,1250
