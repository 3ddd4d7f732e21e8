#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: builds everything, boots a QEMU guest (L1) with two bochs-display devices, loads
# qemu-vfio-pci with modprobe, binds both devices through driver_override, shows that they work
# through VFIO, migrates the first device's complete state into the second, and then has QEMU
# live-migrate a running Linux guest (L2) that draws on its display from the first device to the
# second (tests/vm/demo-guest.sh). Pictures of both displays, taken by the outer QEMU through
# its QMP monitor, logs and figures go to build/demo/. Ends with a SUMMARY line.
#
# DEMO_STOP_COPY_ONLY=1 (make demo DEMO_STOP_COPY_ONLY=1): the live migration runs with the module
# loaded with pre_copy=0, for comparing a STOP_COPY-only migration of the same guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
cd "$repo"

"$here/setup.sh"
kbuild=$("$here/build-kernel.sh")
make -s -C tests/selftests KSRC="$QVP_CACHE/linux-$QVP_KVER" KHDR="$kbuild/usr/include"
make -s -C tests/bench KHDR="$kbuild/usr/include"

# The L2 guest's initramfs (the painter as /init), and an empty output directory that the guest
# can write to; its mailbox is where the guest asks for pictures.
out=$repo/build/demo
rm -rf "$out"
mkdir -p "$out/mailbox"
make -s -C tests/demo KBUILD="$kbuild" OUT="$out"

# The outer QEMU's QMP socket, and the helper that takes the pictures through it.
qmpdir=$(mktemp -d /tmp/qvp-demo.XXXXXX)
python3 tests/demo/l0_watcher.py "$qmpdir/l0.qmp" "$out/mailbox" >"$out/l0_watcher.log" 2>&1 &
watcher=$!
trap 'kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; rm -rf "$qmpdir"' EXIT

# --mttcg: the L2 Linux boots under nested TCG, and with both host cores for the guest's vCPUs
# it took 152 s instead of 395 (tests/vm/run keeps make check single-threaded).
set +e
"$repo/tests/vm/run" --mttcg --devices 2 --memory 2G --rwdir "$out" --qmp "$qmpdir/l0.qmp" \
	--console "$out/console.log" -- tests/vm/demo-guest.sh "$kbuild/arch/x86/boot/bzImage" "$out" \
	${DEMO_STOP_COPY_ONLY:+stop-copy-only}
exit $?
