#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Counts test results in the logs `make check` collects and prints one line per suite.

    ktap-summary.py FILE...

Each FILE is either the guest's framed KTAP output (tests/guest-tests.sh) or a host result file
written by scripts/check.sh with lines `ok NAME` / `not ok NAME` / `ok NAME # SKIP reason`.
The last line printed is the total: `N passed, N failed, N skipped`. Exit status 1 if anything
failed or if no test ran at all.
"""

import re
import sys

RESULT = re.compile(r"^(?P<indent>\s*)(?P<not>not )?ok\b(?:\s+\d+)?\s*(?P<desc>[^#]*)(?:#\s*(?P<directive>\S+)(?P<reason>.*))?$")
SUITE = re.compile(r"^# qvp-suite: (?P<name>\S+) (?P<kind>\S+)$")
SUITE_END = re.compile(r"^# qvp-suite-end: (?P<name>\S+) rc=(?P<rc>\d+)$")


class Suite:
    def __init__(self, name, kind):
        self.name, self.kind = name, kind
        self.results = []  # (indent, passed, skipped, description)
        self.rc = None

    def counts(self):
        if self.kind == "kunit":
            # Test cases are the indented results; the unindented one is the suite's own.
            rows = [r for r in self.results if r[0] > 0] or self.results
        else:
            rows = [r for r in self.results if r[0] == 0]
        passed = sum(1 for r in rows if r[1] and not r[2])
        failed = sum(1 for r in rows if not r[1] and not r[2])
        skipped = sum(1 for r in rows if r[2])
        failures = [r[3] for r in rows if not r[1] and not r[2]]
        # A suite that exits non-zero without reporting a failure (a crash, a missing binary) fails.
        if self.rc not in (None, 0, 4) and failed == 0:
            failed += 1
            failures.append(f"exited with status {self.rc}")
        if self.rc is None and self.kind != "host":
            failed += 1
            failures.append("output ended before the suite finished")
        if not rows and self.rc == 0:
            failed += 1
            failures.append("reported no results")
        return passed, failed, skipped, failures


def parse(path):
    suites = []
    current = None
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
            m = RESULT.match(line)
            if not m:
                continue
            if current is None:
                # Host result files: one implicit suite per file.
                if not suites or suites[-1].kind != "host":
                    suites.append(Suite(path.rsplit("/", 1)[-1].removesuffix(".results"), "host"))
                current_host = suites[-1]
                target = current_host
            else:
                target = current
            directive = (m["directive"] or "").upper()
            skipped = directive == "SKIP"
            target.results.append((len(m["indent"]), m["not"] is None, skipped, m["desc"].strip()))
    for s in suites:
        if s.kind == "host":
            s.rc = 0
    return suites


def main():
    total = [0, 0, 0]
    for path in sys.argv[1:]:
        for s in parse(path):
            p, f, k, failures = s.counts()
            total[0] += p
            total[1] += f
            total[2] += k
            print(f"  {s.name}: {p} passed, {f} failed, {k} skipped")
            for desc in failures:
                print(f"    FAILED: {desc}")
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] or total[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
