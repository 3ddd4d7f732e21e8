#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The guest half of `make demo` (see scripts/demo.sh): shows the bound devices and uses each one
# through VFIO (iommufd + device cdev) with the kselftest, then migrates the first into the second.
set -uo pipefail
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
	out=$(tests/selftests/vfio_bochs_test "$bdf" 2>&1)
	rc=$?
	totals=$(grep -o 'pass:[0-9]* fail:[0-9]*' <<<"$out" | tail -n1)
	echo "$bdf: /dev/vfio/devices/$cdev, IOMMU group $group; VFIO kselftest: $totals (exit $rc)"
	[ "$rc" = 0 ] && ok=$((ok + 1))
done

migrated=no
if [ "${#bdfs[@]}" -ge 2 ]; then
	echo
	echo "== live migration ${bdfs[0]} -> ${bdfs[1]} (VFIO v2: STOP_COPY, then RESUMING)"
	if tests/bench/mig_bench "${bdfs[0]}" "${bdfs[1]}"; then
		migrated=yes
	fi
fi

echo
if [ "$ok" = "${#bdfs[@]}" ] && [ "$ok" -gt 0 ] && [ "$migrated" = yes ]; then
	echo "SUMMARY: $ok bochs-display devices bound to qemu-vfio-pci, working through VFIO;" \
		"the complete state of ${bdfs[0]} migrated into ${bdfs[1]}"
	exit 0
fi
echo "SUMMARY: $ok of ${#bdfs[@]} devices work through VFIO; migration: $migrated"
exit 1
