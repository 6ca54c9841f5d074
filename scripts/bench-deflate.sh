#!/usr/bin/env bash
# Benchmark (issue 24): our deflate against pigz and qemu-img, in one run on
# the same data. The source is the disk of `imgbuild`'s own build when given
# (a raw disk, e.g. disk.raw from a GCE tar.gz), else bench-convert.sh's
# synthetic one (3 GiB sparse, 400 MiB of /usr).
#
#   scripts/bench-deflate.sh [RUNS] [DISK.raw]   (default 3 runs; needs hyperfine, qemu-img, pigz, tar)
#   BENCH_DIR=/somewhere scripts/bench-deflate.sh
#
# Pairs (imgbuild's VMDK grains and GCE gzip: libdeflate level 3, formats/src/grain.rs;
# its qcow2 clusters: zlib-rs level 6 with qemu's 4 KiB window; qemu-img: zlib level 6):
#   streamOptimized VMDK      imgbuild convert            qemu-img convert -O vmdk -o subformat=streamOptimized
#   compressed qcow2 (zlib)   imgbuild convert --compress qemu-img convert -c -O qcow2
#   sparse tar.gz (GCE's)     (imgbuild builds it only)   tar -cS | pigz -6, and pigz -3 (our level)
# Every command flushes its output (qemu-img with -t writeback; pigz's
# output is synced with a final `sync -f`). The sizes are printed beside
# the times.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for tool in hyperfine qemu-img python3 tar pigz; do
    command -v "$tool" >/dev/null || { echo "bench-deflate: $tool is required (scripts/install-deps.sh)" >&2; exit 1; }
done
cargo build --release -p imgbuild >&2
IMGBUILD=${CARGO_TARGET_DIR:-$PWD/target}/release/imgbuild

W=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-deflate.XXXXXX)}
mkdir -p "$W"
trap 'rm -f "$W"/out.*' EXIT
SRC=${2:-}
if [ -z "$SRC" ]; then
    SRC=$W/src.raw
    if [ ! -f "$SRC" ]; then
        tar -cf - -C / usr/lib usr/share usr/bin 2>/dev/null | head -c $((400 << 20)) >"$W/payload" || true
        truncate -s 3G "$SRC"
        for i in $(seq 0 39); do
            dd if="$W/payload" of="$SRC" bs=1M skip=$((i * 10)) seek=$((i * 75)) count=10 conv=notrunc status=none
        done
        rm -f "$W/payload"
    fi
fi
echo "source: $SRC, $(du -h --apparent-size "$SRC" | cut -f1) virtual, $(du -h "$SRC" | cut -f1) allocated" >&2
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2

hyperfine --style basic --runs "$RUNS" --warmup 1 --export-json "$W/deflate.json" \
    -n "imgbuild vmdk stream" "$IMGBUILD convert $SRC $W/out.vmdk" \
    -n "qemu-img vmdk stream -t wb" "qemu-img convert -t writeback -f raw -O vmdk -o subformat=streamOptimized $SRC $W/out.q.vmdk" \
    -n "imgbuild qcow2 zlib" "$IMGBUILD convert --compress zlib $SRC $W/out.qcow2" \
    -n "qemu-img qcow2 -c -t wb" "qemu-img convert -c -t writeback -f raw -O qcow2 $SRC $W/out.q.qcow2" \
    -n "tar -S | pigz -6" "tar -cSf - -C $(dirname "$SRC") $(basename "$SRC") | pigz -6 > $W/out.tar.gz && sync -f $W/out.tar.gz" \
    -n "tar -S | pigz -3" "tar -cSf - -C $(dirname "$SRC") $(basename "$SRC") | pigz -3 > $W/out.3.tar.gz && sync -f $W/out.3.tar.gz" \
    >&2

echo
echo "## deflate: imgbuild vs qemu-img vs pigz ($(nproc) CPUs, median of $RUNS runs)"
echo
python3 - "$W" <<'PY'
import json, os, sys
w = sys.argv[1]
r = json.load(open(os.path.join(w, "deflate.json")))["results"]
files = ["out.vmdk", "out.q.vmdk", "out.qcow2", "out.q.qcow2", "out.tar.gz", "out.3.tar.gz"]
print("| command | median | output |")
print("|---|---|---|")
for x, f in zip(r, files):
    size = os.path.getsize(os.path.join(w, f)) / 2**20
    print(f"| {x['command']} | {x['median']:.2f} s | {size:.1f} MiB |")
PY
