#!/usr/bin/env python3
"""The summary scripts/test.sh prints after `cargo test --no-fail-fast`.

    test_summary.py REPORT_DIR CARGO_RC WALL_SECONDS CI

Reads REPORT_DIR/cargo-test.log (cargo's output), skips.txt (one line per
skipped test, written by the tests' `skip` helper: "binary::test<TAB>reason")
and boots.txt (one line per QEMU boot, written by tests/support/qemu.rs:
"image<TAB>firmware<TAB>seconds<TAB>result"). libtest counts a skipped test as
passed; here it is counted as skipped. Exit status: 0 only when cargo passed,
no test failed and, with CI=true, nothing was skipped.

The integration tests are one binary per crate (tests/it, formats/tests/it),
a module per area, so a binary's time says little: the summary also counts
the tests of each module and lists the tests that ran longer than a minute
(libtest's own "has been running for over 60 seconds"; it times nothing
finer on stable Rust).
"""
import re
import sys
from pathlib import Path

RUNNING = re.compile(r"^\s*Running (?:unittests )?(\S+) \((\S+)\)")
DOCTESTS = re.compile(r"^\s*Doc-tests (\S+)")
RESULT = re.compile(
    r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; "
    r"\d+ measured; \d+ filtered out; finished in ([\d.]+)s"
)
FAILED_TEST = re.compile(r"^test (\S+) \.\.\. FAILED")
# A test's outcome line; a test that printed while running has its name and
# outcome on different lines, so only the name is taken from this one.
TEST_LINE = re.compile(r"^test (\S+) \.\.\. ")
LONG_TEST = re.compile(r"^test (\S+) has been running for over 60 seconds")


def binary_name(path):
    """tests/it/main.rs -> it; formats/tests/it/main.rs -> formats_it;
    src/lib.rs in formats -> imgbuild_formats (lib)."""
    stem = Path(path).name.rsplit("-", 1)[0]
    return stem


def module_of(binary, test):
    """it + e2e::boots -> it::e2e: the binary, then the test's path without
    its last part (a test at a binary's top level: the binary)."""
    return "::".join([binary] + test.split("::")[:-1])


def parse(log):
    binaries = []  # [name, passed, failed, ignored, seconds, ok]
    failed = []
    modules = {}  # module -> tests that ran (any outcome)
    long_tests = []  # binary::test, over 60 s
    current = None
    for line in log.splitlines():
        m = RUNNING.match(line)
        if m:
            current = binary_name(m.group(2))
            continue
        m = DOCTESTS.match(line)
        if m:
            current = f"doc-tests {m.group(1)}"
            continue
        m = LONG_TEST.match(line)
        if m:
            long_tests.append(f"{current}::{m.group(1)}")
            continue
        m = TEST_LINE.match(line)
        if m and current and not current.startswith("doc-tests"):
            module = module_of(current, m.group(1))
            modules[module] = modules.get(module, 0) + 1
        m = FAILED_TEST.match(line)
        if m:
            failed.append(f"{current}::{m.group(1)}")
            continue
        m = RESULT.match(line)
        if m and current:
            ok, p, f, i, secs = m.groups()
            binaries.append([current, int(p), int(f), int(i), float(secs), ok == "ok"])
            current = None
    return binaries, failed, modules, long_tests


def main():
    report, cargo_rc, wall, ci = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    log = (report / "cargo-test.log").read_text(errors="replace")
    binaries, failed, modules, long_tests = parse(log)
    skips = {}
    if (report / "skips.txt").exists():
        for line in (report / "skips.txt").read_text().splitlines():
            test, _, reason = line.partition("\t")
            skips.setdefault(test, reason)
    boots = []
    if (report / "boots.txt").exists():
        boots = [l.split("\t") for l in (report / "boots.txt").read_text().splitlines() if l]

    passed = sum(b[1] for b in binaries)
    nfailed = sum(b[2] for b in binaries)
    ignored = sum(b[3] for b in binaries)
    run = passed + nfailed
    print("\n== test.sh: summary ==")
    print(f"test binaries: {len(binaries)}")
    print(
        f"tests: {run} run, {passed - len(skips)} passed, {nfailed} failed, "
        f"{len(skips)} skipped, {ignored} ignored (benchmarks, run by hand)"
    )
    if skips:
        print("skipped:")
        for test, reason in sorted(skips.items()):
            print(f"  {test}: {reason}")
    if failed:
        print("failed:")
        for t in failed:
            print(f"  {t}")
    slow = sorted(binaries, key=lambda b: -b[4])[:6]
    print("slowest test binaries: " + ", ".join(f"{b[0]} {b[4]:.0f} s" for b in slow))
    integration = sorted(
        ((m, n) for m, n in modules.items() if m.split("::")[0] in ("it", "formats_it")),
        key=lambda mn: (-mn[1], mn[0]),
    )
    if integration:
        print(
            f"integration test modules: {len(integration)}; tests in each: "
            + ", ".join(f"{m} {n}" for m, n in integration)
        )
    if long_tests:
        print(f"tests running longer than 60 s: {len(long_tests)}")
        for t in long_tests:
            print(f"  {t}")
    if boots:
        total = sum(float(b[2]) for b in boots)
        print(f"QEMU boots: {len(boots)}, {total:.0f} s in all (TCG; up to two at once)")
        for image, firmware, secs, result in sorted(boots, key=lambda b: -float(b[2])):
            print(f"  {float(secs):6.1f} s  {firmware:<12} {image}  {result}")
    print(f"wall time: {wall // 60} min {wall % 60} s")

    problems = []
    if cargo_rc != 0 and not failed:
        problems.append(f"cargo test exited {cargo_rc} (a build error, or a test binary that crashed)")
    if failed or nfailed:
        problems.append(f"{max(nfailed, len(failed))} tests failed")
    if ci == "true" and skips:
        problems.append("tests were skipped with CI=true")
    if problems:
        print("RESULT: FAIL (" + "; ".join(problems) + ")")
        return 1
    print("RESULT: PASS" + (f" with {len(skips)} skipped (see above)" if skips else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
