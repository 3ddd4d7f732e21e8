#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The guest half of `make demo` (see scripts/demo.sh):
#
#   demo-guest.sh BZIMAGE OUTDIR [stop-copy-only]
#
# shows the bound devices and uses each one through VFIO (iommufd + device cdev) with the
# kselftest, migrates the first into the second through the VFIO uAPI (mig_bench), and then has
# QEMU live-migrate a running Linux guest (BZIMAGE with the painter initramfs of OUTDIR) from the
# first device to the second (tests/demo/live_migration.py; pictures, logs and figures go to
# OUTDIR, which the host can see). With stop-copy-only, the module is loaded again with pre_copy=0
# before the live migration, which then has no PRE_COPY. Ends with one SUMMARY line.
set -uo pipefail
kernel=$1 out=$2 mode=${3:-}
read -r -a bdfs <<<"${QVP_BDFS:-}"

echo
echo "== lspci -nnk -d 1234:1111"
lspci -nnk -d 1234:1111
echo
echo "== qemu-vfio-pci"
echo "module:  $(grep -o '^qemu_vfio_pci [0-9]*' /proc/modules) ($(cat /sys/module/qemu_vfio_pci/initstate 2>/dev/null || echo ?))"
echo "devices: $(ls /sys/bus/pci/drivers/qemu-vfio-pci | grep -c ':') bound"

ok=0
for bdf in "${bdfs[@]}"; do
	cdev=$(ls "/sys/bus/pci/devices/$bdf/vfio-dev/" 2>/dev/null)
	group=$(basename "$(readlink "/sys/bus/pci/devices/$bdf/iommu_group")")
	out_=$(tests/selftests/vfio_bochs_test "$bdf" 2>&1)
	rc=$?
	totals=$(grep -o 'pass:[0-9]* fail:[0-9]*' <<<"$out_" | tail -n1)
	echo "$bdf: /dev/vfio/devices/$cdev, IOMMU group $group; VFIO kselftest: $totals (exit $rc)"
	[ "$rc" = 0 ] && ok=$((ok + 1))
done

migrated=no live=no
if [ "${#bdfs[@]}" -ge 2 ]; then
	echo
	echo "== migration through the VFIO uAPI ${bdfs[0]} -> ${bdfs[1]} (STOP_COPY, then RESUMING)"
	if tests/bench/mig_bench "${bdfs[0]}" "${bdfs[1]}"; then
		migrated=yes
	fi
	echo
	echo "== QEMU live-migrates a running Linux guest ${bdfs[0]} -> ${bdfs[1]}"
	lm_args=()
	if [ "$mode" = stop-copy-only ]; then
		echo "(the module loaded again with pre_copy=0: STOP_COPY only)"
		rmmod qemu_vfio_pci && modprobe -d /tmp/qvp-modules qemu-vfio-pci pre_copy=0
		for bdf in "${bdfs[@]}"; do
			echo "$bdf" >/sys/bus/pci/drivers_probe
		done
		lm_args=(--stop-copy-only)
	fi
	if python3 tests/demo/live_migration.py "${lm_args[@]}" --kernel "$kernel" \
		--initrd "$out/l2-initrd.cpio.gz" --out "$out" "${bdfs[0]}" "${bdfs[1]}"; then
		live=yes
	fi
fi
live_summary=$(cat "$out/summary.txt" 2>/dev/null || echo "the live migration did not run")

echo
if [ "$ok" = "${#bdfs[@]}" ] && [ "$ok" -gt 0 ] && [ "$migrated" = yes ] && [ "$live" = yes ]; then
	echo "SUMMARY: $live_summary; $ok bochs-display devices bound to qemu-vfio-pci pass the VFIO" \
		"kselftest, and the complete state of ${bdfs[0]} migrated into ${bdfs[1]} through the VFIO" \
		"uAPI; pictures and logs in ${out#"$PWD"/}/"
	exit 0
fi
echo "SUMMARY: FAILED: $live_summary; $ok of ${#bdfs[@]} devices pass the VFIO kselftest;" \
	"migration through the VFIO uAPI: $migrated; pictures and logs in ${out#"$PWD"/}/"
exit 1
