#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: builds everything, boots a QEMU guest with two bochs-display devices, loads
# qemu-vfio-pci with modprobe, binds both devices through driver_override, shows that they work
# through VFIO, migrates the first device's complete state into the second, and prints a summary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
cd "$repo"

"$here/setup.sh"
kbuild=$("$here/build-kernel.sh")
make -s -C tests/selftests KSRC="$QVP_CACHE/linux-$QVP_KVER" KHDR="$kbuild/usr/include"
make -s -C tests/bench KHDR="$kbuild/usr/include"
exec "$repo/tests/vm/run" --devices 2 -- tests/vm/demo-guest.sh
