#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs every in-guest test suite; started by `make check` through tests/vm/run, which has loaded
# qemu-vfio-pci and bound the devices (QVP_BDFS). Each suite's KTAP output is framed by
#
#   # qvp-suite: NAME KIND
#   ...KTAP...
#   # qvp-suite-end: NAME rc=N
#
# and scripts/check.sh folds them into one summary. KIND says how to count: "ktap" counts the
# top-level results, "kunit" the test cases of a KUnit suite.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
read -r -a bdfs <<<"${QVP_BDFS:-}"

suite() {
	local name=$1 kind=$2
	shift 2
	echo "# qvp-suite: $name $kind"
	"$@" 2>&1
	echo "# qvp-suite-end: $name rc=$?"
}

# The module's own lifecycle: unload with devices bound (remove path), reload, rebind.
lifecycle() {
	local n=0 rc=0 bdf
	echo "TAP version 13"
	echo "1..3"
	n=$((n + 1))
	if rmmod qemu_vfio_pci; then
		echo "ok $n rmmod with ${#bdfs[@]} devices bound"
	else
		echo "not ok $n rmmod with ${#bdfs[@]} devices bound"
		rc=1
	fi
	n=$((n + 1))
	if modprobe -d /tmp/qvp-modules qemu-vfio-pci; then
		echo "ok $n modprobe again"
	else
		echo "not ok $n modprobe again"
		rc=1
	fi
	n=$((n + 1))
	local ok=1
	for bdf in "${bdfs[@]}"; do
		echo "$bdf" >/sys/bus/pci/drivers_probe
		[ "$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")" = qemu-vfio-pci ] || ok=0
	done
	if [ "$ok" = 1 ] && [ "${#bdfs[@]}" -gt 0 ]; then
		echo "ok $n rebind ${bdfs[*]} through driver_override"
	else
		echo "not ok $n rebind ${bdfs[*]} through driver_override"
		rc=1
	fi
	return $rc
}

# KUnit suites of the module run when it loads; their results stay in debugfs.
kunit_suites() {
	local d found=0
	for d in /sys/kernel/debug/kunit/qemu_vfio_pci*; do
		[ -e "$d/results" ] || continue
		found=1
		suite "kunit:${d##*/}" kunit cat "$d/results"
	done
	[ "$found" = 1 ] || echo "# no KUnit suites registered by qemu-vfio-pci"
}

# Nothing in the kernel log may show a warning, a lockdep report or an oops.
kernel_log() {
	local bad
	echo "TAP version 13"
	echo "1..1"
	bad=$(dmesg | grep -E 'WARNING:|BUG:|Oops|general protection|possible circular locking|possible recursive locking|UBSAN|KASAN|Call Trace' || true)
	if [ -z "$bad" ]; then
		echo "ok 1 kernel log has no warnings, lockdep reports or oopses"
	else
		echo "not ok 1 kernel log has no warnings, lockdep reports or oopses"
		dmesg | sed 's/^/# /' | tail -n 80
		return 1
	fi
}

if [ "${#bdfs[@]}" = 0 ]; then
	echo "no devices are bound to qemu-vfio-pci" >&2
	exit 1
fi

kunit_suites
for bdf in "${bdfs[@]}"; do
	suite "kselftest:vfio_bochs_test:$bdf" ktap "$repo/tests/selftests/vfio_bochs_test" "$bdf"
done
if [ "${#bdfs[@]}" -ge 2 ]; then
	suite "kselftest:vfio_migration_test:${bdfs[0]}->${bdfs[1]}" ktap \
		"$repo/tests/selftests/vfio_migration_test" "${bdfs[0]}" "${bdfs[1]}"
else
	echo "# qvp-suite: kselftest:vfio_migration_test ktap"
	echo "1..1"
	echo "ok 1 vfio_migration_test # SKIP needs two devices, ${#bdfs[@]} bound"
	echo "# qvp-suite-end: kselftest:vfio_migration_test rc=4"
fi
# Stress and hardening (userfaultfd, memcg, fault injection, concurrency): every device; its
# concurrency tests need four (tests/vm/run --devices 4) and report SKIP with fewer.
suite "kselftest:vfio_stress_test" ktap "$repo/tests/selftests/vfio_stress_test" "${bdfs[@]:0:4}"
suite lifecycle ktap lifecycle
for bdf in "${bdfs[@]}"; do
	suite "kselftest:vfio_bochs_test:$bdf:after-reload" ktap "$repo/tests/selftests/vfio_bochs_test" "$bdf"
done
suite kernel-log ktap kernel_log
exit 0
