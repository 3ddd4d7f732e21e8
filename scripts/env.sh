# SPDX-License-Identifier: GPL-2.0
# Shared settings for the set-up, build and VM scripts. Sourced, never run.
#
# Everything fetched or built lives in $QVP_CACHE, outside the clone, so that a fresh clone, a second
# run and CI on the same machine reuse it.

QVP_CACHE=${QVP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qemu-vfio-pci}
QVP_KVER=7.3
# Debian package versions. rust-src must match the rustc that builds the kernel exactly.
QVP_LINUX_SOURCE_PKG=linux-source-$QVP_KVER
QVP_BINDGEN_VERSION=0.72.1
QVP_LLVM=-19
QVP_PY_VENV=$QVP_CACHE/venv
QVP_TOOLS=$QVP_CACHE/tools

qvp_log() { printf '[setup] %s\n' "$*" >&2; }
qvp_die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# The rustc that builds the kernel and the module (rustup's default unless RUSTC is set).
qvp_rustc() { command -v "${RUSTC:-rustc}"; }
qvp_rustc_version() { "$(qvp_rustc)" --version | awk '{print $2}'; }

export PATH="$QVP_TOOLS/bin:$QVP_PY_VENV/bin:$HOME/.cargo/bin:$PATH"
export LIBCLANG_PATH=${LIBCLANG_PATH:-/usr/lib/llvm${QVP_LLVM}/lib}
