#!/usr/bin/env bash
# Conformance: Azure's own Python SDK (azure-mgmt-appcontainers, azure-mgmt-monitor, azure-identity) against the
# simulator over HTTPS. Proves the simulator speaks ARM to a client we did not write.
# Installs the SDK into a venv under target/ (from PyPI), starts `aca-reconciler simulate --tls`
# on a free loopback port, runs tests/conformance/test_sdk.py, stops the simulator.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/conformance-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/conformance/requirements.txt

cargo build --quiet --locked
bin=target/debug/aca-reconciler
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
"$bin" simulate --listen "127.0.0.1:$port" --tls --tls-cert "$work/sim.pem" \
  --seed desired-state --page-size 2 --revision-ready 1s --identity-header conformance \
  >"$work/sim.out" 2>"$work/sim.err" &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  grep -q "Serving until" "$work/sim.out" 2>/dev/null && break
  sleep 0.1
done
if ! grep -q "Serving until" "$work/sim.out"; then
  echo "the simulator did not start:"; cat "$work/sim.out" "$work/sim.err"; exit 1
fi

# One listener serves ARM and the managed-identity endpoint, both over https; the SDK's
# requests-based transports trust the simulator's certificate through REQUESTS_CA_BUNDLE.
IDENTITY_ENDPOINT="https://127.0.0.1:$port/msi/token" IDENTITY_HEADER=conformance \
REQUESTS_CA_BUNDLE="$work/sim.pem" SIM_BASE="https://127.0.0.1:$port" SIM_CERT="$work/sim.pem" \
  "$venv/bin/python" tests/conformance/test_sdk.py || { echo "--- simulator log"; tail -50 "$work/sim.err"; exit 1; }
