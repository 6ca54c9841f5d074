#!/usr/bin/env bash
# Benchmark `imgbuild convert` against `qemu-img convert` on a 3 GiB sparse
# raw disk holding ~400 MB of real files (a tar of /usr, placed in 40 chunks
# spread over the disk). Prints the median of each command and the ratios.
#
#   scripts/bench-convert.sh [RUNS]        (default 5 runs; needs hyperfine, qemu-img)
#   BENCH_DIR=/somewhere scripts/bench-convert.sh   (default: a temp dir under /var/tmp)
#
# imgbuild fsyncs its output before renaming it into place, so qemu-img is
# timed twice: with its default cache mode (no flush at all) and with
# `-t writeback` (flushes at the end), which is the like-for-like comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
for tool in hyperfine qemu-img python3 tar; do
    command -v "$tool" >/dev/null || { echo "bench-convert: $tool is required" >&2; exit 1; }
done

cargo build --release -p imgbuild >&2
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
IMGBUILD=$TARGET_DIR/release/imgbuild
[ -x "$IMGBUILD" ] || { echo "bench-convert: $IMGBUILD not built" >&2; exit 1; }

W=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-convert.XXXXXX)}
mkdir -p "$W"
trap 'rm -f "$W"/out.* "$W"/probe.*' EXIT
SRC=$W/src.raw
CHUNKS=40
CHUNK_MIB=10
STRIDE_MIB=75   # 40 * 75 MiB = 3000 MiB < 3 GiB

if [ ! -f "$SRC" ]; then
    echo "creating $SRC (3 GiB sparse, $((CHUNKS * CHUNK_MIB)) MiB of /usr data)" >&2
    tar -cf - -C / usr/lib usr/share usr/bin 2>/dev/null | head -c $((CHUNKS * CHUNK_MIB << 20)) >"$W/payload" || true
    truncate -s 3G "$SRC"
    for i in $(seq 0 $((CHUNKS - 1))); do
        dd if="$W/payload" of="$SRC" bs=1M skip=$((i * CHUNK_MIB)) seek=$((i * STRIDE_MIB)) \
            count=$CHUNK_MIB conv=notrunc status=none
    done
    rm -f "$W/payload"
fi
echo "source: $(du -h --apparent-size "$SRC" | cut -f1) virtual, $(du -h "$SRC" | cut -f1) allocated" >&2

# A format the imgbuild on this branch cannot write yet is skipped, not failed.
can_write() {
    truncate -s 1M "$W/probe.raw"
    "$IMGBUILD" convert "$W/probe.raw" "$W/probe.$1" >/dev/null 2>&1
}

declare -a NAMES CMDS
add() { NAMES+=("$1"); CMDS+=("$2"); }
add "imgbuild qcow2"             "$IMGBUILD convert $SRC $W/out.qcow2"
add "qemu-img qcow2"             "qemu-img convert -f raw -O qcow2 $SRC $W/out.qcow2"
add "qemu-img qcow2 -t wb"       "qemu-img convert -t writeback -f raw -O qcow2 $SRC $W/out.qcow2"
add "imgbuild qcow2 zlib"        "$IMGBUILD convert --compress zlib $SRC $W/out.qcow2"
add "qemu-img qcow2 -c"          "qemu-img convert -c -f raw -O qcow2 $SRC $W/out.qcow2"
add "qemu-img qcow2 -c -t wb"    "qemu-img convert -c -t writeback -f raw -O qcow2 $SRC $W/out.qcow2"
add "imgbuild qcow2 zstd"        "$IMGBUILD convert --compress zstd $SRC $W/out.qcow2"
add "qemu-img qcow2 -c zstd"     "qemu-img convert -c -o compression_type=zstd -f raw -O qcow2 $SRC $W/out.qcow2"
if can_write vhdx; then
    add "imgbuild vhdx"          "$IMGBUILD convert $SRC $W/out.vhdx"
    add "qemu-img vhdx -t wb"    "qemu-img convert -t writeback -f raw -O vhdx -o subformat=dynamic $SRC $W/out.vhdx"
else
    echo "imgbuild cannot write VHDX on this build: skipping the VHDX pair" >&2
fi

add "imgbuild vmdk"               "$IMGBUILD convert $SRC $W/out.vmdk"
add "qemu-img vmdk stream -t wb"   "qemu-img convert -t writeback -f raw -O vmdk -o subformat=streamOptimized $SRC $W/out.vmdk"
add "imgbuild vmdk sparse"        "$IMGBUILD convert --subformat monolithicSparse $SRC $W/out.vmdk"
add "qemu-img vmdk sparse -t wb"  "qemu-img convert -t writeback -f raw -O vmdk -o subformat=monolithicSparse $SRC $W/out.vmdk"

FLUSH_NOTE="flushing: imgbuild convert fsyncs its output (then renames it into place); qemu-img convert
  flushes nothing at the end with its default cache mode (cache=unsafe for the destination: only
  the format's own create step syncs), and flushes like imgbuild with -t writeback. The pairs
  marked -t wb are the like-for-like comparison; the others flatter qemu-img."
echo "$FLUSH_NOTE" >&2
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
JSON=$W/results.json
args=()
for i in "${!NAMES[@]}"; do args+=(-n "${NAMES[$i]}" "${CMDS[$i]}"); done
hyperfine --style basic --runs "$RUNS" --warmup 1 --prepare "rm -f $W/out.qcow2 $W/out.vhdx $W/out.vmdk" \
    --export-json "$JSON" "${args[@]}" >&2

python3 - "$JSON" <<'EOF'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
res = {r["command"]: statistics.median(r["times"]) for r in results}
cpu = {r["command"]: r["user"] + r["system"] for r in results}
# On a shared machine wall time is noisy; CPU time (user + system, all
# threads) says how much work each tool does.
print(f"{'command':28} {'median wall s':>13} {'mean cpu s':>11}")
for name, t in res.items():
    print(f"{name:28} {t:13.3f} {cpu[name]:11.3f}")
pairs = [
    ("imgbuild qcow2", "qemu-img qcow2"), ("imgbuild qcow2", "qemu-img qcow2 -t wb"),
    ("imgbuild qcow2 zlib", "qemu-img qcow2 -c"), ("imgbuild qcow2 zlib", "qemu-img qcow2 -c -t wb"),
    ("imgbuild qcow2 zstd", "qemu-img qcow2 -c zstd"), ("imgbuild vhdx", "qemu-img vhdx -t wb"),
    ("imgbuild vmdk", "qemu-img vmdk stream -t wb"),
    ("imgbuild vmdk sparse", "qemu-img vmdk sparse -t wb"),
]
print()
for ours, theirs in pairs:
    if ours in res and theirs in res:
        print(f"{theirs:24} / {ours:20}: wall {res[theirs] / res[ours]:5.2f}x, cpu {cpu[theirs] / cpu[ours]:5.2f}x  (>1: imgbuild faster)")
EOF
echo
echo "$FLUSH_NOTE"
