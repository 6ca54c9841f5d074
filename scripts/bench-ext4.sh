#!/usr/bin/env bash
# Benchmark `imgbuild make-fs --type ext4` against `mke2fs -t ext4 -d TAR`
# (e2fsprogs >= 1.47.1 reads tars through libarchive) on the same tar, same
# size, in the same run, alternating the two so load drifts hit both.
# Both are deterministic: imgbuild by construction, mke2fs through
# E2FSPROGS_FAKE_TIME / SOURCE_DATE_EPOCH, -U and -E hash_seed. Prints the
# median wall time, CPU time (user+sys) and peak RSS of each, and the ratio.
#
#   scripts/bench-ext4.sh [TAR] [RUNS]     (defaults: the cached Debian rootfs tar, 5)
#   SIZE=3G BENCH_DIR=/somewhere scripts/bench-ext4.sh
#
# imgbuild fsyncs its output before renaming it into place; mke2fs also
# flushes (fsync) when it closes the filesystem.
set -euo pipefail
cd "$(dirname "$0")/.."
TAR=${1:-$(scripts/debian-rootfs.sh)}
RUNS=${2:-5}
SIZE=${SIZE:-3G}
EPOCH=1700000000
UUID=0f0e0d0c-0b0a-4908-8706-050403020100
HASH_SEED=1f1e1d1c-1b1a-4918-9716-151413121110
for tool in mke2fs e2fsck python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-ext4: $tool is required" >&2; exit 1; }
done
[ -f "$TAR" ] || { echo "bench-ext4: $TAR is missing" >&2; exit 1; }

cargo build --release -p imgbuild >&2
IMGBUILD=${CARGO_TARGET_DIR:-$PWD/target}/release/imgbuild
W=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-ext4.XXXXXX)}
mkdir -p "$W"
trap 'rm -f "$W"/out.img "$W"/mke2fs.img' EXIT

run_imgbuild() {
    "$IMGBUILD" make-fs --type ext4 --size "$SIZE" --uuid "$UUID" --epoch "$EPOCH" "$TAR" "$W/out.img"
}
run_mke2fs() {
    E2FSPROGS_FAKE_TIME=$EPOCH SOURCE_DATE_EPOCH=$EPOCH \
        mke2fs -q -F -t ext4 -U "$UUID" -E "hash_seed=$HASH_SEED" -d "$TAR" "$W/mke2fs.img" "$SIZE"
}
export -f run_imgbuild run_mke2fs
export IMGBUILD SIZE UUID EPOCH HASH_SEED TAR W

# One untimed run of each (warm page cache), checked by e2fsck.
rm -f "$W/out.img" "$W/mke2fs.img"
run_imgbuild && run_mke2fs
for img in out.img mke2fs.img; do
    e2fsck -fn "$W/$img" >/dev/null 2>&1 || { echo "bench-ext4: e2fsck -fn $img failed" >&2; exit 1; }
done
echo "tar: $TAR ($(du -h "$TAR" | cut -f1)), size $SIZE, $RUNS runs each" >&2
echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2

: >"$W/times"
for i in $(seq "$RUNS"); do
    for tool in imgbuild mke2fs; do
        rm -f "$W/out.img" "$W/mke2fs.img"
        # wall seconds, user seconds, system seconds, peak RSS KiB
        /usr/bin/time -o "$W/one" -f "%e %U %S %M" bash -c "run_$tool"
        echo "$tool $(cat "$W/one")" >>"$W/times"
    done
done

python3 - "$W/times" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for tool in ("imgbuild", "mke2fs"):
    r = [(float(w), float(u) + float(s), int(m)) for t, w, u, s, m in rows if t == tool]
    med[tool] = tuple(statistics.median(x[i] for x in r) for i in range(3))
    print(f"{tool:9} median wall {med[tool][0]:6.2f} s   cpu {med[tool][1]:6.2f} s   "
          f"peak RSS {med[tool][2] / 1024:7.1f} MiB   (runs: {' '.join(str(x[0]) for x in r)})")
w = med["mke2fs"][0] / med["imgbuild"][0]
c = med["mke2fs"][1] / med["imgbuild"][1]
print(f"imgbuild is {w:.2f}x faster than mke2fs -d (wall), {c:.2f}x (cpu)")
EOF
