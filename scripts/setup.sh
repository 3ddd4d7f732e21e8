#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Installs and caches everything the build and the tests need, idempotently, saying what it does.
#
#   scripts/setup.sh            all of it
#   scripts/setup.sh STEP...    only some: host qemu sources bindgen vng fuzz
#
# Debian 12 packages come from the system's own sources. QEMU 10 comes from bookworm-backports and
# the Linux 7.3 sources and rust-src from trixie-backports; both go through a private sources list
# and lists directory under $QVP_CACHE/apt, so the machine's apt configuration is never changed. From
# trixie-backports only arch-all packages are downloaded (`apt-get download`), never installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

SUDO=
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || qvp_die "not root and no sudo: cannot install packages"
	SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive

# Debian 12 packages: kernel build dependencies, LLVM 19, kmod (depmod, modprobe), rsync
# (headers_install), ccache, busybox (virtme-ng's initramfs), python venv (virtme-ng), pciutils
# (lspci in the guest), udev (virtme-ng's guest init needs udevd to name its virtio-serial ports,
# which carry the command's stdout, stderr and exit status).
HOST_PKGS="build-essential bc bison flex libelf-dev libssl-dev cpio kmod rsync ccache
	clang-19 lld-19 llvm-19 libclang-19-dev zstd xz-utils busybox-static python3-venv pciutils udev"

apt_private_dir=$QVP_CACHE/apt
apt_private_opts() {
	echo "-o Dir::Etc::SourceList=$apt_private_dir/sources.list -o Dir::Etc::SourceParts=/dev/null \
-o Dir::State::Lists=$apt_private_dir/lists -o Dir::Cache=$apt_private_dir/cache \
-o APT::Get::List-Cleanup=false -o APT::Sandbox::User=root"
}

apt_private_update() {
	local stamp=$apt_private_dir/updated
	mkdir -p "$apt_private_dir/lists/partial" "$apt_private_dir/cache/archives/partial"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	cat >"$apt_private_dir/sources.list.new" <<-EOF
		deb [signed-by=$key] http://deb.debian.org/debian bookworm main
		deb [signed-by=$key] http://deb.debian.org/debian bookworm-updates main
		deb [signed-by=$key] http://deb.debian.org/debian-security bookworm-security main
		deb [signed-by=$key] http://deb.debian.org/debian bookworm-backports main
		deb [signed-by=$key] http://deb.debian.org/debian trixie-backports main
	EOF
	mv "$apt_private_dir/sources.list.new" "$apt_private_dir/sources.list"
	# Refresh at most once a day.
	if [ -z "$(find "$stamp" -mmin -1440 2>/dev/null)" ]; then
		qvp_log "updating the private package lists (bookworm-backports, trixie-backports)"
		# shellcheck disable=SC2046
		$SUDO apt-get -q $(apt_private_opts) update >/dev/null
		touch "$stamp"
	fi
}

missing_pkgs() {
	local p out=
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || out="$out $p"
	done
	echo "$out"
}

step_host() {
	# shellcheck disable=SC2086
	local missing
	missing=$(missing_pkgs $HOST_PKGS)
	if [ -z "$missing" ]; then
		qvp_log "host packages: present"
		return
	fi
	qvp_log "installing host packages:$missing"
	$SUDO apt-get -q update >/dev/null
	# shellcheck disable=SC2086
	$SUDO apt-get -y -q install $missing >/dev/null
}

step_qemu() {
	if command -v qemu-system-x86_64 >/dev/null &&
		qemu-system-x86_64 --version | grep -Eq 'version (1[0-9]|[2-9][0-9])\.'; then
		qvp_log "QEMU: $(qemu-system-x86_64 --version | head -n1)"
		return
	fi
	apt_private_update
	qvp_log "installing qemu-system-x86 10 from bookworm-backports (private sources list)"
	# shellcheck disable=SC2046
	$SUDO apt-get -y -q $(apt_private_opts) -t bookworm-backports install qemu-system-x86 >/dev/null
	qemu-system-x86_64 --version | head -n1 >&2
}

# Downloads one arch-all package version from the private lists and unpacks it into $2.
fetch_deb() {
	local pkgver=$1 dest=$2 tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2046
	(cd "$tmp" && apt-get -q $(apt_private_opts) download "$pkgver" >/dev/null)
	rm -rf "$dest.tmp"
	mkdir -p "$dest.tmp"
	dpkg-deb -x "$tmp"/*.deb "$dest.tmp"
	rm -rf "$tmp" "$dest"
	mv "$dest.tmp" "$dest"
}

step_sources() {
	local rv ver
	rv=$(qvp_rustc_version)

	# rust-src of exactly the rustc version in use (Kbuild's RUST_LIB_SRC).
	if [ ! -d "$QVP_CACHE/rust-src-$rv/usr/src/rustc-$rv/library/core" ]; then
		apt_private_update
		# shellcheck disable=SC2046
		ver=$(apt-cache $(apt_private_opts) madison rust-src | awk -v v="$rv" '$3 ~ "^"v"[+]" {print $3; exit}')
		[ -n "$ver" ] || qvp_die "no Debian rust-src $rv found for rustc $rv"
		qvp_log "fetching rust-src $ver (matches rustc $rv)"
		fetch_deb "rust-src=$ver" "$QVP_CACHE/rust-src-$rv"
	fi
	qvp_log "rust-src: $QVP_CACHE/rust-src-$rv/usr/src/rustc-$rv/library"

	# Linux sources.
	if [ ! -f "$QVP_CACHE/linux-$QVP_KVER/Makefile" ]; then
		apt_private_update
		qvp_log "fetching $QVP_LINUX_SOURCE_PKG"
		fetch_deb "$QVP_LINUX_SOURCE_PKG" "$QVP_CACHE/linux-deb"
		qvp_log "unpacking the Linux $QVP_KVER sources"
		rm -rf "$QVP_CACHE/linux-$QVP_KVER.tmp"
		mkdir -p "$QVP_CACHE/linux-$QVP_KVER.tmp"
		tar -C "$QVP_CACHE/linux-$QVP_KVER.tmp" --strip-components=1 \
			-xf "$QVP_CACHE"/linux-deb/usr/src/linux-source-"$QVP_KVER".tar.*
		rm -rf "$QVP_CACHE/linux-deb" "$QVP_CACHE/linux-$QVP_KVER"
		mv "$QVP_CACHE/linux-$QVP_KVER.tmp" "$QVP_CACHE/linux-$QVP_KVER"
	fi
	qvp_log "Linux sources: $QVP_CACHE/linux-$QVP_KVER ($(make -s -C "$QVP_CACHE/linux-$QVP_KVER" kernelversion 2>/dev/null))"
}

step_bindgen() {
	if command -v bindgen >/dev/null && bindgen --version | grep -q " $QVP_BINDGEN_VERSION\$"; then
		qvp_log "bindgen: $(bindgen --version)"
		return
	fi
	qvp_log "building bindgen-cli $QVP_BINDGEN_VERSION from crates.io"
	cargo install -q --locked --root "$QVP_TOOLS" bindgen-cli --version "$QVP_BINDGEN_VERSION"
	bindgen --version >&2
}

step_vng() {
	if [ -x "$QVP_PY_VENV/bin/vng" ]; then
		qvp_log "virtme-ng: $("$QVP_PY_VENV/bin/vng" --version 2>&1 | head -n1)"
		return
	fi
	qvp_log "installing virtme-ng from PyPI into $QVP_PY_VENV"
	python3 -m venv "$QVP_PY_VENV"
	"$QVP_PY_VENV/bin/pip" install -q 'virtme-ng==1.42'
}

# The fuzzers (scripts/fuzz.sh): the AddressSanitizer runtime of the rustc in use (rustup ships it
# with the standard library), a C++ compiler for libFuzzer (build-essential), and the fuzz crate's
# dependencies (libfuzzer-sys) from crates.io into cargo's cache.
step_fuzz() {
	local lib
	lib=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/lib
	compgen -G "$lib/librustc-*_rt.asan.a" >/dev/null ||
		qvp_die "no AddressSanitizer runtime in $lib: the fuzzers need a rustup toolchain"
	command -v g++ >/dev/null || qvp_die "no g++ (build-essential) for libFuzzer"
	local manifest
	manifest=$(cd "$here/.." && pwd)/tests/host/fuzz/Cargo.toml
	cargo fetch -q --manifest-path "$manifest"
	qvp_log "fuzzers: ASan runtime, g++ and the fuzz crate's dependencies present"
}

mkdir -p "$QVP_CACHE"
steps=${*:-host qemu sources bindgen vng fuzz}
for s in $steps; do
	"step_$s"
done
