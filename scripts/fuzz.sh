#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make fuzz`: the migration stream fuzzers (tests/host/fuzz) with libFuzzer, AddressSanitizer and
# debug assertions.
#
#   scripts/fuzz.sh           decode for QVP_FUZZ_RUNS executions (10 M) or QVP_FUZZ_TIME seconds
#                             (7200), whichever comes first, then roundtrip for QVP_FUZZ_RT_TIME
#                             seconds (600), then precopy for QVP_FUZZ_PC_TIME seconds (600); each
#                             in one process, or in QVP_FUZZ_JOBS processes (-fork) if set
#   scripts/fuzz.sh --brief   each target for QVP_FUZZ_BRIEF_TIME seconds (30), one process; writes
#                             build/results/fuzz.results for `make check`
#
# Prints per target: executions, executions per second, corpus size and crashes. Exits non-zero on a
# crash (the input is kept in tests/host/fuzz/artifacts/TARGET/), or if decode stopped at the time
# bound before its executions.
#
# The targets are built on the stable toolchain as cargo-fuzz would build them (RUSTC_BOOTSTRAP for
# the -Z flags), into tests/host/fuzz/target. The corpora live in tests/host/fuzz/corpus/TARGET/:
# seed inputs made from real streams (`seed-*`, written by the fuzz-seeds binary of tests/host at
# every run; precopy, whose inputs are schedules, has none), and what the fuzzer adds, kept from run
# to run. Neither is in git.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"
repo=$(cd "$here/.." && pwd)
cd "$repo"

brief=
[ "${1:-}" != --brief ] || brief=1
runs=${QVP_FUZZ_RUNS:-10000000}
decode_time=${QVP_FUZZ_TIME:-7200}
rt_time=${QVP_FUZZ_RT_TIME:-600}
pc_time=${QVP_FUZZ_PC_TIME:-600}
brief_time=${QVP_FUZZ_BRIEF_TIME:-30}
# One process by default: on 2 shared cores, -fork=2 made 1200 exec/s where one process makes 2000
# (the jobs restart and re-run their inputs every few seconds).
jobs=${QVP_FUZZ_JOBS:-1}

fuzz=$repo/tests/host/fuzz
res=$repo/build/results
log() { printf '[fuzz] %s\n' "$*" >&2; }

"$here/setup.sh" host fuzz

triple=$(rustc -vV | sed -n 's/^host: //p')
log "building the fuzz targets (ASan, sanitizer coverage, debug assertions) for $triple"
# The flags cargo-fuzz passes. With --target, RUSTFLAGS reach only the target's code, not build
# scripts (libfuzzer-sys builds libFuzzer's C++ with g++ through the cc crate).
build_log=$fuzz/target/build.log
mkdir -p "$fuzz/target"
if ! RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Cpasses=sancov-module \
	-Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares \
	--cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks \
	-Cforce-frame-pointers=yes" \
	cargo build -q --release --manifest-path "$fuzz/Cargo.toml" --target-dir "$fuzz/target" \
	--target "$triple" --bins >"$build_log" 2>&1; then
	cat "$build_log" >&2
	fail_build=1
else
	fail_build=
fi
bin=$fuzz/target/$triple/release

# The seeds: real streams from the crate's encoder, valid and malformed.
if ! cargo build -q --manifest-path tests/host/Cargo.toml --bin fuzz-seeds >>"$build_log" 2>&1 ||
	! seeds=$(tests/host/target/debug/fuzz-seeds "$fuzz/corpus/decode" "$fuzz/corpus/roundtrip"); then
	cat "$build_log" >&2
	fail_build=1
else
	log "$(echo "$seeds" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
fi

if [ -n "$brief" ]; then
	mkdir -p "$res"
	rm -f "$res/fuzz.results"
	if [ -n "$fail_build" ]; then
		{
			echo "not ok fuzz:build"
			tail -n 30 "$build_log" | sed 's/^/# /'
		} >>"$res/fuzz.results"
		exit 1
	fi
fi
[ -z "$fail_build" ] || exit 1

status=0

# run TARGET SECONDS [RUNS]: fuzzes TARGET, prints its figures and, with --brief, adds its result.
run() {
	local target=$1 secs=$2 n=${3:-} corpus=$fuzz/corpus/$1 art=$fuzz/artifacts/$1
	local out=$fuzz/target/$1.log stamp=$fuzz/target/$1.stamp
	# Inputs are scheduled by the coverage they add per unit of execution time: long streams
	# (whole 256 KiB records) would otherwise take most of the time; this doubles exec/s.
	local args=(-max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
		-entropic_scale_per_exec_time=1 -artifact_prefix="$art/")
	[ -z "$n" ] || args+=(-runs="$n")
	[ -n "$brief" ] || [ "$jobs" -le 1 ] || args+=(-fork="$jobs")
	mkdir -p "$corpus" "$art"
	touch "$stamp"
	log "$target: ${n:+up to $n executions, }at most $secs s${brief:+ (brief)}$([ -n "$brief" ] || [ "$jobs" -le 1 ] || echo ", $jobs processes"); log in $out"
	local start end rc=0
	start=$(date +%s.%N)
	"$bin/$target" "${args[@]}" "$corpus" >"$out" 2>&1 || rc=$?
	end=$(date +%s.%N)

	# Executions: the last status line (`#N ...` alone, `#N: ...` with -fork); a crash before the
	# first status line leaves the final statistics, if any.
	local execs secs_run rate files crashes timeouts
	execs=$(grep -aoE '^#[0-9]+' "$out" | tail -n1 | tr -d '#' || true)
	if grep -aq '^stat::number_of_executed_units' "$out"; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -n1)
	fi
	execs=${execs:-0}
	secs_run=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
	rate=$(awk -v n="$execs" -v t="$secs_run" 'BEGIN { printf "%d", (t > 0 ? n / t : 0) }')
	files=$(find "$corpus" -type f | wc -l)
	crashes=$(find "$art" -type f -newer "$stamp" | sort)
	timeouts=$(grep -aoE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' "$out" | tail -n1 | cut -d' ' -f2 || true)
	local summary ok=1
	summary="$execs execs, $rate exec/s, corpus $files"
	printf '[fuzz] %s: %s execs in %.0f s (%s exec/s), corpus %s inputs, %s crashes\n' \
		"$target" "$execs" "$secs_run" "$rate" "$files" "$(echo -n "$crashes" | grep -c . || true)"
	if [ -n "$crashes" ] || [ "$rc" != 0 ]; then
		ok=
		log "$target: FAILED (exit status $rc); the fuzzer says:"
		grep -aE -A1 'panicked at|^==[0-9]+==.*ERROR' "$out" | head -n 20 >&2 || true
		grep -aE '^SUMMARY|Test unit written|^Base64' "$out" >&2 || true
		if [ -n "$crashes" ]; then
			log "$target: crash inputs (reproduce: $bin/$target FILE):"
			printf '    %s\n' $crashes >&2
		else
			tail -n 20 "$out" >&2
		fi
	elif [ -n "$n" ] && [ "$execs" -lt "$n" ]; then
		ok=
		log "$target: only $execs of $n executions within $secs s"
	fi
	[ -z "$timeouts" ] || log "$target: oom/timeout/crash $timeouts"
	if [ -n "$brief" ]; then
		if [ -n "$ok" ]; then
			echo "ok fuzz:$target $summary" >>"$res/fuzz.results"
		else
			{
				echo "not ok fuzz:$target $summary, exit status $rc"
				for f in $crashes; do echo "# crash input: $f"; done
				grep -aE -A1 'panicked at|^==[0-9]+==.*ERROR' "$out" | head -n 10 | sed 's/^/# /'
			} >>"$res/fuzz.results"
		fi
	fi
	[ -n "$ok" ] || status=1
}

if [ -n "$brief" ]; then
	run decode "$brief_time"
	run roundtrip "$brief_time"
	run precopy "$brief_time"
else
	run decode "$decode_time" "$runs"
	run roundtrip "$rt_time"
	run precopy "$pc_time"
fi
exit "$status"
