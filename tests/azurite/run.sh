#!/usr/bin/env bash
# Leader election against Azurite, Azure's storage emulator: two `run` replicas on one blob lease.
# Installs Azurite (npm, pinned in tests/azurite/package-lock.json) under target/azurite, then runs
# the ignored tests that need it (the takeover, and the takeover of a rollout in progress). Each
# test starts Azurite itself: bound to 127.0.0.1, on a free port, with --disableTelemetry (without
# it Azurite tries to phone home).
set -euo pipefail
cd "$(dirname "$0")/../.."

dir=target/azurite
mkdir -p "$dir"
cp tests/azurite/package.json tests/azurite/package-lock.json "$dir/"
if [ ! -x "$dir/node_modules/.bin/azurite-blob" ] || ! cmp -s tests/azurite/package-lock.json "$dir/node_modules/.package-lock.json.src" 2>/dev/null; then
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp tests/azurite/package-lock.json "$dir/node_modules/.package-lock.json.src"
fi
export ACAR_AZURITE="$PWD/$dir/node_modules/.bin/azurite-blob"
"$ACAR_AZURITE" --version

cargo test --locked --test controller two_replicas -- --ignored --nocapture
cargo test --locked --test rollout the_standby_takes_over -- --ignored --nocapture
