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
# and scripts/check.sh folds them into one summary (scripts/ktap-summary.py). KIND says how to
# count: "ktap" counts the top-level results against the plan, "kunit" the test cases of a KUnit
# suite against the suite's plan. A new suite is one `suite NAME KIND CMD...` line below, and its
# NAME in tests/expected-suites: a suite listed there that never reports counts as failed.
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

# KUnit suites of the module run when it loads; their results stay in debugfs until it unloads.
# kunit_suites [SUFFIX]: one suite per KUnit suite of qemu-vfio-pci, named kunit:SUITE[SUFFIX].
kunit_suites() {
	local suffix=${1:-} d found=0
	for d in /sys/kernel/debug/kunit/qemu_vfio_pci*; do
		[ -e "$d/results" ] || continue
		found=1
		suite "kunit:${d##*/}$suffix" kunit cat "$d/results"
	done
	[ "$found" = 1 ] || suite "kunit:qemu_vfio_pci$suffix" kunit no_kunit_suites
}

no_kunit_suites() {
	echo "# no KUnit suite of qemu-vfio-pci in /sys/kernel/debug/kunit" \
		"($(ls /sys/kernel/debug/kunit 2>&1 | tr '\n' ' '))"
	return 1
}

# With fewer than two devices the migration test has nothing to migrate between: a skip with
# its reason, counted as such.
migration_test() {
	if [ "${#bdfs[@]}" -lt 2 ]; then
		echo "1..0 # SKIP needs two devices, ${#bdfs[@]} bound"
		return 4
	fi
	echo "# devices: ${bdfs[0]} -> ${bdfs[1]}"
	"$repo/tests/selftests/vfio_migration_test" "${bdfs[0]}" "${bdfs[1]}"
}

# PRE_COPY with exact dirty tracking, between the first two devices; the others are offered to
# its other_vram_size_rejected case (a device with another VRAM size, else a skip).
precopy_test() {
	if [ "${#bdfs[@]}" -lt 2 ]; then
		echo "1..0 # SKIP needs two devices, ${#bdfs[@]} bound"
		return 4
	fi
	echo "# devices: ${bdfs[0]} -> ${bdfs[1]}"
	"$repo/tests/selftests/vfio_precopy_test" "${bdfs[@]}"
}

# QEMU itself migrating the first device into the second (tests/qemu/qemu_migration_test.py):
# L2 QEMUs with no guest OS, the test writing the device through qtest during PRE_COPY; then
# the failure paths (the last device, with another VRAM size, as a wrong destination) and two
# devices in one VM (the third and fourth with the first two).
qemu_migration() {
	if [ "${#bdfs[@]}" -lt 2 ]; then
		echo "1..0 # SKIP needs two devices, ${#bdfs[@]} bound"
		return 4
	fi
	python3 "$repo/tests/qemu/qemu_migration_test.py" "${bdfs[@]}"
}

# reload_module [PARAM=VALUE...]: unloads qemu-vfio-pci (which unbinds the devices), loads it with
# the parameters given and binds every device again through driver_override; says what failed.
reload_module() {
	local bdf err
	err=$(rmmod qemu_vfio_pci 2>&1) || { echo "rmmod: $err"; return 1; }
	err=$(modprobe -d /tmp/qvp-modules qemu-vfio-pci "$@" 2>&1) || { echo "modprobe $*: $err"; return 1; }
	for bdf in "${bdfs[@]}"; do
		echo "$bdf" >/sys/bus/pci/drivers_probe
		[ "$(basename "$(readlink "/sys/bus/pci/devices/$bdf/driver")")" = qemu-vfio-pci ] ||
			{ echo "$bdf not bound again"; return 1; }
	done
}

# QEMU's migration of the first device into the second once more, with the driver loaded with
# pre_copy=0 (STOP_COPY only; QEMU is told a switchover bandwidth, see the test): the same
# workload as qemu:migration, whose figures it prints beside its own. The default driver is
# loaded again afterwards.
qemu_stop_copy_only() {
	local err rc
	if [ "${#bdfs[@]}" -lt 2 ]; then
		echo "1..0 # SKIP needs two devices, ${#bdfs[@]} bound"
		return 4
	fi
	if ! err=$(reload_module pre_copy=0); then
		printf 'TAP version 13\n1..1\nnot ok 1 reload with pre_copy=0 # %s\n' "$err"
		return 1
	fi
	python3 "$repo/tests/qemu/qemu_migration_test.py" --stop-copy-only "${bdfs[0]}" "${bdfs[1]}"
	rc=$?
	if ! err=$(reload_module); then
		echo "# reload with the default parameters failed: $err"
		return 1
	fi
	return $rc
}

# Faults in every migration state: reset, closes, SIGKILL, unbind, sysfs remove (then a rescan) and
# rmmod in each state hit the first device, which then migrates both ways with the second. Needs two
# devices; it unbinds, removes, unloads and reloads, and leaves the module loaded and both devices
# bound again.
fault_test() {
	if [ "${#bdfs[@]}" -lt 2 ]; then
		echo "1..0 # SKIP needs two devices, ${#bdfs[@]} bound"
		return 4
	fi
	echo "# devices: ${bdfs[0]} (faults), ${bdfs[1]} (peer)"
	"$repo/tests/selftests/vfio_fault_test" "${bdfs[0]}" "${bdfs[1]}"
}

# Nothing in the kernel log may show a warning, a sanitizer or lockdep report, an oops, a hang,
# a CFI or list corruption report, a kmemleak complaint, or a failed KUnit case.
kernel_log_patterns=(
	'WARNING:' 'BUG:' 'Oops' 'general protection' 'Call Trace'
	'possible circular locking' 'possible recursive locking' 'UBSAN' 'KASAN'
	'blocked for more than' 'soft lockup' 'CFI failure'
	'list_add corruption' 'list_del corruption'
	# kmemleak: anything but its start-up line.
	'kmemleak: ([0-9]+ new suspected|.*[Dd]isabled|Cannot|Failed|Memory pool|.*unknown object|Found object|Scan area|Partially freeing|Not scanning|Not resetting|Updating stack)'
	'unreferenced object 0x'
	# KUnit `not ok` lines (indented, after the timestamp).
	'^(\[[^]]*\])?[[:space:]]*not ok [0-9]+'
)

kernel_log() {
	local bad re
	re=$(IFS='|'; echo "${kernel_log_patterns[*]}")
	echo "TAP version 13"
	echo "1..1"
	bad=$(dmesg | grep -E "$re" || true)
	if [ -z "$bad" ]; then
		echo "ok 1 kernel log has no warnings, sanitizer, lockdep, hang or KUnit failure reports"
	else
		echo "not ok 1 kernel log has no warnings, sanitizer, lockdep, hang or KUnit failure reports"
		printf '%s\n' "$bad" | head -n 40 | sed 's/^/# matched: /'
		dmesg | sed 's/^/# /' | tail -n 80
		return 1
	fi
}

# kmemleak: cleared once the module is loaded (boot-time reports are not ours), scanned at the end.
kmemleak_file=/sys/kernel/debug/kmemleak
kmemleak_clear_error=
kmemleak_clear() {
	if [ ! -e "$kmemleak_file" ]; then
		kmemleak_clear_error="$kmemleak_file does not exist (CONFIG_DEBUG_KMEMLEAK, debugfs mounted?)"
	elif ! kmemleak_clear_error=$(echo clear 2>&1 >"$kmemleak_file"); then
		kmemleak_clear_error="echo clear > $kmemleak_file: ${kmemleak_clear_error:-failed}"
	fi
}

kmemleak() {
	local out err
	echo "TAP version 13"
	echo "1..1"
	if [ -n "$kmemleak_clear_error" ]; then
		echo "not ok 1 no kmemleak reports # kmemleak is not available: $kmemleak_clear_error"
		return 1
	fi
	# Two scans a few seconds apart, as Documentation/dev-tools/kmemleak.rst suggests: an object
	# that was only in flight during the first is referenced again by the second. kmemleak reports
	# nothing younger than MSECS_MIN_AGE (5 s in mm/kmemleak.c): the 7 s between the scans let the
	# second see what the last suites allocated.
	# An object handed out from a SLUB sheaf would stay referenced by the sheaf's stale pointer
	# array (sheaves are kmalloc'd, so kmemleak scans them) and its leak go unreported: the guest
	# boots with slab_debug=F (tests/vm/run), and caches with debug flags have no sheaves.
	# kmemleak_selfcheck proves that a leak is reported.
	if ! err=$(echo scan 2>&1 >"$kmemleak_file") || ! sleep 7 ||
		! err=$(echo scan 2>&1 >"$kmemleak_file"); then
		echo "not ok 1 no kmemleak reports # echo scan > $kmemleak_file: ${err:-failed}"
		return 1
	fi
	if ! out=$(cat "$kmemleak_file" 2>&1); then
		echo "not ok 1 no kmemleak reports # cat $kmemleak_file: $out"
		return 1
	fi
	if [ -n "$out" ]; then
		echo "not ok 1 no kmemleak reports # $(grep -c '^unreferenced object' <<<"$out") unreferenced objects"
		printf '%s\n' "$out" | head -n 200 | sed 's/^/# /'
		return 1
	fi
	echo "ok 1 no kmemleak reports"
}

# kmemleak_reports_of NAME: how many reports of the kmemleak output on stdin have NAME in them
# (in their backtrace).
kmemleak_reports_of() {
	awk -v name="$1" '/^unreferenced object/ { n += hit; hit = 0 } index($0, name) { hit = 1 }
		END { print n + hit }'
}

# kmemleak itself: the objects tests/kmemleak/qvp_leak.ko leaks on purpose must all be reported,
# each with qvp_leak in its backtrace. Runs after the real scan, which it must not pollute.
kmemleak_selfcheck() {
	local ko=$repo/tests/kmemleak/qvp_leak.ko n=16 out found err
	echo "TAP version 13"
	echo "1..1"
	if [ -n "$kmemleak_clear_error" ]; then
		echo "not ok 1 kmemleak reports a deliberate leak # kmemleak is not available: $kmemleak_clear_error"
		return 1
	fi
	if [ ! -e "$ko" ]; then
		echo "not ok 1 kmemleak reports a deliberate leak # $ko was not built"
		return 1
	fi
	if ! err=$(echo clear 2>&1 >"$kmemleak_file") || ! err=$(insmod "$ko" count=$n 2>&1); then
		echo "not ok 1 kmemleak reports a deliberate leak # clear, insmod: ${err:-failed}"
		return 1
	fi
	# Older than kmemleak's minimum age (5 s) before the scans; the module stays loaded until
	# they are done so that the backtraces resolve to its symbols.
	sleep 6
	if ! err=$(echo scan 2>&1 >"$kmemleak_file") || ! err=$(echo scan 2>&1 >"$kmemleak_file"); then
		echo "not ok 1 kmemleak reports a deliberate leak # echo scan: ${err:-failed}"
		rmmod qvp_leak
		return 1
	fi
	out=$(cat "$kmemleak_file" 2>&1)
	rmmod qvp_leak
	echo clear >"$kmemleak_file"
	found=$(kmemleak_reports_of qvp_leak <<<"$out")
	if [ "$found" = "$n" ]; then
		echo "ok 1 kmemleak reports a deliberate leak # $found of $n leaked objects reported"
	else
		echo "not ok 1 kmemleak reports a deliberate leak # $found of $n leaked objects reported"
		printf '%s\n' "$out" | head -n 60 | sed 's/^/# /'
		return 1
	fi
}

# Sourced (scripts/test_ktap_summary.py tests the checks above on the host): functions only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

if [ "${#bdfs[@]}" = 0 ]; then
	echo "no devices are bound to qemu-vfio-pci" >&2
	exit 1
fi

# For the summary: tests/expected-suites names the per-device suites with {bdf}. A suite added here
# gets its name listed there too.
echo "# qvp-devices: ${bdfs[*]}"
kmemleak_clear

kunit_suites
for bdf in "${bdfs[@]}"; do
	suite "kselftest:vfio_bochs_test:$bdf" ktap "$repo/tests/selftests/vfio_bochs_test" "$bdf"
done
suite kselftest:vfio_migration_test ktap migration_test
suite kselftest:vfio_precopy_test ktap precopy_test
# DMA logging (always empty: the device cannot DMA), on the first device.
suite kselftest:vfio_dma_log_test ktap "$repo/tests/selftests/vfio_dma_log_test" "${bdfs[0]}"
# Hardening: transfers stalled on userfaultfd pages across a close/reopen or a reset, data-file
# memory charged to the memory cgroup and bounded, allocation and user-copy faults injected into
# every site, two migrations at once on four devices and resets racing transfers.
suite "kselftest:vfio_stress_test" ktap "$repo/tests/selftests/vfio_stress_test" "${bdfs[@]:0:4}"
# QEMU 10 drives the migration uAPI, before the fault suite unbinds, removes and reloads.
suite qemu:migration ktap qemu_migration
suite qemu:stop-copy-only ktap qemu_stop_copy_only
suite kselftest:vfio_fault_test ktap fault_test
suite lifecycle ktap lifecycle
kunit_suites :after-reload
for bdf in "${bdfs[@]}"; do
	suite "kselftest:vfio_bochs_test:$bdf:after-reload" ktap "$repo/tests/selftests/vfio_bochs_test" "$bdf"
done
suite kernel-log ktap kernel_log
# Last: every other suite's leaks are in this scan.
suite kmemleak ktap kmemleak
suite kmemleak:selfcheck ktap kmemleak_selfcheck
exit 0
