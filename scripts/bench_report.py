#!/usr/bin/env python3
"""Markdown report for scripts/bench-build.sh.

Reads the results TSV the script writes (part, label, run, seconds, peak RSS
KiB, exit status; run 0 is the warm-up and is left out), imgbuild's
`--json` outputs (`{"outputs": [...], "timings": {"stage": seconds}}`) when
there are any, and measures the output files: size on the host (apparent and
allocated, as `du --apparent-size` and `du` give them) against the data each
holds. "Data" is counted the same way for every image: `qemu-img convert -O
raw` (which leaves zero 4 KiB runs as holes) and the sum of the `data: true`
extents in `qemu-img map --output=json` of that raw.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MIB = 1 << 20

STAGE_NAMES = {
    "extract": "tar -x kernel, initrd, systemd-boot; ESP files",
    "mke2fs": "mke2fs -t ext4 -d TAR (root)",
    "esp": "mkfs.vfat -F 32 + mcopy (ESP)",
    "gpt": "truncate + sgdisk (GPT)",
    "dd": "dd conv=notrunc,sparse (ESP, root)",
    "qcow2": "qemu-img convert -O qcow2",
    "vhdx": "qemu-img convert -O vhdx",
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--results", required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--tar", required=True)
    p.add_argument("--loadavg", default="")
    p.add_argument("--output", action="append", default=[], help="LABEL=PATH")
    p.add_argument("--command", action="append", default=[])
    p.add_argument("--imgbuild-state")
    p.add_argument("--imgbuild-json", action="append", default=[])
    return p.parse_args()


def load_results(path):
    """{(part, label): [(seconds, rss_kib, status)]} for runs >= 1."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            part, label, run, secs, rss, status = line.rstrip("\n").split("\t")
            if int(run) == 0:
                continue
            out.setdefault((part, label), []).append((float(secs), int(rss), int(status)))
    return out


def human(n):
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def fmt_s(x):
    return f"{x:.2f}" if x >= 1 else f"{x:.3f}"


class Row:
    def __init__(self, name, secs, rss_kib):
        self.name = name
        self.secs = secs  # per measured run
        self.rss_kib = rss_kib  # per measured run (None: not measured)

    @property
    def median(self):
        return statistics.median(self.secs)

    def cells(self, ref):
        med = self.median
        ratio = f"{med / ref:.2f}×" if ref else "—"
        rss = f"{max(self.rss_kib) / 1024:.1f}" if self.rss_kib else "—"
        return [self.name, fmt_s(med), f"{fmt_s(min(self.secs))}–{fmt_s(max(self.secs))}", ratio, rss]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def map_data(path, fmt):
    """Sum of data extents in `qemu-img map --output=json`."""
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", "-f", fmt, path],
        check=True, capture_output=True, text=True,
    ).stdout
    return sum(e["length"] for e in json.loads(out) if e.get("data"))


def nonzero_data(path, tmpdir):
    """Bytes of non-zero 4 KiB runs the image holds, counted through a sparse raw copy."""
    raw = os.path.join(tmpdir, "copy.raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", "-S", "4k", path, raw], check=True)
    try:
        return map_data(raw, "raw")
    finally:
        os.unlink(raw)


def du(path, apparent):
    args = ["du", "-B1"] + (["--apparent-size"] if apparent else []) + [path]
    return int(subprocess.run(args, check=True, capture_output=True, text=True).stdout.split()[0])


def image_format(path):
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", path], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)["format"]


def main():
    a = parse_args()
    res = load_results(a.results)
    print(f"## bench-build: {human(a.size)} virtual disk, median of {a.runs} runs")
    print()
    print(f"- Input: `{a.tar}` ({human(os.path.getsize(a.tar))}).")
    print("- Warm cache: one warm-up run first, the page cache is never dropped; runs interleave the three parts.")
    print(f"- Host: {os.cpu_count()} CPUs; load average before / after: {a.loadavg}.")
    print("- Peak RSS: GNU `time -f %M` (max over runs; for the pipeline, the largest stage).")
    for c in a.command:
        print(f"- `{c}`")
    print()

    rows = []
    ib = None
    ib_state = a.imgbuild_state
    if ("imgbuild", "build") in res and ib_state == "ok":
        runs = res[("imgbuild", "build")]
        ib = Row("**imgbuild build** (qcow2 + VHDX)", [r[0] for r in runs], [r[1] for r in runs])
    ref = ib.median if ib else None

    if ("pipeline", "total") in res:
        tot = res[("pipeline", "total")]
        rows.append(Row("**shell pipeline** (raw → qcow2 + VHDX)", [r[0] for r in tot], [r[1] for r in tot]))
        for st, name in STAGE_NAMES.items():
            if ("pipeline", st) in res:
                s = res[("pipeline", st)]
                rows.append(Row(f"  · {name}", [r[0] for r in s], [r[1] for r in s]))
    if ("qemu", "qcow2") in res and ("qemu", "vhdx") in res:
        q, v = res[("qemu", "qcow2")], res[("qemu", "vhdx")]
        rows.append(Row("**qemu-img format step** (raw → qcow2 + VHDX)",
                        [x[0] + y[0] for x, y in zip(q, v)], [max(x[1], y[1]) for x, y in zip(q, v)]))
        rows.append(Row("  · qemu-img convert raw → qcow2", [r[0] for r in q], [r[1] for r in q]))
        rows.append(Row("  · qemu-img convert raw → vhdx", [r[0] for r in v], [r[1] for r in v]))

    body = [r.cells(ref) for r in rows]
    if ib:
        body.append(ib.cells(ref))
        timings = []
        for path in a.imgbuild_json:
            try:
                with open(path, encoding="utf-8") as f:
                    t = json.load(f).get("timings")
            except (OSError, ValueError, AttributeError):
                t = None
            if isinstance(t, dict):
                timings.append(t)
        if timings:
            for stage in timings[0]:
                vals = [float(t[stage]) for t in timings if isinstance(t.get(stage), (int, float))]
                if vals:
                    body.append(Row(f"  · {stage}", vals, None).cells(None))
        else:
            body.append(["  · stages: no `--json` timings from imgbuild", "—", "—", "—", "—"])
    elif ib_state is not None:
        body.append([f"**{ib_state}**", "—", "—", "—", "—"])
    print(table(["step", "median s", "min–max s", "÷ imgbuild", "peak RSS MiB"], body))
    print()
    if ib and len(rows) > 0:
        pipe = next((r for r in rows if r.name.startswith("**shell")), None)
        fmt = next((r for r in rows if r.name.startswith("**qemu-img")), None)
        if pipe:
            print(f"- pipeline / imgbuild: **{pipe.median / ib.median:.2f}×**")
        if fmt:
            print(f"- qemu-img format step alone / imgbuild (whole build): **{fmt.median / ib.median:.2f}×**")
    if ib:
        peak = max(ib.rss_kib) / 1024
        verdict = "meets" if peak < 256 else "FAILS"
        print(f"- imgbuild peak RSS {peak:.1f} MiB at {human(a.size)} virtual: {verdict} the < 256 MiB bound (issue 6).")
    print()

    outs = [o.split("=", 1) for o in a.output]
    outs = [(label, path) for label, path in outs if os.path.exists(path)]
    if not outs:
        return
    print("### Outputs against the data they hold")
    print()
    print("Data: non-zero 4 KiB runs (`qemu-img convert -O raw -S 4k`, then the `data` extents of "
          "`qemu-img map --output=json`). File: `du --apparent-size`; on disk: `du`. "
          "Overhead = file / data − 1.")
    print()
    body = []
    notes = []
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(a.results))) as tmp:
        for label, path in outs:
            fmt = image_format(path)
            data = nonzero_data(path, tmp)
            apparent, alloc = du(path, True), du(path, False)
            over = f"{(apparent / data - 1) * 100:+.1f} %" if data else "—"
            if fmt == "raw":
                over = "(sparse raw)"
                notes.append(f"- `qemu-img map --output=json` of the pipeline raw: {human(map_data(path, 'raw'))} "
                             "in data extents (allocated on the host, zero blocks included).")
            body.append([label, fmt, human(data), human(apparent), human(alloc), over])
    print(table(["output", "format", "data", "file", "on disk", "overhead"], body))
    print()
    for n in notes:
        print(n)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit(f"bench_report: {' '.join(e.cmd)} failed: {e.stderr or ''}")
