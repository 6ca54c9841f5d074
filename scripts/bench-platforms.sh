#!/usr/bin/env bash
# Benchmark (issue 12): every platform in one pass against two. The shipped
# recipe (recipes/debian-bookworm.toml, its bootstrap cached) is built with
#   two: [targets.kvm] + [targets.hyperv]                  (qcow2, VHDX)
#   six: kvm, hyperv, azure, vmware, gce, kubevirt         (+ VHD, OVA, GCE tar.gz, OCI archive)
# and the median wall time of each is printed with the ratio six/two (the
# goal of issue 24: at most 3). Both read the OS tree once and assemble it
# once; the extra cost is writing (and compressing) the four extra outputs.
#
#   scripts/bench-platforms.sh [RUNS]      (default 3 runs after a warm-up; needs hyperfine)
#   BENCH_DIR=/somewhere scripts/bench-platforms.sh   (default: a temp dir under /var/tmp)
#   BASELINE_SIZES=sizes.txt scripts/bench-platforms.sh   (lines "<bytes> <file>", as from
#       `stat -c '%s %n' debian-*` in an earlier six-target output dir: sizes printed side by side)
#
# Warm page cache; both commands end with imgbuild's fsync of every output. Before
# each run `sync` (hyperfine --prepare, untimed) writes back what the run before left
# dirty (the outputs it replaced, their discards), so no run pays for another's.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
for tool in hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "bench-platforms: $tool is required (scripts/install-deps.sh)" >&2; exit 1; }
done
cargo build --release -p imgbuild >&2
IMGBUILD=${CARGO_TARGET_DIR:-$PWD/target}/release/imgbuild

W=${BENCH_DIR:-$(mktemp -d /var/tmp/bench-platforms.XXXXXX)}
mkdir -p "$W"
trap 'rm -rf "$W"/out-two "$W"/out-six' EXIT

# The shipped recipe up to its first target, then each set of targets.
python3 - "$W" <<'EOF'
import sys, pathlib
w = pathlib.Path(sys.argv[1])
text = pathlib.Path("recipes/debian-bookworm.toml").read_text()
head = text[: text.index("\n[targets.")]
two = '\n[targets.kvm]\nformat = "qcow2"\ncmdline = "console=hvc0"\n\n[targets.hyperv]\n'
six = two + "\n[targets.azure]\n\n[targets.vmware]\n\n[targets.gce]\n\n[targets.kubevirt]\n"
(w / "two.toml").write_text(head + two)
(w / "six.toml").write_text(head + six)
EOF

# Bootstrap (or find cached) first, so neither side pays for it.
"$IMGBUILD" check "$W/six.toml" >/dev/null

hyperfine --style basic --runs "$RUNS" --warmup 1 --prepare sync --export-json "$W/platforms.json" \
    -n "two targets (kvm, hyperv)" "$IMGBUILD build $W/two.toml -o $W/out-two --quiet" \
    -n "six targets (kvm, hyperv, azure, vmware, gce, kubevirt)" "$IMGBUILD build $W/six.toml -o $W/out-six --quiet" >&2

echo
echo "## every platform vs two ($(nproc) CPUs, median of $RUNS runs, warm cache)"
echo
python3 - "$W/platforms.json" "$W/out-six" "${BASELINE_SIZES:-}" <<'EOF'
import json, sys, os
r = json.load(open(sys.argv[1]))["results"]
two, six = (x["median"] for x in r)
print("| build | median | outputs |")
print("|---|---|---|")
print(f"| two targets | {two:.1f} s | qcow2, VHDX |")
sizes = ", ".join(f"{f} {os.path.getsize(os.path.join(sys.argv[2], f)) / 2**20:.0f} MiB"
                  for f in sorted(os.listdir(sys.argv[2])) if f.startswith("debian-"))
print(f"| six targets | {six:.1f} s | {sizes} |")
print()
print(f"six / two = {six / two:.2f} (goal: <= 3)")
if len(sys.argv) > 3 and sys.argv[3]:
    before = {}
    for line in open(sys.argv[3]):
        n, f = line.split()
        before[os.path.basename(f)] = int(n)
    print()
    print("| output | before | now | change |")
    print("|---|---|---|---|")
    for f in sorted(os.listdir(sys.argv[2])):
        if f in before:
            now = os.path.getsize(os.path.join(sys.argv[2], f))
            print(f"| {f} | {before[f]} | {now} | {(now - before[f]) * 100 / before[f]:+.2f} % |")
EOF
