#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Host tests of the counter, scripts/ktap-summary.py: crafted logs, one per way a count can lie;
and of the kernel-log and kmemleak checks of tests/guest-tests.sh, with a stand-in dmesg.

    test_ktap_summary.py        prints KTAP (scripts/check.sh keeps it as counter.results)

KTAP_SUMMARY=PATH runs the same tests against another counter (e.g. an older one from git).
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
COUNTER = os.environ.get("KTAP_SUMMARY", os.path.join(HERE, "ktap-summary.py"))
LINE = re.compile(r"^  (?P<name>\S+): (?P<p>\d+) passed, (?P<f>\d+) failed, (?P<k>\d+) skipped")
TOTAL = re.compile(r"^(?P<p>\d+) passed, (?P<f>\d+) failed, (?P<k>\d+) skipped$")


class Summary:
    def __init__(self, rc, out):
        self.rc, self.out = rc, out
        self.suites, self.total = {}, None
        for line in out.splitlines():
            m = LINE.match(line)
            if m:
                self.suites[m["name"]] = (int(m["p"]), int(m["f"]), int(m["k"]))
            m = TOTAL.match(line)
            if m:
                self.total = (int(m["p"]), int(m["f"]), int(m["k"]))


def run(files, expect=None):
    """files: {basename: text}; expect: the expected-suites text or None."""
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name, text in files.items():
            p = os.path.join(d, name)
            with open(p, "w") as f:
                f.write(textwrap.dedent(text).lstrip("\n"))
            paths.append(p)
        args = [sys.executable, COUNTER]
        if expect is not None:
            e = os.path.join(d, "expected-suites")
            with open(e, "w") as f:
                f.write(textwrap.dedent(expect))
            args += ["--expect", e]
        r = subprocess.run(args + paths, capture_output=True, text=True)
        return Summary(r.returncode, r.stdout + r.stderr)


def check(cond, what, s):
    if not cond:
        raise AssertionError(f"{what}\n--- counter output ---\n{s.out}")


def expect_suite(s, name, passed, failed, skipped, reason=None):
    check(name in s.suites, f"suite {name} not in the summary", s)
    check(s.suites[name] == (passed, failed, skipped),
          f"{name}: want {passed} passed, {failed} failed, {skipped} skipped, got {s.suites[name]}", s)
    if reason is not None:
        check(reason in s.out, f"reason {reason!r} not printed", s)
    if failed:
        check(s.rc == 1, f"exit status {s.rc} with a failure", s)


def kunit_log(suite, plan, cases, result="ok", directive=""):
    """The guest.log block of KUnit suite qemu_vfio_pci_SUITE: its debugfs results file between
    the suite markers. plan: the suite's own plan line, or None for no subtest block; cases: the
    case lines as KUnit indents them below the suite; result: "ok", "not ok", or None for no
    suite result line (the file ended early); directive: e.g. " # SKIP reason"."""
    name = f"qemu_vfio_pci_{suite}"
    lines = [f"# qvp-suite: kunit:{name} kunit", "KTAP version 1", "1..1"]
    if plan is not None:
        lines += ["    KTAP version 1", f"    # Subtest: {name}", f"    {plan}"]
        lines += ["    " + c for c in cases]
    if result is not None:
        lines.append(f"{result} 1 {name}{directive}")
    lines.append(f"# qvp-suite-end: kunit:{name} rc=0")
    return "\n".join(lines) + "\n"


GOOD_KSFT = textwrap.dedent("""
    # qvp-suite: kselftest:good ktap
    TAP version 13
    1..2
    # Starting 2 tests from 1 test cases.
    ok 1 a.one
    ok 2 a.two
    # PASSED: 2 / 2 tests passed.
    # qvp-suite-end: kselftest:good rc=0
""")

GOOD_KUNIT = kunit_log("stream", "1..2", ["ok 1 roundtrip", "ok 2 crc"])


def test_good_logs_pass():
    s = run({"guest.log": GOOD_KSFT + GOOD_KUNIT})
    expect_suite(s, "kselftest:good", 2, 0, 0)
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 2, 0, 0)
    check(s.total == (4, 0, 0) and s.rc == 0, "good logs: 4 passed, exit 0", s)


def test_short_plan_fails():
    s = run({"guest.log": """
        # qvp-suite: kselftest:short ktap
        TAP version 13
        1..5
        ok 1 a.one
        ok 2 a.two
        # qvp-suite-end: kselftest:short rc=0
    """})
    expect_suite(s, "kselftest:short", 2, 3, 0, "planned 5, got 2")


def test_too_many_results_fail():
    s = run({"guest.log": """
        # qvp-suite: kselftest:long ktap
        1..1
        ok 1 a.one
        ok 2 a.two
        # qvp-suite-end: kselftest:long rc=0
    """})
    expect_suite(s, "kselftest:long", 2, 1, 0, "planned 1, got 2")


def test_plan_skip_counts_skipped():
    s = run({"guest.log": """
        # qvp-suite: kselftest:vfio_migration_test ktap
        1..0 # SKIP needs two devices, 1 bound
        # qvp-suite-end: kselftest:vfio_migration_test rc=4
    """})
    expect_suite(s, "kselftest:vfio_migration_test", 0, 0, 1, "needs two devices, 1 bound")


def test_ksft_skip_exit_before_plan_counts_skipped():
    s = run({"guest.log": """
        # qvp-suite: kselftest:nodev ktap
        Migration needs two devices, skipping.
        Usage: vfio_migration_test [harness options] SRC_BDF DST_BDF
        # qvp-suite-end: kselftest:nodev rc=4
    """})
    expect_suite(s, "kselftest:nodev", 0, 0, 1, "Migration needs two devices, skipping.")


def test_skip_reason_of_a_result_is_printed():
    s = run({"guest.log": """
        # qvp-suite: kselftest:s ktap
        1..2
        ok 1 a.one
        ok 2 a.two # SKIP no userfaultfd here
        # qvp-suite-end: kselftest:s rc=0
    """})
    expect_suite(s, "kselftest:s", 1, 0, 1, "no userfaultfd here")


def test_kunit_zero_cases_fails():
    s = run({"guest.log": kunit_log("stream", "1..0", [])})
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 0, 1, 0, "no KUnit test cases")


def test_kunit_short_subtest_plan_fails():
    s = run({"guest.log": kunit_log("stream", "1..4", ["ok 1 roundtrip", "ok 2 crc"])})
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 2, 2, 0, "planned 4, got 2 test cases")


def test_kunit_cases_not_params_are_counted():
    params = ["    KTAP version 1", "    # Subtest: sizes", "    ok 1 4K", "    not ok 2 16M"]
    s = run({"guest.log": kunit_log("stream", "1..2", params + ["not ok 1 sizes", "ok 2 crc"],
                                    result="not ok")})
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 1, 1, 0, "sizes")


def test_kunit_not_ok_suite_with_passing_cases_fails():
    # e.g. suite_init failed after the cases were logged, or a case's result line was lost.
    s = run({"guest.log": kunit_log("migration", "1..1", ["ok 1 close_mid_record"], result="not ok")})
    expect_suite(s, "kunit:qemu_vfio_pci_migration", 1, 1, 0, "suite reported not ok")


def test_kunit_skipped_suite_counts_skipped():
    s = run({"guest.log": kunit_log("migration", None, [], directive=" # SKIP no device")})
    expect_suite(s, "kunit:qemu_vfio_pci_migration", 0, 0, 1, "no device")


def test_kunit_output_ended_early_fails():
    # The results file stops inside the suite: cases so far passed, no suite result line.
    s = run({"guest.log": kunit_log("stream", "1..3", ["ok 1 roundtrip"], result=None)})
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 1, 3, 0, "no suite result line")


def test_ktap_output_ended_early_counts_the_rest():
    # The guest died inside a suite: no end line, and two of three results never came.
    s = run({"guest.log": """
        # qvp-suite: kselftest:cut ktap
        TAP version 13
        1..3
        ok 1 a.one
        #  RUN           a.two ...
    """})
    expect_suite(s, "kselftest:cut", 1, 2, 0, "output ended before the suite finished")


def test_no_plan_fails():
    s = run({"guest.log": """
        # qvp-suite: lifecycle ktap
        ok 1 rmmod
        # qvp-suite-end: lifecycle rc=0
    """})
    expect_suite(s, "lifecycle", 1, 1, 0, "no KTAP plan")


def test_expected_suite_missing_fails():
    s = run({"guest.log": GOOD_KUNIT, "build.results": "ok module builds\n"},
            expect="build\nlint\nkunit:qemu_vfio_pci_stream\nkunit:qemu_vfio_pci_migration\n")
    expect_suite(s, "build", 1, 0, 0)
    expect_suite(s, "kunit:qemu_vfio_pci_stream", 2, 0, 0)
    expect_suite(s, "lint", 0, 1, 0, "missing")
    expect_suite(s, "kunit:qemu_vfio_pci_migration", 0, 1, 0)
    check(s.total == (3, 2, 0), "total: 3 passed, 2 failed", s)


def test_expected_per_device_names():
    log = """
        # qvp-devices: 0000:01:00.0 0000:02:00.0
        # qvp-suite: kselftest:vfio_bochs_test:0000:01:00.0 ktap
        1..1
        ok 1 bochs.info
        # qvp-suite-end: kselftest:vfio_bochs_test:0000:01:00.0 rc=0
    """
    s = run({"guest.log": log}, expect="kselftest:vfio_bochs_test:{bdf}  # per device\n")
    expect_suite(s, "kselftest:vfio_bochs_test:0000:01:00.0", 1, 0, 0)
    expect_suite(s, "kselftest:vfio_bochs_test:0000:02:00.0", 0, 1, 0, "missing")


def test_expected_per_device_without_a_guest_fails():
    # The guest never ran: no device list, so the per-device name itself is missing.
    s = run({"build.results": "ok module builds\n"}, expect="build\nkselftest:vfio_bochs_test:{bdf}\n")
    expect_suite(s, "kselftest:vfio_bochs_test:{bdf}", 0, 1, 0, "missing")


def test_every_expected_suite_is_listed():
    names = ["build", "lint", "host", "kernel-log", "kmemleak"]
    s = run({"build.results": "ok module builds\n"}, expect="\n".join(names) + "\n")
    for n in names:
        check(n in s.suites, f"{n} not listed", s)


def test_host_file_short_plan_fails():
    s = run({"counter.results": "1..3\nok 1 a\nok 2 b\n"})
    expect_suite(s, "counter", 2, 1, 0, "planned 3, got 2")


def test_exit_status_without_failure_fails():
    s = run({"guest.log": """
        # qvp-suite: kselftest:crash ktap
        1..1
        ok 1 a.one
        # qvp-suite-end: kselftest:crash rc=139
    """})
    expect_suite(s, "kselftest:crash", 1, 1, 0, "exited with status 139")


def test_failure_comment_is_not_a_directive():
    s = run({"guest.log": """
        # qvp-suite: kmemleak ktap
        1..1
        not ok 1 no kmemleak reports # kmemleak is not available: no such file
        # qvp-suite-end: kmemleak rc=1
    """})
    expect_suite(s, "kmemleak", 0, 1, 0, "kmemleak is not available: no such file")


# The guest-side checks of tests/guest-tests.sh, sourced on the host with a stand-in dmesg.
GUEST_TESTS = os.path.join(HERE, "..", "tests", "guest-tests.sh")
CLEAN_DMESG = """\
[    0.000000] Linux version 7.3.4 (root@host) #1 SMP PREEMPT_DYNAMIC
[    0.512000] kmemleak: Kernel memory leak detector initialized (mem pool available: 15981)
[    3.100000]     KTAP version 1
[    3.100001]     # Subtest: qemu_vfio_pci_stream
[    3.100002]     1..2
[    3.200000]     ok 1 roundtrip
[    3.300000]     ok 2 crc
[    3.300001] ok 1 qemu_vfio_pci_stream
[    3.400000] qemu-vfio-pci 0000:01:00.0: ok 1 is not a KTAP line here
"""


def kernel_log(dmesg):
    with tempfile.NamedTemporaryFile("w", suffix=".dmesg") as f:
        f.write(dmesg)
        f.flush()
        script = f'source "{GUEST_TESTS}"; dmesg() {{ cat "{f.name}"; }}; kernel_log'
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def test_kernel_log_clean_passes():
    rc, out = kernel_log(CLEAN_DMESG)
    if rc != 0 or "\nok 1 " not in out:
        raise AssertionError(f"a clean log failed (rc {rc}):\n{out}")


def test_kernel_log_reports_fail():
    bad = [
        "[    5.000000]     not ok 2 close_mid_record",
        "[    5.000000] not ok 1 qemu_vfio_pci_migration",
        "[   62.000000] INFO: task vfio_migration_:123 blocked for more than 30 seconds.",
        "[   40.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 22s! [kworker/1:1:45]",
        "[    7.000000] CFI failure at vfio_ioctl_device_feature+0x1a/0x40 (target: x; expected type: 0x1)",
        "[    8.000000] kmemleak: 3 new suspected memory leaks (see /sys/kernel/debug/kmemleak)",
        "[    8.000000] kmemleak: Cannot allocate a kmemleak_object structure",
        "[    8.000000] kmemleak: Kernel memory leak detector disabled",
        "[    9.000000] list_add corruption. next->prev should be prev (ffff8880), but was 0000.",
        "[    9.000000] list_del corruption, ffff888004 ->next is LIST_POISON1 (dead000000000100)",
        "[    9.500000] BUG: KASAN: slab-use-after-free in qemu_vfio_pci_write+0x10/0x20",
        "[    9.600000] UBSAN: shift-out-of-bounds in src/helpers.c:10:5",
        "[    9.700000] WARNING: CPU: 0 PID: 1 at drivers/vfio/vfio_main.c:100 foo+0x1/0x2",
        "[    9.800000] WARNING: possible circular locking dependency detected",
    ]
    missed = []
    for line in bad:
        rc, out = kernel_log(CLEAN_DMESG + line + "\n")
        if rc == 0 or "\nnot ok 1 " not in out:
            missed.append(line)
    if missed:
        raise AssertionError("kernel_log passed a log with:\n" + "\n".join(missed))


def test_kmemleak_unavailable_fails():
    script = (f'source "{GUEST_TESTS}"; kmemleak_file=/nonexistent/kmemleak; '
              "kmemleak_clear; kmemleak")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    if r.returncode == 0 or "not ok 1 " not in r.stdout or "not available" not in r.stdout:
        raise AssertionError(f"kmemleak without kmemleak (rc {r.returncode}):\n{r.stdout}{r.stderr}")


KMEMLEAK_REPORT = """\
unreferenced object 0xffff888004a1b{i:03x} (size 128):
  comm "insmod", pid 812, jiffies 4294953500
  hex dump (first 32 bytes):
    5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a  ZZZZZZZZZZZZZZZZ
  backtrace (crc 6b1e5c2f):
    __kmalloc_cache_noprof+0x3c0/0x4d0
    {fn}+0x1a/0x60 [{mod}]
    do_one_initcall+0x90/0x300
"""


def kmemleak_reports_of(name, out):
    script = f'source "{GUEST_TESTS}"; kmemleak_reports_of "$1"'
    r = subprocess.run(["bash", "-c", script, "x", name], input=out, capture_output=True, text=True)
    return r.stdout.strip()


def test_kmemleak_selfcheck_counts_only_its_own_reports():
    ours = [KMEMLEAK_REPORT.format(i=i, fn="qvp_leak_one", mod="qvp_leak") for i in range(3)]
    other = KMEMLEAK_REPORT.format(i=9, fn="some_driver_probe", mod="other")
    for out, want in [("".join(ours), "3"), (other + ours[0] + other + ours[1], "2"),
                      (other, "0"), ("", "0")]:
        got = kmemleak_reports_of("qvp_leak", out)
        if got != want:
            raise AssertionError(f"kmemleak_reports_of counted {got!r}, want {want}:\n{out}")


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    print("TAP version 13")
    print(f"1..{len(tests)}")
    failed = 0
    for i, (name, f) in enumerate(tests, 1):
        try:
            f()
            print(f"ok {i} {name}")
        except Exception:
            failed += 1
            print(f"not ok {i} {name}")
            for line in traceback.format_exc().splitlines():
                print(f"# {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
