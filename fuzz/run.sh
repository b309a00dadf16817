#!/usr/bin/env bash
# Runs each cargo-fuzz target for SECONDS (default 600) with libFuzzer, after seeding its
# corpus from Azure's example bodies (tests/fixtures/azure-specs) and the example desired state.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Usage:
#   bash fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(desired_state arm_response acr_response)
specs=../tests/fixtures/azure-specs

seed() { # target, then files whose response bodies (or whole text) seed it
    local dir="corpus/$1"; shift
    mkdir -p "$dir"
    python3 - "$dir" "$@" <<'PY'
import json, sys, hashlib, pathlib
out = pathlib.Path(sys.argv[1])
for name in sys.argv[2:]:
    p = pathlib.Path(name)
    if p.suffix == ".json":
        doc = json.loads(p.read_text())
        bodies = [r.get("body") for r in doc.get("responses", {}).values() if r.get("body") is not None]
    else:
        bodies = [p.read_text()]
    for b in bodies:
        text = b if isinstance(b, str) else json.dumps(b)
        (out / hashlib.sha1(text.encode()).hexdigest()).write_text(text)
PY
}
seed desired_state $(find ../desired-state -name '*.yaml')
seed arm_response "$specs"/*.json
seed acr_response "$specs"/acr/*.json

for t in "${targets[@]}"; do
    echo "==> fuzz $t for ${seconds}s"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        2>&1 | grep -E '^(#[0-9]+ +DONE|Done|==[0-9]+== ERROR|SUMMARY|.*panicked)' || true
    if [ -d "artifacts/$t" ] && [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "fuzz $t found a crash: fuzz/artifacts/$t" >&2
        exit 1
    fi
done
