#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# scripts/build-module.sh KBUILD [make args...]
#
# Builds qemu-vfio-pci.ko against the kernel build directory KBUILD with the same toolchain that
# built it. Compiler output goes to stderr and to build/module.log, whose warnings `make check`
# counts.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
kbuild=$1
shift
mkdir -p "$repo/build"
set +e
make -C "$repo" -s modules KDIR="$kbuild" LLVM="$QVP_LLVM" "$@" 2>&1 | tee "$repo/build/module.log" >&2
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
