#!/usr/bin/env bash
# Measure imgbuild on hostile inputs (issue 14, "Hostile inputs and faults"):
# generates each input in a temporary directory, runs imgbuild on it under
# /usr/bin/time and prints a markdown table: exit status, peak RSS, wall
# time, peak disk use of $TMPDIR and the first line of the error.
#
#   scripts/bench-hostile.sh                  builds imgbuild (release) first
#   IMGBUILD=/path/to/imgbuild scripts/bench-hostile.sh    measures that binary
#   BOMB_MIB=4096 SIZE=512M TIMEOUT=300 BENCH_DIR=/somewhere scripts/bench-hostile.sh
#
# Inputs and outputs live in a fresh directory under BENCH_DIR (default
# /var/tmp), removed at the end.
#
# The cases:
#   deep    a tar with one file 50,000 directories deep (about 110 KB):
#           `make-fs --type ext4 --size 1G` (room for its 50,000 inodes);
#   bomb    a .tar.gz of one file of BOMB_MIB MiB of zeros (default 2048:
#           about 2 MB compressed, built from one compressed 1 MiB chunk
#           repeated): `make-fs --type ext4 --size $SIZE` (default 512M);
#           the peak disk use of $TMPDIR counts the unlinked spill through
#           /proc/PID/fd, sampled every 0.1 s;
#   recipe  a 50 MB recipe over a small tar: one [[config.files]] with 50 MB
#           of inline content (recipe-content), and 500,000 small
#           [[config.files]] (recipe-many): `imgbuild check`.
# Each case runs with a fresh, empty TMPDIR and at most TIMEOUT seconds
# (default 600; exit 124 when it is hit).
set -euo pipefail
cd "$(dirname "$0")/.."
BOMB_MIB=${BOMB_MIB:-2048}
SIZE=${SIZE:-512M}
TIMEOUT=${TIMEOUT:-600}
for tool in python3 /usr/bin/time timeout; do
    command -v "$tool" >/dev/null || { echo "bench-hostile: $tool is required" >&2; exit 1; }
done
if [ -z "${IMGBUILD:-}" ]; then
    cargo build --release -p imgbuild >&2
    IMGBUILD=${CARGO_TARGET_DIR:-$PWD/target}/release/imgbuild
fi
W=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-hostile.XXXXXX")
trap 'rm -rf "$W"' EXIT

python3 - "$W" "$BOMB_MIB" <<'EOF'
import io, sys, tarfile, zlib
w, bomb_mib = sys.argv[1], int(sys.argv[2])

def tar_of(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()

# (i) one file 50,000 directories deep.
open(f"{w}/deep.tar", "wb").write(tar_of([("d/" * 50000 + "f", b"x")]))

# (ii) gzip bomb: a tar header member, then BOMB_MIB + 1 MiB of zeros as one
# member whose deflate stream is a sync-flushed 1 MiB chunk repeated (each
# copy byte-aligned and referring only to zeros), a final empty block and
# the CRC-32/length trailer. Valid gzip, valid tar.
info = tarfile.TarInfo("zeros")
info.size = bomb_mib << 20
header = zlib.compressobj(9, zlib.DEFLATED, 31)
member1 = header.compress(info.tobuf(tarfile.USTAR_FORMAT)) + header.flush()
chunk_in = bytes(1 << 20)
c = zlib.compressobj(9, zlib.DEFLATED, -15)
chunk = c.compress(chunk_in) + c.flush(zlib.Z_SYNC_FLUSH)
crc, n = 0, bomb_mib + 1
for _ in range(n):
    crc = zlib.crc32(chunk_in, crc)
with open(f"{w}/bomb.tar.gz", "wb") as f:
    f.write(member1)
    f.write(bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF]))
    for _ in range(n):
        f.write(chunk)
    f.write(b"\x03\x00")
    f.write(crc.to_bytes(4, "little") + ((n << 20) & 0xFFFFFFFF).to_bytes(4, "little"))

# (iii) 50 MB recipes over a small tar.
open(f"{w}/small.tar", "wb").write(tar_of([("etc/hostname", b"small\n")]))
head = '[image]\nname = "hostile"\nsize = "2GiB"\n\n[os]\nsource = { tar = "small.tar" }\n\n'
line = "x" * 99 + "\n"
with open(f"{w}/recipe-content.toml", "w") as f:
    f.write(head + '[[config.files]]\npath = "/etc/big"\ncontent = """\n')
    f.write(line * (50_000_000 // len(line)))
    f.write('"""\n\n[targets.kvm]\n')
with open(f"{w}/recipe-many.toml", "w") as f:
    f.write(head)
    entry = '[[config.files]]\npath = "/etc/many/f{:06}"\ncontent = "' + "y" * 40 + '"\n\n'
    f.write("".join(entry.format(i) for i in range(500_000)))
    f.write("[targets.kvm]\n")
EOF

# The processes below PID $1, recursively.
descendants() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

# Largest bytes under $2 (named files, and unlinked ones held open by the
# processes below PID $1) while $1 lives, sampled every 0.1 s.
peak_tmp() {
    local parent=$1 dir=$2 max=0 cur pid fd target
    while kill -0 "$parent" 2>/dev/null; do
        cur=$(find "$dir" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}')
        for pid in $(descendants "$parent"); do
            for fd in /proc/"$pid"/fd/*; do
                target=$(readlink "$fd" 2>/dev/null) || continue
                case $target in
                "$dir"/*" (deleted)") cur=$((cur + $(stat -L -c %s "$fd" 2>/dev/null || echo 0))) ;;
                esac
            done
        done
        if ((cur > max)); then max=$cur; fi
        sleep 0.1
    done
    echo "$max"
}

ROWS=()
# run_case NAME INPUT -- imgbuild arguments...
run_case() {
    local name=$1 input=$2 tmp="$W/tmp-$1" status peak rss wall first
    shift 3
    rm -rf "$tmp" && mkdir "$tmp"
    echo "bench-hostile: $name: imgbuild $*" >&2
    set +e
    TMPDIR=$tmp /usr/bin/time -f '%M %e' -o "$W/$name.time" \
        timeout "$TIMEOUT" "$IMGBUILD" "$@" >"$W/$name.out" 2>"$W/$name.err" &
    local pid=$!
    peak=$(peak_tmp "$pid" "$tmp")
    wait "$pid"
    status=$?
    set -e
    rss=0 wall=?
    read -r rss wall < <(tail -n 1 "$W/$name.time") || true
    # The error line, else the first line (progress lines come before errors).
    first=$({ grep -m 1 '^error' "$W/$name.err" || grep -m 1 -v '^\s*$' "$W/$name.err" || true; } |
        cut -c 1-220 | sed 's/|/\\|/g')
    ROWS+=("| $name | $(du -h "$input" | cut -f1) | $status | $((rss / 1024)) | $wall | $((peak / 1048576)) | ${first:-} |")
}

run_case deep "$W/deep.tar" -- make-fs --type ext4 --size 1G "$W/deep.tar" "$W/deep.img"
run_case bomb "$W/bomb.tar.gz" -- make-fs --type ext4 --size "$SIZE" "$W/bomb.tar.gz" "$W/bomb.img"
run_case recipe-content "$W/recipe-content.toml" -- check "$W/recipe-content.toml"
run_case recipe-many "$W/recipe-many.toml" -- check "$W/recipe-many.toml"

echo
echo "imgbuild: $IMGBUILD; bomb: $BOMB_MIB MiB of zeros, make-fs --size $SIZE"
echo
echo "| case | input | exit | peak RSS (MiB) | wall (s) | peak TMPDIR (MiB) | first line of stderr |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
