#!/usr/bin/env bash
# Where a 1,000-app controller's heap is at rest, by allocation site (README, "Measured").
#
# Builds the controller with the system allocator (`--no-default-features`: heaptrack traces
# malloc, which jemalloc bypasses) into target/heap, runs the fleet benchmark with each `run`
# under heaptrack, and when the benchmark stops a controller, kills it with -9 instead, so
# what heaptrack calls "leaked" is what the heap held at that moment: after converging and
# registry retention (ctl-0), and after the steady state's resyncs and edits (ctl-1).
# Prints, for each, the heap held and the sites that hold the most (decimal MB and KB, as
# heaptrack counts).
#
# Needs heaptrack and heaptrack_print (`apt-get install heaptrack`) and python3; not
# heaptrack-gui, which heaptrack would open at each stop and wait on.
# Usage: scripts/heap-at-rest.sh [OUT_DIR]   (OUT_DIR new or empty; about 15 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in heaptrack heaptrack_print python3; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install heaptrack python3" >&2; exit 1; }
done
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
[ -z "$(ls -A "$out")" ] || { echo "$out is not empty: give a new directory" >&2; exit 1; }
target="$PWD/target/heap"
# Symbols for the stacks; no LTO, so the build takes minutes, not a quarter of an hour.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=none \
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --quiet --release --no-default-features --bin aca-reconciler --example fleet \
    --target-dir "$target"
real="$target/release/aca-reconciler"

# The fleet benchmark's --binary: `run` goes under heaptrack, everything else as it is. Each
# heaptrack's pid is written down, so that a benchmark that gives up leaves nothing running.
cat > "$out/wrap.sh" <<EOF
#!/usr/bin/env bash
case " \$* " in *" run "*) ;; *) exec "$real" "\$@";; esac
n=\$(ls "$out"/ctl-*.log 2>/dev/null | wc -l)
heaptrack -o "$out/ctl-\$n" "$real" "\$@" > "$out/ctl-\$n.log" 2>&1 &
hp=\$!
echo \$hp > "$out/ctl-\$n.pid"
trap 'pkill -9 -P \$hp -x aca-reconciler; wait \$hp; exit 0' TERM
wait \$hp
EOF
chmod +x "$out/wrap.sh"
cleanup() {
    for f in "$out"/ctl-*.pid; do
        [ -e "$f" ] && pkill -9 -P "$(cat "$f")" -x aca-reconciler 2>/dev/null || true
    done
}
trap cleanup EXIT

# fleet.json's RSS figures are the wrapper's, not the controller's: only its timings hold.
"$target/release/examples/fleet" --apps 1000 --groups 10 --buckets on --output json \
    --planner-rounds 1 --binary "$out/wrap.sh" > "$out/fleet.json"

shopt -s nullglob
traces=("$out"/ctl-*.zst "$out"/ctl-*.gz)
[ ${#traces[@]} -gt 0 ] || { echo "heaptrack wrote no trace in $out (see ctl-*.log)" >&2; exit 1; }
for z in "${traces[@]}"; do
    name="${z%.*}"
    heaptrack_print -f "$z" --print-peaks=0 --print-allocators=0 --print-temporary=0 \
        --flamegraph-cost-type leaked -F "$name.folded" > /dev/null
    echo "== $(basename "$name")"
    python3 - "$name.folded" <<'PY'
import collections, sys
# A site: the first frames above the allocator's own, up to where the runtime starts.
sites, total = collections.Counter(), 0
plumbing = ("(alloc.rs)", "(boxed.rs)", "(raw_vec", "(node.rs)")
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    if not n.isdigit():
        continue
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
