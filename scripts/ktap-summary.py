#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Counts test results in the logs `make check` collects and prints one line per suite.

    ktap-summary.py [--expect FILE] LOG...

Each LOG is either the guest's framed KTAP output (tests/guest-tests.sh: `# qvp-suite: NAME KIND`
... `# qvp-suite-end: NAME rc=N`) or a host result file written by scripts/check.sh, NAME.results,
with lines `ok DESC` / `not ok DESC` / `ok DESC # SKIP reason` and an optional plan `1..N`.

The count never reports fewer failures than there are:

  - the KTAP plan `1..N` is compared with the results: each planned result that never came counts
    as failed ("planned N, got M"), and so does one result too many;
  - `1..0 # SKIP reason`, or a kselftest that exits with KSFT_SKIP (4) before any result, counts
    as 1 skipped with its reason;
  - a KUnit suite (KIND kunit) counts its test cases (the first indentation level) against the
    suite's own plan; no test case at all, or a `not ok` suite whose cases all passed, fails;
  - a suite whose output ended before its end line, that exits non-zero without reporting a
    failure, or that reports nothing, fails;
  - with --expect FILE (tests/expected-suites), each name listed there that no LOG has counts as
    1 failed ("missing"). `{bdf}` in a name stands for each device the guest reported with
    `# qvp-devices: BDF...`.

The last line printed is the total: `N passed, N failed, N skipped`. Exit status 1 if anything
failed or if no test passed at all.
"""

import os
import re
import sys

RESULT = re.compile(
    r"^(?P<indent>\s*)(?P<not>not )?ok\b(?:\s+(?P<num>\d+))?\s*(?P<desc>[^#]*?)\s*"
    r"(?:#\s*(?P<directive>\S+)\s*(?P<reason>.*))?$"
)
PLAN = re.compile(r"^(?P<indent>\s*)1\.\.(?P<n>\d+)\s*(?:#\s*(?P<directive>\S+)\s*(?P<reason>.*))?$")
SUITE = re.compile(r"^# qvp-suite: (?P<name>\S+) (?P<kind>\S+)\s*$")
SUITE_END = re.compile(r"^# qvp-suite-end: (?P<name>\S+) rc=(?P<rc>-?\d+)\s*$")
DEVICES = re.compile(r"^# qvp-devices:(?P<bdfs>.*)$")
KSFT_SKIP = 4


class Result:
    def __init__(self, indent, passed, num, directive, desc, reason):
        self.indent, self.passed, self.num, self.desc, self.reason = indent, passed, num, desc, reason
        self.directive = directive.upper()
        if self.directive not in ("SKIP", "TODO", "XFAIL"):
            # Not a directive: a comment after the description, kept whole as the reason.
            self.reason = f"{directive} {reason}".strip()
            self.directive = ""

    @property
    def skipped(self):
        # A `not ok ... # TODO` is a known failure in TAP: not a pass, not a failure.
        return self.directive in ("SKIP", "TODO")

    def label(self):
        desc = self.desc or (f"result {self.num}" if self.num else "(no description)")
        return f"{desc}: {self.reason}" if self.reason else desc


class Suite:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.results = []  # Result, every indentation level
        self.plans = []  # (indent, n, directive, reason)
        self.text = []  # other output lines, for a skip's reason
        self.rc = None

    def add(self, line):
        m = PLAN.match(line)
        if m:
            self.plans.append((len(m["indent"].expandtabs()), int(m["n"]),
                               (m["directive"] or "").upper(), (m["reason"] or "").strip()))
            return
        m = RESULT.match(line)
        if m:
            self.results.append(Result(len(m["indent"].expandtabs()), m["not"] is None,
                                       m["num"], m["directive"] or "", m["desc"].strip(),
                                       (m["reason"] or "").strip()))
            return
        if line.strip() and not re.match(r"^\s*(KTAP|TAP) version", line):
            self.text.append(line.strip().lstrip("#").strip())

    def plan_at(self, indent):
        for p in self.plans:
            if p[0] == indent:
                return p
        return None

    def counts(self):
        """(passed, failed, skipped, [FAILED reasons], [SKIPPED reasons])"""
        c = Counter()
        if self.kind == "kunit":
            self._count_kunit(c)
        else:
            self._count_flat(c)
        # Structural problems fail the suite even where no result said `not ok`.
        problems = []
        if self.kind != "host":
            if self.rc is None:
                problems.append("output ended before the suite finished")
            elif self.rc not in (0, KSFT_SKIP):
                problems.append(f"exited with status {self.rc}")
        if problems:
            c.failures.extend(problems)
            if c.failed == 0:
                c.failed = 1
        return c.passed, c.failed, c.skipped, c.failures, c.skips

    def _count_rows(self, c, rows):
        for r in rows:
            if r.skipped:
                c.skipped += 1
                c.skips.append(r.label())
            elif r.passed:
                c.passed += 1
            else:
                c.failed += 1
                c.failures.append(r.label())

    def _check_plan(self, c, plan, got, what="results"):
        if plan is None:
            return
        n = plan[1]
        if got < n:
            c.failed += n - got
            c.failures.append(f"planned {n}, got {got} {what}")
        elif got > n:
            c.failed += 1
            c.failures.append(f"planned {n}, got {got} {what}")

    def _skip_reason(self):
        for p in self.plans:
            if p[0] == 0 and p[1] == 0 and p[3]:
                return p[3]
        if self.text:
            # What a test prints before it gives up: its first line says why.
            return self.text[0]
        return "no reason given"

    def _count_flat(self, c):
        rows = [r for r in self.results if r.indent == 0]
        plan = self.plan_at(0)
        if not rows:
            if plan is not None and plan[1] == 0 and plan[2] == "SKIP":
                c.skipped += 1
                c.skips.append(f"skipped: {self._skip_reason()}")
                return
            if self.rc == KSFT_SKIP:
                c.skipped += 1
                c.skips.append(f"exited with KSFT_SKIP before any result: {self._skip_reason()}")
                return
            if plan is None or plan[1] == 0:
                c.failed += 1
                c.failures.append("reported no results")
                return
        self._count_rows(c, rows)
        if plan is None:
            if self.kind != "host":
                c.failed += 1
                c.failures.append("no KTAP plan (1..N)")
            return
        self._check_plan(c, plan, len(rows))

    def _count_kunit(self, c):
        top = [r for r in self.results if r.indent == 0]
        nested = [r for r in self.results if r.indent > 0]
        # A suite skipped as a whole: `ok 1 NAME # SKIP reason` and no test case.
        if not nested and len(top) == 1 and top[0].skipped:
            c.skipped += 1
            c.skips.append(top[0].label())
            return
        if not nested:
            c.failed += 1
            c.failures.append("no KUnit test cases")
        else:
            level = min(r.indent for r in nested)
            cases = [r for r in nested if r.indent == level]
            self._count_rows(c, cases)
            plan = self.plan_at(level)
            if plan is None:
                c.failed += 1
                c.failures.append("no KUnit subtest plan (1..N)")
            else:
                self._check_plan(c, plan, len(cases), "test cases")
        if not top:
            c.failed += 1
            c.failures.append("no suite result line")
            return
        if any(not r.passed and not r.skipped for r in top) and c.failed == 0:
            c.failed += 1
            c.failures.append(f"suite reported not ok: {top[0].label()}")
        self._check_plan(c, self.plan_at(0), len(top), "suite results")


class Counter:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures, self.skips = [], []


def parse(path, devices):
    suites = []
    current = None
    host = None
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = SUITE.match(line)
            if m:
                current = Suite(m["name"], m["kind"])
                suites.append(current)
                continue
            m = SUITE_END.match(line)
            if m and current is not None:
                current.rc = int(m["rc"])
                current = None
                continue
            m = DEVICES.match(line)
            if m:
                devices.extend(m["bdfs"].split())
                continue
            if current is not None:
                current.add(line)
            elif RESULT.match(line) or PLAN.match(line):
                # Host result files: one implicit suite per file, named after it.
                if host is None:
                    name = os.path.basename(path).removesuffix(".results")
                    host = Suite(name, "host")
                    host.rc = 0
                    suites.append(host)
                host.add(line)
    return suites


def read_expected(path):
    names = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                names.append(line)
    return names


def expand(names, devices):
    out = []
    for n in names:
        if "{bdf}" in n and devices:
            out.extend(n.replace("{bdf}", d) for d in devices)
        else:
            out.append(n)
    return out


def main(argv):
    expect = None
    args = argv[1:]
    if len(args) >= 2 and args[0] == "--expect":
        expect, args = args[1], args[2:]
    elif args and args[0].startswith("--expect="):
        expect, args = args[0].split("=", 1)[1], args[1:]

    devices = []
    suites = []
    for path in args:
        try:
            suites.extend(parse(path, devices))
        except OSError as e:
            s = Suite(os.path.basename(path), "host")
            s.rc = 1
            s.text.append(f"cannot read {path}: {e.strerror}")
            suites.append(s)
    expected = expand(read_expected(expect), devices) if expect else []
    seen = {s.name for s in suites}

    total = [0, 0, 0]
    for s in suites:
        p, f, k, failures, skips = s.counts()
        total[0] += p
        total[1] += f
        total[2] += k
        mark = "" if not expected or s.name in expected else " (not in the expected list)"
        print(f"  {s.name}: {p} passed, {f} failed, {k} skipped{mark}")
        for desc in failures:
            print(f"    FAILED: {desc}")
        for desc in skips:
            print(f"    SKIPPED: {desc}")
    for name in expected:
        if name not in seen:
            total[1] += 1
            print(f"  {name}: 0 passed, 1 failed, 0 skipped")
            print("    FAILED: missing: the suite never reported")
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] or total[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
