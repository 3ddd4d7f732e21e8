#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: every test the project has, ending in one line `N passed, N failed, N skipped`.
#
#   build    the module builds against the test kernel with no warnings, clippy-clean
#   lint     rustfmt-clean; `unsafe` only in the abstraction layer (src/vfio*)
#   host     host `cargo test` of the pure-Rust logic (stream format)
#   fuzz     each stream fuzz target for about 30 s (scripts/fuzz.sh --brief)
#   guest    in a QEMU guest: KUnit suites, the VFIO kselftest on each bound device, module
#            unload/reload with devices bound, and a clean kernel log
#
# Results land in build/results/; the guest's raw output in build/results/guest.log, its kernel
# console in build/results/console.log. Every suite named in tests/expected-suites must report: one
# that does not counts as failed.
#
#   counter  host tests of the result counter itself (scripts/test_ktap_summary.py)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
cd "$repo"
start=$(date +%s)

"$here/setup.sh"
kbuild=$("$here/build-kernel.sh")

res=$repo/build/results
rm -rf "$res"
mkdir -p "$res"

# result FILE ok|fail NAME [DETAIL]
result() {
	if [ "$2" = ok ]; then
		echo "ok $3" >>"$1"
	else
		echo "not ok $3" >>"$1"
		[ -z "${4:-}" ] || printf '%s\n' "$4" | sed 's/^/# /' >>"$1"
	fi
}

echo "[check] building the module (clippy, then a normal build)" >&2
if "$here/build-module.sh" "$kbuild" CLIPPY=1 2>/dev/null; then
	w=$(grep -c 'warning' "$repo/build/module.log" || true)
	result "$res/build.results" "$([ "$w" = 0 ] && echo ok || echo fail)" \
		"clippy reports no warnings" "$(grep -A8 warning "$repo/build/module.log" || true)"
else
	result "$res/build.results" fail "clippy build" "$(tail -n 40 "$repo/build/module.log")"
fi
if "$here/build-module.sh" "$kbuild" 2>/dev/null; then
	result "$res/build.results" ok "module builds"
	w=$(grep -c 'warning' "$repo/build/module.log" || true)
	result "$res/build.results" "$([ "$w" = 0 ] && echo ok || echo fail)" \
		"module build has no warnings" "$(cat "$repo/build/module.log")"
else
	result "$res/build.results" fail "module builds" "$(tail -n 40 "$repo/build/module.log")"
fi

echo "[check] the result counter's own tests" >&2
python3 "$here/test_ktap_summary.py" >"$res/counter.results" 2>&1 || true

echo "[check] lint" >&2
rs_files=$(git ls-files 'src/*.rs' 'tests/*.rs' | grep -v '_generated\.rs$' || true)
# shellcheck disable=SC2086
if out=$(rustfmt --edition 2021 --check $rs_files 2>&1); then
	result "$res/lint.results" ok "rustfmt --check"
else
	result "$res/lint.results" fail "rustfmt --check" "$out"
fi
# Code, not comments: a line whose first non-blank characters are `//` does not count.
out=$(grep -rnw unsafe src --include='*.rs' --exclude=vfio.rs --exclude-dir=vfio |
	grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
result "$res/lint.results" "$([ -z "$out" ] && echo ok || echo fail)" \
	"unsafe appears only in the abstraction layer (src/vfio)" "$out"

# Layers only look down (Documentation/architecture.rst): vfio < backend, stream < migration <
# driver. A `use` or path of a layer above, outside comments, fails.
out=$(for rule in "vfio:backend|stream|migration|driver" "backend:migration|driver" \
	"stream:vfio|backend|migration|driver" "migration:driver"; do
	layer=${rule%%:*}
	# `crate::stream::...`, and `stream::{...}` inside a `use crate::{...}` group.
	grep -rnE --include="*.rs" "crate::(${rule#*:})\b|^[[:space:]]+(${rule#*:})::" "src/$layer" "src/$layer.rs" |
		grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true
done)
result "$res/lint.results" "$([ -z "$out" ] && echo ok || echo fail)" \
	"each layer imports only the layers below it" "$out"

if [ -f tests/host/Cargo.toml ]; then
	echo "[check] host tests (cargo test)" >&2
	cargo test --manifest-path tests/host/Cargo.toml >"$res/host-cargo.log" 2>&1 || true
	sed -nE 's/^test (.*) \.\.\. ok$/ok \1/p; s/^test (.*) \.\.\. FAILED$/not ok \1/p;
		s/^test (.*) \.\.\. ignored$/ok \1 # SKIP ignored/p' "$res/host-cargo.log" >"$res/host.results"
	if ! grep -q '^test result:' "$res/host-cargo.log"; then
		result "$res/host.results" fail "cargo test ran" "$(tail -n 40 "$res/host-cargo.log")"
	fi
fi

# The stream fuzzers, about 30 s each (scripts/fuzz.sh --brief writes fuzz.results itself).
echo "[check] fuzzers (scripts/fuzz.sh --brief)" >&2
"$here/fuzz.sh" --brief >"$res/fuzz.log" 2>&1 || true
if [ ! -s "$res/fuzz.results" ]; then
	result "$res/fuzz.results" fail "fuzz:run" "$(tail -n 40 "$res/fuzz.log")"
fi

echo "[check] building the kselftest" >&2
if ! out=$(make -s -C tests/selftests KSRC="$QVP_CACHE/linux-$QVP_KVER" KHDR="$kbuild/usr/include" 2>&1); then
	result "$res/build.results" fail "kselftest builds" "$out"
else
	result "$res/build.results" ok "kselftest builds"
fi
# The module that leaks on purpose, for the guest's kmemleak self-check.
if ! out=$(make -s -C "$kbuild" M="$repo/tests/kmemleak" LLVM="$QVP_LLVM" modules 2>&1); then
	result "$res/build.results" fail "kmemleak self-check module builds" "$out"
else
	result "$res/build.results" ok "kmemleak self-check module builds"
fi

echo "[check] guest tests (KUnit, kselftest, module lifecycle)" >&2
set +e
# A guest that hangs (a stuck reset, a deadlock) must fail the check, not the CI time limit.
# Five devices: four of 16 MiB (two migrations at once in the stress test, two VMs of two devices
# in the QEMU suite) and one of 8 MiB, which a PRE_COPY stream of a 16 MiB device must be refused
# by at its first write. 2 GiB: the QEMU suite runs two L2 QEMUs beside the debug kernel.
timeout --kill-after=30 "${QVP_GUEST_TIMEOUT:-2700}" \
	"$repo/tests/vm/run" --devices 5 --vgamem 16M,16M,16M,16M,8M --memory 2G --console "$res/console.log" -- tests/guest-tests.sh \
	>"$res/guest.log" 2>"$res/guest.stderr"
rc=$?
[ "$rc" != 124 ] || echo "[check] the guest did not finish within ${QVP_GUEST_TIMEOUT:-2700} s" >&2
set -e
if [ "$rc" != 0 ]; then
	result "$res/vm.results" fail "guest ran (tests/vm/run exit status $rc)" \
		"$(tail -n 40 "$res/guest.stderr"; echo "--- kernel console (build/results/console.log), last lines:";
		tail -n 60 "$res/console.log" 2>/dev/null)"
fi

echo "[check] done in $(( $(date +%s) - start )) s" >&2
files=("$res"/*.results "$res/guest.log")
python3 "$here/ktap-summary.py" --expect "$repo/tests/expected-suites" "${files[@]}"
