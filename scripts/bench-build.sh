#!/usr/bin/env bash
# Benchmark (issue 6): in one run, on one Debian rootfs tarball, compare
#   1. the shell pipeline a user would write for a bootable UEFI disk
#      (tar -x of the boot files, mke2fs -d TAR, mkfs.vfat + mcopy,
#      truncate + sgdisk, dd conv=notrunc,sparse, qemu-img convert to qcow2
#      and VHDX), timed as a whole and stage by stage;
#   2. qemu-img convert raw->qcow2 and raw->vhdx alone, on the pipeline's raw;
#   3. `imgbuild build` making the qcow2 and the VHDX from the same tar.
# Each is run once to warm up, then N times (interleaved); the Markdown
# report shows median wall time, peak RSS (GNU time %M), ratios against
# imgbuild and the output sizes against the data they hold.
#
# Usage: scripts/bench-build.sh [--runs N] [--size 3G] [--tar PATH]
#          [--imgbuild PATH] [--only pipeline,qemu,imgbuild] [--workdir DIR] [--keep]
# Defaults: 5 runs, 3G, the tests' cached Debian rootfs tarball (path printed
# by scripts/debian-rootfs.sh, which makes it when missing), imgbuild from $IMGBUILD or
# ${CARGO_TARGET_DIR:-target}/release/imgbuild. --size 64G shows imgbuild's
# peak RSS against the < 256 MiB bound; --only imgbuild skips the slow rest.
# Runs are warm-cache (the page cache is not dropped: that needs root).
set -euo pipefail
export LC_ALL=C

self=$(readlink -f "$0")
here=$(dirname "$self")
repo=$(dirname "$here")

# Fixed identifiers, so that every run of the pipeline writes the same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export MTOOLS_SKIP_CHECK=1
readonly FS_UUID=6e0c9f5a-3d4b-4c2a-9b7e-1f2a3b4c5d6e
readonly HASH_SEED=0b2f4a9e-8c1d-4e3f-a5b6-c7d8e9f0a1b2
readonly VFAT_ID=1234ABCD
readonly DISK_GUID=3f1c2b4a-5d6e-4f70-8192-a3b4c5d6e7f8
readonly ESP_GUID=8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d
readonly ROOT_GUID=1d2c3b4a-6f5e-4d7c-8b9a-0a1b2c3d4e5f
readonly MIB=$((1 << 20))
readonly ESP_MIB=256 # ESP of 256 MiB at 1 MiB (as imgbuild, whose first MiB also holds the BIOS boot partition), root up to the last MiB

die() {
  echo "bench-build: $*" >&2
  exit 1
}
log() { echo "bench-build: $*" >&2; }

# --- Pipeline stages: run as `bench-build.sh __stage NAME` under GNU time so
# each gets its own wall time and peak RSS. They read the exported P_* vars.

stage_extract() {
  # The boot files a user copies into the ESP, straight from the tar.
  mkdir -p "$P_DIR/x" "$P_DIR/esp/EFI/BOOT" "$P_DIR/esp/loader/entries"
  tar -xf "$P_TAR" -C "$P_DIR/x" --wildcards \
    './boot/vmlinuz-*' './boot/initrd.img-*' './usr/lib/systemd/boot/efi/systemd-bootx64.efi'
  local kernel ver
  kernel=$(printf '%s\n' "$P_DIR"/x/boot/vmlinuz-* | sort -V | tail -n 1)
  ver=${kernel##*/vmlinuz-}
  mv "$kernel" "$P_DIR/esp/vmlinuz-$ver"
  mv "$P_DIR/x/boot/initrd.img-$ver" "$P_DIR/esp/initrd.img-$ver"
  mv "$P_DIR/x/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$P_DIR/esp/EFI/BOOT/BOOTX64.EFI"
  printf 'default debian.conf\ntimeout 0\n' >"$P_DIR/esp/loader/loader.conf"
  printf 'title Debian\nlinux /vmlinuz-%s\ninitrd /initrd.img-%s\noptions root=PARTUUID=%s ro console=tty0 console=ttyS0,115200\n' \
    "$ver" "$ver" "$ROOT_GUID" >"$P_DIR/esp/loader/entries/debian.conf"
}

stage_mke2fs() {
  mke2fs -q -t ext4 -d "$P_TAR" -U "$FS_UUID" -E "root_owner=0:0,hash_seed=$HASH_SEED" \
    -L root "$P_DIR/root.img" "$((P_ROOT_BYTES / 1024))k"
}

stage_esp() {
  mkfs.vfat -F 32 -i "$VFAT_ID" -n ESP -C "$P_DIR/esp.img" $((ESP_MIB * 1024)) >/dev/null
  mcopy -s -i "$P_DIR/esp.img" "$P_DIR"/esp/* ::/
}

stage_gpt() {
  truncate -s "$P_SIZE" "$P_DIR/disk.raw"
  local root_first=$(((1 + ESP_MIB) * 2048)) root_last=$(((P_SIZE - MIB) / 512 - 1))
  sgdisk -U "$DISK_GUID" \
    -n "1:2048:+${ESP_MIB}M" -t 1:ef00 -u "1:$ESP_GUID" -c 1:esp \
    -n "2:$root_first:$root_last" -t 2:8304 -u "2:$ROOT_GUID" -c 2:root \
    "$P_DIR/disk.raw" >/dev/null
}

stage_dd() {
  dd if="$P_DIR/esp.img" of="$P_DIR/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$P_DIR/root.img" of="$P_DIR/disk.raw" bs=1M seek=$((1 + ESP_MIB)) conv=notrunc,sparse status=none
}

stage_qcow2() { qemu-img convert -f raw -O qcow2 "$P_DIR/disk.raw" "$P_DIR/disk.qcow2"; }
stage_vhdx() { qemu-img convert -f raw -O vhdx "$P_DIR/disk.raw" "$P_DIR/disk.vhdx"; }

if [ "${1:-}" = __stage ]; then
  "stage_$2"
  exit 0
fi

# --- Arguments.

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$self"; }
runs=5
size_arg=3G
tar_path=
imgbuild=${IMGBUILD:-${CARGO_TARGET_DIR:-$repo/target}/release/imgbuild}
only=pipeline,qemu,imgbuild
workdir=
keep=0
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=${2:?--runs needs a number}; shift 2 ;;
    --size) size_arg=${2:?--size needs a size}; shift 2 ;;
    --tar) tar_path=${2:?--tar needs a path}; shift 2 ;;
    --imgbuild) imgbuild=${2:?--imgbuild needs a path}; shift 2 ;;
    --only) only=${2:?--only needs a list}; shift 2 ;;
    --workdir) workdir=${2:?--workdir needs a directory}; shift 2 ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs wants a positive integer, got '$runs'"

# Sizes: bytes, or a number with K/M/G/T (binary; KiB/MiB/GiB/TiB accepted too).
parse_size() {
  local s=$1 n unit
  [[ $s =~ ^([0-9]+)([KMGT]?)(i?B)?$ ]] || return 1
  n=${BASH_REMATCH[1]}
  unit=${BASH_REMATCH[2]}
  case $unit in
    '') echo "$n" ;;
    K) echo $((n << 10)) ;;
    M) echo $((n << 20)) ;;
    G) echo $((n << 30)) ;;
    T) echo $((n << 40)) ;;
  esac
}
size=$(parse_size "$size_arg") || die "--size: cannot read '$size_arg' (try 3G, 3GiB, 64G, 4096M)"
((size % MIB == 0)) || die "--size must be a whole number of MiB, got $size bytes"
((size >= (ESP_MIB + 66) * MIB)) || die "--size must leave room for the $ESP_MIB MiB ESP and a root (>= $((ESP_MIB + 66)) MiB)"

want() { [[ ,$only, == *,$1,* ]]; }
for part in ${only//,/ }; do
  case $part in pipeline | qemu | imgbuild) ;; *) die "--only: unknown part '$part' (pipeline, qemu, imgbuild)" ;; esac
done
# qemu-img alone reads the pipeline's raw disk.
if want qemu && ! want pipeline; then only=pipeline,$only; fi

# --- Tools, all checked before anything runs.

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (package $2)"); }
need python3 python3
need qemu-img qemu-utils
need du coreutils
if want pipeline; then
  need tar tar
  need mke2fs e2fsprogs
  need mkfs.vfat dosfstools
  need mcopy mtools
  need sgdisk gdisk
  need truncate coreutils
  need dd coreutils
fi
[ -x /usr/bin/time ] || missing+=("/usr/bin/time (package time)")
[ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]}"
/usr/bin/time -f %M -o /dev/null true 2>/dev/null || die "/usr/bin/time is not GNU time (package time): no -f %M"
if want pipeline; then
  # mke2fs reads a tarball with -d since e2fsprogs 1.47.1.
  mke2fs_version=$(mke2fs -V 2>&1 | sed -n 's/^mke2fs \([0-9.]*\).*/\1/p' | head -n 1)
  [ "$(printf '%s\n1.47.1\n' "$mke2fs_version" | sort -V | head -n 1)" = 1.47.1 ] ||
    die "mke2fs $mke2fs_version cannot read a tarball with -d (needs e2fsprogs >= 1.47.1)"
fi

# --- Inputs.

if [ -z "$tar_path" ]; then
  log "the Debian rootfs tarball: scripts/debian-rootfs.sh (makes it when missing: needs mmdebstrap, takes a minute)"
  tar_path=$("$here/debian-rootfs.sh") || die "scripts/debian-rootfs.sh failed"
fi
[ -s "$tar_path" ] || die "tarball not found: $tar_path"
tar_path=$(readlink -f "$tar_path")

imgbuild_state=ok
if want imgbuild; then
  # Help texts are read whole first: `grep -q` closing a pipe early would
  # fail the pipeline (SIGPIPE under pipefail).
  imgbuild_json=0 imgbuild_quiet=0
  if [ ! -x "$imgbuild" ]; then
    imgbuild_state="imgbuild: binary not found at $imgbuild (cargo build --release -p imgbuild, or --imgbuild PATH)"
  elif ! grep -qE '^[[:space:]]+build([[:space:]]|$)' <<<"$("$imgbuild" --help 2>/dev/null || true)"; then
    imgbuild_state="imgbuild build: not available yet"
  else
    build_help=$("$imgbuild" build --help 2>/dev/null || true)
    if grep -q -- '--json' <<<"$build_help"; then imgbuild_json=1; fi
    if grep -q -- '--quiet' <<<"$build_help"; then imgbuild_quiet=1; fi
  fi
fi

if [ -z "$workdir" ]; then
  workdir=$(mktemp -d "${TMPDIR:-/tmp}/bench-build.XXXXXX")
else
  mkdir -p "$workdir"
  workdir=$(mktemp -d "$(readlink -f "$workdir")/bench-build.XXXXXX")
fi
cleanup() {
  if [ "$keep" = 1 ]; then log "kept $workdir"; else rm -rf "$workdir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

results=$workdir/results.tsv
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
: >"$results"

# timed PART LABEL RUN CMD...: runs CMD under GNU time; appends
# PART LABEL RUN SECONDS RSS_KIB STATUS to the results (RUN 0 = warm-up, not reported).
timed() {
  local part=$1 label=$2 run=$3 t0 t1 rc=0
  shift 3
  t0=$EPOCHREALTIME
  /usr/bin/time -f %M -o "$workdir/rss" "$@" || rc=$?
  t1=$EPOCHREALTIME
  local rss
  rss=$(tail -n 1 "$workdir/rss")
  [[ $rss =~ ^[0-9]+$ ]] || rss=0
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$part" "$label" "$run" \
    "$(elapsed "$t0" "$t1")" "$rss" "$rc" >>"$results"
  return "$rc"
}

readonly STAGES=(extract mke2fs esp gpt dd qcow2 vhdx)
pipeline_run() {
  local run=$1 t0 t1
  export P_DIR=$workdir/pipeline P_TAR=$tar_path P_SIZE=$size P_ROOT_BYTES=$((size - (2 + ESP_MIB) * MIB))
  rm -rf "$P_DIR"
  mkdir -p "$P_DIR"
  t0=$EPOCHREALTIME
  local st peak=0 rss
  for st in "${STAGES[@]}"; do
    timed pipeline "$st" "$run" bash "$self" __stage "$st" || die "pipeline stage $st failed (run $run)"
  done
  t1=$EPOCHREALTIME
  peak=$(awk -F'\t' -v r="$run" '$1 == "pipeline" && $3 == r && $5 > m { m = $5 } END { print m + 0 }' "$results")
  printf 'pipeline\ttotal\t%s\t%s\t%s\t0\n' "$run" "$(elapsed "$t0" "$t1")" "$peak" >>"$results"
}

qemu_run() {
  local run=$1 d=$workdir/qemu
  rm -rf "$d"
  mkdir -p "$d"
  timed qemu qcow2 "$run" qemu-img convert -f raw -O qcow2 "$workdir/pipeline/disk.raw" "$d/disk.qcow2" ||
    die "qemu-img convert to qcow2 failed"
  timed qemu vhdx "$run" qemu-img convert -f raw -O vhdx "$workdir/pipeline/disk.raw" "$d/disk.vhdx" ||
    die "qemu-img convert to vhdx failed"
}

write_recipe() {
  # The tar path is absolute; the TOML basic string escapes \ and ".
  local esc=${tar_path//\\/\\\\}
  esc=${esc//\"/\\\"}
  cat >"$workdir/bench.toml" <<EOF
# Generated by scripts/bench-build.sh
[image]
name = "bench"
size = "$((size / MIB))MiB"
epoch = $SOURCE_DATE_EPOCH

[os]
source = { tar = "$esc" }

[boot]
cmdline = "console=tty0 console=ttyS0,115200"

[config]
hostname = "bench"

[targets.kvm]
format = "qcow2"

[targets.hyperv]
format = "vhdx"
EOF
}

imgbuild_run() {
  local run=$1 d=$workdir/imgbuild
  rm -rf "$d"
  local args=(build "$workdir/bench.toml" -o "$d")
  if [ "$imgbuild_quiet" = 1 ]; then args+=(--quiet); fi
  if [ "$imgbuild_json" = 1 ]; then args+=(--json); fi
  if ! timed imgbuild build "$run" "$imgbuild" "${args[@]}" >"$workdir/imgbuild-$run.json" 2>"$workdir/imgbuild.err"; then
    imgbuild_state="imgbuild build failed: $(tail -n 3 "$workdir/imgbuild.err" | tr '\n' ' ')"
    log "$imgbuild_state"
  fi
}

# --- Runs.

log "tar $tar_path; size $size bytes; $runs runs + 1 warm-up; parts: $only; workdir $workdir"
want imgbuild && [ "$imgbuild_state" = ok ] && write_recipe
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq 0 "$runs"); do
  if [ "$run" = 0 ]; then log "warm-up run"; else log "run $run/$runs"; fi
  if want pipeline; then pipeline_run "$run"; fi
  if want qemu; then qemu_run "$run"; fi
  if want imgbuild && [ "$imgbuild_state" = ok ]; then imgbuild_run "$run"; fi
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Sanity (not timed): the outputs compared are what they claim to be.

if want pipeline; then
  p=$workdir/pipeline
  [ "$(sgdisk -p "$p/disk.raw" | grep -cE '^ +[12] ')" = 2 ] || die "pipeline: the raw disk lacks its two GPT partitions"
  qemu-img compare -q -f raw -F qcow2 "$p/disk.raw" "$p/disk.qcow2" || die "pipeline: qcow2 differs from the raw"
  qemu-img compare -q -f raw -F vhdx "$p/disk.raw" "$p/disk.vhdx" || die "pipeline: vhdx differs from the raw"
fi
if want qemu; then
  qemu-img compare -q -f raw -F qcow2 "$workdir/pipeline/disk.raw" "$workdir/qemu/disk.qcow2" || die "qemu-img: qcow2 differs from the raw"
  qemu-img compare -q -f raw -F vhdx "$workdir/pipeline/disk.raw" "$workdir/qemu/disk.vhdx" || die "qemu-img: vhdx differs from the raw"
fi
if want imgbuild && [ "$imgbuild_state" = ok ]; then
  ib_qcow2=$(find "$workdir/imgbuild" -maxdepth 1 -name '*.qcow2' | head -n 1)
  ib_vhdx=$(find "$workdir/imgbuild" -maxdepth 1 -name '*.vhdx' | head -n 1)
  if [ -z "$ib_qcow2" ] || [ -z "$ib_vhdx" ]; then
    imgbuild_state="imgbuild build: no .qcow2 and .vhdx in its output directory"
  else
    qemu-img check -q "$ib_qcow2" && qemu-img check -q "$ib_vhdx" || log "warning: qemu-img check fails on imgbuild's outputs"
    # kvm boots BIOS and UEFI, hyperv (Generation 2) UEFI only: the two disks
    # differ in the MBR's boot code and the BIOS boot partition alone.
    qemu-img compare -q --image-opts \
      "driver=raw,offset=$((MIB)),file.driver=qcow2,file.file.driver=file,file.file.filename=$ib_qcow2" \
      "driver=raw,offset=$((MIB)),file.driver=vhdx,file.file.driver=file,file.file.filename=$ib_vhdx" ||
      log "warning: imgbuild's qcow2 and vhdx differ after their first MiB"
  fi
fi

# --- Report (the outputs of the last run are the ones measured).

report_args=(--results "$results" --runs "$runs" --size "$size" --tar "$tar_path"
  --loadavg "$loadavg_before / $loadavg_after")
if want pipeline; then
  report_args+=(--output "pipeline raw (sparse)=$workdir/pipeline/disk.raw"
    --output "qemu-img qcow2 (pipeline)=$workdir/pipeline/disk.qcow2"
    --output "qemu-img vhdx (pipeline)=$workdir/pipeline/disk.vhdx")
  report_args+=(--command "mke2fs -t ext4 -d TAR -U $FS_UUID -E root_owner=0:0,hash_seed=$HASH_SEED -L root root.img $(((size - (2 + ESP_MIB) * MIB) / 1024))k")
fi
if want imgbuild; then
  report_args+=(--imgbuild-state "$imgbuild_state")
  if [ "$imgbuild_state" = ok ]; then
    report_args+=(--output "imgbuild qcow2=$ib_qcow2" --output "imgbuild vhdx=$ib_vhdx")
    for ((r = 1; r <= runs; r++)); do report_args+=(--imgbuild-json "$workdir/imgbuild-$r.json"); done
  fi
fi
python3 "$here/bench_report.py" "${report_args[@]}"
