#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Builds (or reuses) the Rust-enabled test kernel and prints its build directory on stdout.
#
# The build lives in $QVP_CACHE/kbuild/<version>-<key>, where the key hashes the kernel version,
# tests/vm/kernel.config and the versions of rustc, bindgen and clang. A finished build carries a
# stamp; an existing stamp means no work. C objects go through ccache ($QVP_CACHE/ccache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
fragment=$repo/tests/vm/kernel.config

src=$QVP_CACHE/linux-$QVP_KVER
[ -f "$src/Makefile" ] || "$here/setup.sh" sources
rv=$(qvp_rustc_version)
rust_lib_src=$QVP_CACHE/rust-src-$rv/usr/src/rustc-$rv/library
[ -d "$rust_lib_src" ] || "$here/setup.sh" sources

kver=$(make -s -C "$src" kernelversion)
key=$( {
	echo "$kver"
	cat "$fragment"
	"$(qvp_rustc)" --version
	bindgen --version
	"clang$QVP_LLVM" --version | head -n1
} | sha256sum | cut -c1-12)
out=$QVP_CACHE/kbuild/$kver-$key

if [ -f "$out/.qvp-built" ]; then
	echo "$out"
	exit 0
fi

export CCACHE_DIR=$QVP_CACHE/ccache
export KBUILD_BUILD_TIMESTAMP='Thu Jan  1 00:00:00 UTC 2026'
export KBUILD_BUILD_USER=qvp KBUILD_BUILD_HOST=qvp
mk=(make -s -C "$src" O="$out" LLVM="$QVP_LLVM" RUST_LIB_SRC="$rust_lib_src"
	CC="ccache clang$QVP_LLVM")

qvp_log "configuring Linux $kver in $out (tinyconfig + tests/vm/kernel.config)"
mkdir -p "$out"
"${mk[@]}" tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "$fragment" >/dev/null
"${mk[@]}" olddefconfig >/dev/null

# Every option the fragment sets or disables must have survived dependency resolution.
bad=0
while IFS= read -r line; do
	case "$line" in
	"# CONFIG_"*" is not set")
		opt=${line#\# }
		opt=${opt%% *}
		if grep -q "^$opt=" "$out/.config"; then
			qvp_log "config option not disabled: $line (got: $(grep "^$opt=" "$out/.config"))"
			bad=1
		fi
		continue
		;;
	CONFIG_*=*) ;;
	*) continue ;;
	esac
	if ! grep -qx "$line" "$out/.config"; then
		qvp_log "config option not applied: $line (got: $(grep "^${line%%=*}=\|# ${line%%=*} is not set" "$out/.config" || echo missing))"
		bad=1
	fi
done <"$fragment"
[ "$bad" = 0 ] || qvp_die "kernel configuration incomplete; fix tests/vm/kernel.config"

qvp_log "building the kernel ($(nproc) jobs; about 13 minutes cold, seconds when cached)"
start=$(date +%s)
"${mk[@]}" -j"$(nproc)" >"$out/build.log" 2>&1 || {
	tail -n 40 "$out/build.log" >&2
	qvp_die "kernel build failed (log: $out/build.log)"
}
"${mk[@]}" headers_install >/dev/null
qvp_log "kernel built in $(( $(date +%s) - start )) s"
touch "$out/.qvp-built"
echo "$out"
