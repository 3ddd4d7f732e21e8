#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (started by tests/vm/run): installs and loads qemu-vfio-pci, binds
# every bochs-display to DRIVER through driver_override, then runs the command.
#
#   guest.sh DRIVER CMD_BASE64
#
# DRIVER is qemu-vfio-pci, another driver name, or "none"; CMD_BASE64 is the command's arguments,
# NUL-separated and base64-encoded.
set -euo pipefail
driver=$1
repo=$(cd "$(dirname "$0")/../.." && pwd)
mapfile -d '' cmd < <(printf %s "$2" | base64 -d)

log() { printf '[guest] %s\n' "$*" >&2; }

if [ "$driver" = qemu-vfio-pci ]; then
	# The host's /lib/modules is not the guest kernel's, so install into a private module tree
	# and let modprobe resolve the module (and its dependencies) there.
	root=/tmp/qvp-modules
	kver=$(uname -r)
	install -D -m644 "$repo/qemu-vfio-pci.ko" "$root/lib/modules/$kver/extra/qemu-vfio-pci.ko"
	# Everything else is built in: empty index files keep depmod quiet.
	touch "$root/lib/modules/$kver/"{modules.order,modules.builtin,modules.builtin.modinfo}
	depmod -b "$root" "$kver"
	modprobe -d "$root" qemu-vfio-pci
	log "modprobe qemu-vfio-pci: loaded ($(modinfo -b "$root" -F vermagic qemu-vfio-pci))"
fi

bdfs=()
for dev in /sys/bus/pci/devices/*; do
	[ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x1111 ] || continue
	bdf=${dev##*/}
	if [ "$driver" != none ]; then
		if [ -e "$dev/driver" ]; then
			echo "$bdf" >"$dev/driver/unbind"
		fi
		echo "$driver" >"$dev/driver_override"
		echo "$bdf" >/sys/bus/pci/drivers_probe
		bound=$(basename "$(readlink "$dev/driver" 2>/dev/null || echo none)")
		if [ "$bound" != "$driver" ]; then
			log "$bdf: binding to $driver failed (bound to: $bound)"
			exit 1
		fi
	fi
	bdfs+=("$bdf")
done
log "devices bound to $driver: ${bdfs[*]:-none}"
export QVP_BDFS="${bdfs[*]}"

cd "$repo"
exec "${cmd[@]}"
