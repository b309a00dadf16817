#!/usr/bin/env bash
# Where a 1,000-app controller's heap is at rest, by allocation site (README, "Measured").
#
# Builds the controller with the system allocator (feature `system-alloc`: heaptrack traces
# malloc, which jemalloc bypasses) into target/heap, runs the fleet benchmark with each `run`
# under heaptrack, and when the benchmark stops a controller, kills it with -9 instead, so
# what heaptrack calls "leaked" is what the heap held at that moment: after converging and
# registry retention (ctl-0), and after the steady state's resyncs and edits (ctl-1).
# Prints, for each, the heap held and the sites that hold the most.
#
# Needs heaptrack (`apt-get install heaptrack`) and python3.
# Usage: scripts/heap-at-rest.sh [OUT_DIR]   (about 15 minutes, the build included)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v heaptrack >/dev/null || { echo "needs heaptrack: apt-get install heaptrack" >&2; exit 1; }
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
target="$PWD/target/heap"
# Symbols for the stacks; no LTO, so the build takes minutes, not a quarter of an hour.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --quiet --release --features system-alloc --bin aca-reconciler --example fleet \
    --target-dir "$target"
real="$target/release/aca-reconciler"

cat > "$out/wrap.sh" <<EOF
#!/usr/bin/env bash
# The fleet benchmark's --binary: 'run' goes under heaptrack, everything else as it is.
case " \$* " in *" run "*) ;; *) exec "$real" "\$@";; esac
n=\$(ls "$out"/ctl-*.log 2>/dev/null | wc -l)
heaptrack -o "$out/ctl-\$n" "$real" "\$@" > "$out/ctl-\$n.log" 2>&1 &
hp=\$!
trap 'pkill -9 -P \$hp -x aca-reconciler; wait \$hp; exit 0' TERM
wait \$hp
EOF
chmod +x "$out/wrap.sh"

"$target/release/examples/fleet" --apps 1000 --groups 10 --buckets on --output json \
    --planner-rounds 1 --binary "$out/wrap.sh" > "$out/fleet.json"

for z in "$out"/ctl-*.zst; do
    heaptrack_print -f "$z" --print-peaks=0 --print-allocators=0 --print-temporary=0 \
        --flamegraph-cost-type leaked -F "${z%.zst}.folded" > /dev/null
    echo "== $(basename "$z" .zst)"
    python3 - "${z%.zst}.folded" <<'PY'
import collections, sys
# A site: the first frames above the allocator's own, up to where the runtime starts.
sites, total = collections.Counter(), 0
plumbing = ("(alloc.rs)", "(boxed.rs)", "(raw_vec", "(node.rs)")
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    total += int(n)
    frames = []
    for f in reversed(stack.split(";")):
        if any(s in f for s in ("block_on", "harness.rs", "poll_fn.rs", "select.rs")):
            break
        if f.strip() and not any(s in f for s in plumbing):
            frames.append(f.replace(" ", ""))
    sites[" < ".join(frames[:8])] += int(n)
print(f"heap held: {total / 1e6:.1f} MB")
for site, n in sites.most_common(15):
    print(f"{n / 1e3:8.0f} KB  {site[:220]}")
PY
done
echo "(raw data in $out)"
