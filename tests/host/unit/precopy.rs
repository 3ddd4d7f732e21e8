// SPDX-License-Identifier: GPL-2.0

//! The pre-copy plan: dirty runs, laps, exact byte counts and whole PRE_COPY + STOP_COPY streams.

use std::{
    vec,
    vec::Vec, //
};

use super::util::{
    bochs,
    Run as DecodeRun,
    VecSink,
    VecSource,
    XorShift, //
};
use crate::stream::{
    coverage::Coverage,
    crc::SoftCrc32c,
    format::errno,
    precopy::{
        initial_pass_bytes,
        lap_bytes,
        memory_bytes,
        next_run,
        regs_bytes,
        run_bytes,
        Lap,
        Phase,
        PreCopyPlan,
        Run,
        Step,
        END_BYTES,
        HEADER_BYTES,
        MAX_RUN_PAGES,
        PAGE_SIZE, //
    },
    stream_len,
    DecodeError,
    EncodeError,
    Encoder,
    Header,
    Sink,
    SinkError,
    MAX_CHUNK,
    SCRATCH_LEN, //
};

/// The register blob length of bochs-display.
const REGS_LEN: u32 = 24;

/// 16 MiB, the default bochs-display VRAM.
const MIB16: u64 = 16 << 20;

/// The run of `pages` pages from page `first` on.
fn span(first: u64, pages: u64) -> Run {
    Run { first, pages }
}

/// The MEMORY step for `len` bytes at `offset`.
fn memory(offset: u64, len: usize) -> Step {
    Step::Memory { offset, len }
}

/// Sets page `p` in `bits`.
fn set(bits: &mut [u64], p: u64) {
    bits[(p / 64) as usize] |= 1 << (p % 64);
}

/// Clears page `p` in `bits`.
fn clear(bits: &mut [u64], p: u64) {
    bits[(p / 64) as usize] &= !(1 << (p % 64));
}

/// Returns whether page `p` is set in `bits`.
fn get(bits: &[u64], p: u64) -> bool {
    bits[(p / 64) as usize] >> (p % 64) & 1 != 0
}

/// A bitmap for `npages` pages with the pages `set_pages` set.
fn bitmap(npages: u64, set_pages: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut bits = vec![0u64; npages.div_ceil(64) as usize];
    for p in set_pages {
        set(&mut bits, p);
    }
    bits
}

/// Clears the pages a MEMORY step sends, as its sender does (only those below `npages`).
fn clear_step(bits: &mut [u64], step: Step, npages: u64) {
    if let Some(run) = step.pages() {
        for p in run.first..run.end().min(npages) {
            clear(bits, p);
        }
    }
}

/// The record length of `step`, by the format: HEADER 60, MEMORY 36 + data, DEVICE_REGS
/// 28 + regs_len, END 44.
fn record_len(step: Step) -> u64 {
    match step {
        Step::Header => 60,
        Step::Memory { len, .. } => 36 + len as u64,
        Step::Regs => 28 + u64::from(REGS_LEN),
        Step::End => 44,
    }
}

/// Runs `plan` over `bits` frozen but for the bits of sent pages, until `next()` says `None`;
/// returns the steps and the bytes of their records.
fn drain(plan: &PreCopyPlan, bits: &[u64]) -> (Vec<Step>, u64) {
    let mut plan = *plan;
    let mut bits = bits.to_vec();
    let mut steps = Vec::new();
    let mut bytes = 0;
    while let Some(step) = plan.next(&bits).unwrap() {
        assert_eq!(step.record_bytes(REGS_LEN), Ok(record_len(step)));
        clear_step(&mut bits, step, plan.npages());
        bytes += record_len(step);
        plan.advance(step).unwrap();
        steps.push(step);
        assert!(steps.len() < 1_000_000, "no end");
    }
    if plan.is_stop_copy() {
        assert!(plan.is_done());
    }
    (steps, bytes)
}

/// Runs `plan` in STOP_COPY (entered now if it is not yet) over frozen `bits` to the end.
fn drain_stop(plan: &PreCopyPlan, bits: &[u64]) -> (Vec<Step>, u64) {
    let mut plan = *plan;
    plan.enter_stop_copy();
    drain(&plan, bits)
}

/// Moves `plan` through its HEADER and initial pass with no page dirty.
fn past_initial(plan: &mut PreCopyPlan) {
    let none = vec![0u64; plan.words()];
    while matches!(plan.phase(), Phase::Header | Phase::Initial { .. }) {
        let step = plan.next(&none).unwrap().unwrap();
        plan.advance(step).unwrap();
    }
}

#[test]
fn record_sizes() {
    assert_eq!(HEADER_BYTES, 60);
    assert_eq!(END_BYTES, 44);
    assert_eq!(memory_bytes(0), Ok(36));
    assert_eq!(memory_bytes(4096), Ok(4132));
    assert_eq!(memory_bytes(u64::MAX - 35), Err(EncodeError::Oversized));
    assert_eq!(regs_bytes(0), Ok(28));
    assert_eq!(regs_bytes(REGS_LEN), Ok(52));
    assert_eq!(regs_bytes(256), Ok(284));
    assert_eq!(regs_bytes(257), Err(EncodeError::Oversized));
    assert_eq!(MAX_RUN_PAGES, 64);
    assert_eq!(PAGE_SIZE, 4096);
    assert_eq!(Step::Header.record_bytes(REGS_LEN), Ok(60));
    assert_eq!(Step::Regs.record_bytes(REGS_LEN), Ok(52));
    assert_eq!(Step::Regs.record_bytes(300), Err(EncodeError::Oversized));
    assert_eq!(Step::End.record_bytes(REGS_LEN), Ok(44));
    let step = memory(0, MAX_CHUNK);
    assert_eq!(step.record_bytes(REGS_LEN), Ok(SCRATCH_LEN as u64));
}

#[test]
fn initial_pass_formula() {
    let chunk = MAX_CHUNK as u64;
    assert_eq!(initial_pass_bytes(MIB16, 0), Ok(64 * 36 + MIB16));
    assert_eq!(initial_pass_bytes(MIB16, 63 * chunk), Ok(36 + chunk));
    assert_eq!(initial_pass_bytes(MIB16, MIB16), Ok(0));
    assert_eq!(initial_pass_bytes(MIB16, u64::MAX), Ok(0));
    assert_eq!(initial_pass_bytes(0, 0), Ok(0));
    // Partial last chunk and partial last page.
    assert_eq!(initial_pass_bytes(chunk + 100, 0), Ok(2 * 36 + chunk + 100));
    assert_eq!(initial_pass_bytes(chunk + 100, chunk), Ok(36 + 100));
    assert_eq!(initial_pass_bytes(1, 0), Ok(37));
    // The whole initial pass of a stream is its stop-copy stream's memory.
    for mem in [0, 1, 4095, 4096, chunk, chunk + 1, 5 * chunk + 12345] {
        assert_eq!(
            HEADER_BYTES + initial_pass_bytes(mem, 0).unwrap() + 52 + 44,
            stream_len(bochs(mem as usize), REGS_LEN).unwrap()
        );
    }
    assert_eq!(initial_pass_bytes(u64::MAX, 0), Err(EncodeError::Oversized));
}

/// The figures of the design note (section 3.4) for 16 MiB of VRAM.
#[test]
fn sixteen_mib_figures() {
    let mut plan = PreCopyPlan::new(MIB16);
    assert_eq!(plan.npages(), 4096);
    assert_eq!(plan.words(), 64);
    let mut bits = vec![0u64; plan.words()];

    // At PRE_COPY entry: the HEADER and the whole initial pass; MIG_DATA_SIZE is today's
    // stop-copy stream length.
    assert_eq!(plan.initial_bytes(), Ok(16_779_580));
    assert_eq!(plan.dirty_bytes(&bits), Ok(0));
    assert_eq!(plan.stop_copy_bytes(&bits, REGS_LEN), Ok(16_779_676));
    assert_eq!(stream_len(bochs(MIB16 as usize), REGS_LEN), Ok(16_779_676));

    // After the HEADER and one chunk, a dirty page behind the pass counts, one ahead does not.
    for _ in 0..2 {
        let step = plan.next(&bits).unwrap().unwrap();
        plan.advance(step).unwrap();
    }
    assert_eq!(plan.phase(), Phase::Initial { offset: 1 << 18 });
    assert_eq!(plan.initial_bytes(), Ok(63 * (36 + (1 << 18))));
    set(&mut bits, 3);
    set(&mut bits, 64);
    assert_eq!(plan.dirty_bytes(&bits), Ok(4132));
    assert_eq!(
        plan.stop_copy_bytes(&bits, REGS_LEN),
        Ok(63 * (36 + (1 << 18)) + 4132 + 52 + 44)
    );
    bits.fill(0);

    // After the initial pass: one dirty page is 4132 bytes, a 64-page run 262 180.
    past_initial(&mut plan);
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 0 });
    assert_eq!(plan.initial_bytes(), Ok(0));
    assert_eq!(plan.next(&bits), Ok(None));
    set(&mut bits, 1000);
    assert_eq!(plan.dirty_bytes(&bits), Ok(4132));
    assert_eq!(plan.stop_copy_bytes(&bits, REGS_LEN), Ok(4132 + 96));
    for p in 2000..2064 {
        set(&mut bits, p);
    }
    assert_eq!(plan.dirty_bytes(&bits), Ok(4132 + 262_180));
    assert_eq!(262_180, SCRATCH_LEN as u64);
    // 65 pages are two runs.
    set(&mut bits, 2064);
    assert_eq!(plan.dirty_bytes(&bits), Ok(2 * 4132 + 262_180));
    assert_eq!(plan.next(&bits), Ok(Some(memory(1000 * 4096, 4096))));
}

#[test]
fn runs() {
    let bits = bitmap(200, [3, 4, 5, 10, 63, 64, 65, 66, 130]);
    assert_eq!(next_run(&bits, 200, 0, 200), Some(span(3, 3)));
    assert_eq!(next_run(&bits, 200, 4, 200), Some(span(4, 2)));
    assert_eq!(next_run(&bits, 200, 6, 200), Some(span(10, 1)));
    // Across a word boundary, and cut at the limit.
    assert_eq!(next_run(&bits, 200, 11, 200), Some(span(63, 4)));
    assert_eq!(next_run(&bits, 200, 11, 65), Some(span(63, 2)));
    assert_eq!(next_run(&bits, 200, 11, 63), None);
    assert_eq!(next_run(&bits, 200, 67, 200), Some(span(130, 1)));
    assert_eq!(next_run(&bits, 200, 131, 200), None);
    assert_eq!(next_run(&bits, 200, 131, u64::MAX), None);
    // Pages at or beyond `npages` do not exist; nor do missing words.
    assert_eq!(next_run(&bits, 130, 67, 200), None);
    assert_eq!(next_run(&bits, 66, 11, 200), Some(span(63, 3)));
    assert_eq!(next_run(&bits[..1], 200, 11, 200), Some(span(63, 1)));
    assert_eq!(next_run(&[], 200, 0, 200), None);
    assert_eq!(next_run(&bits, 0, 0, 200), None);

    // At most 64 pages, without alignment.
    let all = vec![u64::MAX; 4];
    assert_eq!(next_run(&all, 256, 0, 256), Some(span(0, 64)));
    assert_eq!(next_run(&all, 256, 7, 256), Some(span(7, 64)));
    assert_eq!(next_run(&all, 256, 250, 256), Some(span(250, 6)));
    assert_eq!(next_run(&all, 100, 50, 256), Some(span(50, 50)));
    assert_eq!(
        run_bytes(&all, 256, 256 * 4096, 7, 256),
        Ok(4 * 36 + 249 * 4096)
    );
    assert_eq!(run_bytes(&all, 256, 256 * 4096, 0, 0), Ok(0));
    assert_eq!(
        run_bytes(&bits, 200, 200 * 4096, 0, 200),
        Ok(4 * 36 + 9 * 4096)
    );
    // Bits beyond the memory's pages are ignored, in the last word and beyond.
    let ragged = vec![u64::MAX; 3];
    assert_eq!(
        run_bytes(&ragged, 70, 70 * 4096, 0, u64::MAX),
        Ok(36 + 64 * 4096 + 36 + 6 * 4096)
    );
}

#[test]
fn last_partial_page() {
    let mem_size = 10 * 4096 + 100;
    let mut plan = PreCopyPlan::new(mem_size);
    assert_eq!(plan.npages(), 11);
    assert_eq!(plan.initial_bytes(), Ok(60 + 36 + mem_size));
    let run = span(8, 3);
    assert_eq!(run.data_len(mem_size), Ok(2 * 4096 + 100));
    assert_eq!(span(10, 1).data_len(mem_size), Ok(100));
    assert_eq!(span(11, 1).data_len(mem_size), Err(EncodeError::OutOfRange));

    let mut bits = vec![0u64; plan.words()];
    assert_eq!(plan.next(&bits), Ok(Some(Step::Header)));
    plan.advance(Step::Header).unwrap();
    let chunk = memory(0, mem_size as usize);
    assert_eq!(plan.next(&bits), Ok(Some(chunk)));
    assert_eq!(chunk.pages(), Some(span(0, 11)));
    plan.advance(chunk).unwrap();
    assert_eq!(plan.initial_bytes(), Ok(0));

    set(&mut bits, 10);
    assert_eq!(plan.dirty_bytes(&bits), Ok(136));
    let step = memory(10 * 4096, 100);
    assert_eq!(plan.next(&bits), Ok(Some(step)));
    assert_eq!(step.pages(), Some(span(10, 1)));
    // A whole page there would be beyond the memory.
    let mut wrong = plan;
    assert_eq!(
        wrong.advance(memory(10 * 4096, 4096)),
        Err(EncodeError::UnexpectedRecord)
    );
    assert_eq!(wrong, plan);
    plan.advance(step).unwrap();
    // The cursor wrapped around.
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 0 });

    set(&mut bits, 9);
    assert_eq!(plan.dirty_bytes(&bits), Ok(36 + 4096 + 100));
    assert_eq!(plan.next(&bits), Ok(Some(memory(9 * 4096, 4196))));
    // Bits past the last page are not pages.
    bits[0] = !0 << 11;
    assert_eq!(plan.dirty_bytes(&bits), Ok(0));
    assert_eq!(plan.next(&bits), Ok(None));
}

#[test]
fn empty_memory() {
    let mut plan = PreCopyPlan::new(0);
    assert_eq!(plan.npages(), 0);
    assert_eq!(plan.words(), 0);
    assert_eq!(plan.initial_bytes(), Ok(60));
    assert_eq!(plan.dirty_bytes(&[]), Ok(0));
    assert_eq!(
        plan.stop_copy_bytes(&[], REGS_LEN),
        stream_len(bochs(0), REGS_LEN)
    );
    assert_eq!(plan.next(&[]), Ok(Some(Step::Header)));
    plan.advance(Step::Header).unwrap();
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 0 });
    assert_eq!(plan.next(&[u64::MAX]), Ok(None));
    assert_eq!(plan.stop_copy_bytes(&[u64::MAX], REGS_LEN), Ok(96));
    plan.enter_stop_copy();
    assert_eq!(plan.next(&[u64::MAX]), Ok(Some(Step::Regs)));
    plan.advance(Step::Regs).unwrap();
    assert_eq!(plan.stop_copy_bytes(&[], REGS_LEN), Ok(44));
    assert_eq!(plan.next(&[]), Ok(Some(Step::End)));
    plan.advance(Step::End).unwrap();
    assert!(plan.is_done());
    assert_eq!(plan.next(&[]), Ok(None));
    assert_eq!(plan.stop_copy_bytes(&[], REGS_LEN), Ok(0));
    assert_eq!(plan.advance(Step::End), Err(EncodeError::UnexpectedRecord));

    // STOP_COPY before the HEADER was read.
    let mut plan = PreCopyPlan::new(0);
    plan.enter_stop_copy();
    let (steps, bytes) = drain(&plan, &[]);
    assert_eq!(steps, [Step::Header, Step::Regs, Step::End]);
    assert_eq!(bytes, 60 + 52 + 44);
}

/// Laps: runs never cross the lap's start nor the end of the memory, and the lap takes them in
/// order from its start, wrapping around once.
#[test]
fn laps() {
    let npages = 200;
    let mem_size = npages * 4096;
    // Runs across the lap start (49 | 50) and across the end of the memory (199 | 0).
    let bits = bitmap(npages, [0, 1, 47, 48, 49, 50, 51, 120, 199]);
    let mut lap = Lap::new(50);
    let mut got = Vec::new();
    let mut b = bits.clone();
    while let Some(run) = lap.next_run(&b, npages) {
        for p in run.first..run.end() {
            clear(&mut b, p);
        }
        lap.advance(run, npages).unwrap();
        got.push((run.first, run.pages));
    }
    assert_eq!(got, [(50, 2), (120, 1), (199, 1), (0, 2), (47, 3)]);
    assert!(lap.wrapped());
    assert_eq!(lap.cursor(), 50);
    assert_eq!(lap.start(), 50);
    assert_eq!(
        lap_bytes(&bits, npages, mem_size, 50),
        Ok(5 * 36 + 9 * 4096)
    );
    // From 0 the same pages make fewer runs: 199 | 0 is still the end.
    assert_eq!(lap_bytes(&bits, npages, mem_size, 0), Ok(4 * 36 + 9 * 4096));
    // From the end of the memory a lap is one from 0.
    assert_eq!(
        lap_bytes(&bits, npages, mem_size, npages),
        lap_bytes(&bits, npages, mem_size, 0)
    );

    // Without clearing, the lap still moves on: the cursor never goes back.
    let mut lap = Lap::new(50);
    let run = lap.next_run(&bits, npages).unwrap();
    lap.advance(run, npages).unwrap();
    assert_eq!(lap.next_run(&bits, npages), Some(span(120, 1)));
    // Runs that cannot be next: behind the cursor, across the start, empty.
    for bad in [span(40, 20), span(52, 0), span(199, 2)] {
        let before = lap;
        assert_eq!(lap.advance(bad, npages), Err(EncodeError::UnexpectedRecord));
        assert_eq!(lap, before);
    }
}

/// STOP_COPY after pre-copy: the rest of the initial pass, one lap of dirty runs from the
/// dirty cursor, DEVICE_REGS and END; bits set behind the sweep are not sent.
#[test]
fn stop_copy_after_pre_copy() {
    let mem_size = 3 * MAX_CHUNK as u64;
    let npages = 192;
    // Switch-over in the middle of the initial pass: the dirty pages behind it come after the
    // rest of it, from page 0 on; the pages ahead of it are part of it.
    let mut plan = PreCopyPlan::new(mem_size);
    let bits = bitmap(npages, [5, 6, 100]);
    for _ in 0..2 {
        let step = plan.next(&bits).unwrap().unwrap();
        plan.advance(step).unwrap();
    }
    plan.enter_stop_copy();
    assert!(plan.is_stop_copy());
    assert_eq!(plan.phase(), Phase::Initial { offset: 1 << 18 });
    let (steps, bytes) = drain(&plan, &bits);
    let chunk = |i: u64| memory(i << 18, MAX_CHUNK);
    assert_eq!(
        steps,
        [
            chunk(1),
            chunk(2),
            memory(5 * 4096, 2 * 4096),
            Step::Regs,
            Step::End
        ]
    );
    assert_eq!(bytes, plan.stop_copy_bytes(&bits, REGS_LEN).unwrap());
    assert_eq!(bytes, 2 * (36 + (1 << 18)) + 36 + 8192 + 52 + 44);

    // Switch-over after the initial pass: the lap starts at the dirty cursor.
    let mut plan = PreCopyPlan::new(mem_size);
    past_initial(&mut plan);
    let mut bits = bitmap(npages, [10, 11, 150]);
    let step = plan.next(&bits).unwrap().unwrap();
    assert_eq!(step.pages(), Some(span(10, 2)));
    clear_step(&mut bits, step, npages);
    plan.advance(step).unwrap();
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 12 });
    set(&mut bits, 3);
    set(&mut bits, 12);
    plan.enter_stop_copy();
    let Phase::Lap(lap) = plan.phase() else {
        panic!("not in the lap");
    };
    assert_eq!((lap.start(), lap.cursor(), lap.wrapped()), (12, 12, false));
    // Entering twice changes nothing.
    let before = plan;
    plan.enter_stop_copy();
    assert_eq!(plan, before);
    assert_eq!(
        plan.stop_copy_bytes(&bits, REGS_LEN),
        Ok(3 * 4132 + 52 + 44)
    );
    let order: Vec<_> = drain(&plan, &bits)
        .0
        .iter()
        .filter_map(|s| s.pages().map(|r| r.first))
        .collect();
    assert_eq!(order, [12, 150, 3]);

    // The sweep passes pages 12 and 150; then pages are dirtied behind it and ahead of it.
    for _ in 0..2 {
        let step = plan.next(&bits).unwrap().unwrap();
        clear_step(&mut bits, step, npages);
        plan.advance(step).unwrap();
    }
    set(&mut bits, 13); // Behind the sweep: not sent.
    set(&mut bits, 100); // Behind the sweep: not sent.
    set(&mut bits, 4); // Ahead, after the wrap: sent.
    assert_eq!(
        plan.stop_copy_bytes(&bits, REGS_LEN),
        Ok(36 + 2 * 4096 + 52 + 44)
    );
    let (steps, _) = drain(&plan, &bits);
    assert_eq!(steps, [memory(3 * 4096, 2 * 4096), Step::Regs, Step::End]);
}

#[test]
fn advance_checks_the_step() {
    let mem_size = MAX_CHUNK as u64 + 8192;
    let mut plan = PreCopyPlan::new(mem_size);
    let bad = |plan: &mut PreCopyPlan, step| {
        let before = *plan;
        assert_eq!(plan.advance(step), Err(EncodeError::UnexpectedRecord));
        assert_eq!(*plan, before);
    };
    bad(&mut plan, Step::Regs);
    bad(&mut plan, Step::End);
    bad(&mut plan, memory(0, 4096));
    plan.advance(Step::Header).unwrap();
    bad(&mut plan, Step::Header);
    bad(&mut plan, memory(0, 4096));
    bad(&mut plan, memory(4096, MAX_CHUNK));
    plan.advance(memory(0, MAX_CHUNK)).unwrap();
    bad(&mut plan, memory(MAX_CHUNK as u64, 4096));
    plan.advance(memory(MAX_CHUNK as u64, 8192)).unwrap();
    // Dirty runs: whole pages, 1 to 64 of them, within the memory; no REGS or END in PRE_COPY.
    bad(&mut plan, Step::Regs);
    bad(&mut plan, Step::End);
    bad(&mut plan, Step::Header);
    bad(&mut plan, memory(100, 4096));
    bad(&mut plan, memory(0, 100));
    bad(&mut plan, memory(0, 0));
    bad(&mut plan, memory(0, MAX_CHUNK + 4096));
    bad(&mut plan, memory(66 * 4096, 4096));
    bad(&mut plan, memory(!4095, 4096));
    plan.advance(memory(65 * 4096, 4096)).unwrap();
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 0 });
    plan.advance(memory(0, MAX_CHUNK)).unwrap();
    assert_eq!(plan.phase(), Phase::Dirty { cursor: 64 });
    plan.enter_stop_copy();
    // In the lap, a run behind the cursor that does not end by the lap start is refused.
    bad(&mut plan, memory(0, 65 * 4096));
    bad(&mut plan, memory(60 * 4096, 8 * 4096));
    bad(&mut plan, Step::End);
    plan.advance(memory(64 * 4096, 4096)).unwrap();
    plan.advance(memory(0, 4096)).unwrap();
    // After the wrap, nothing behind the cursor.
    bad(&mut plan, memory(0, 4096));
    bad(&mut plan, memory(65 * 4096, 4096));
    plan.advance(Step::Regs).unwrap();
    bad(&mut plan, Step::Regs);
    bad(&mut plan, memory(4096, 4096));
    plan.advance(Step::End).unwrap();
    assert!(plan.is_done());
    bad(&mut plan, Step::End);
    bad(&mut plan, Step::Header);
}

/// The reference: the dirty runs of a walk over the list of pages `pages`, one page at a time.
/// A run goes on while the next page in the list is set, is the next page of the memory, and the
/// run has fewer than 64 pages.
fn reference_walk(bits: &[u64], pages: impl IntoIterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut open = false;
    for p in pages {
        if !get(bits, p) {
            open = false;
            continue;
        }
        match runs.last_mut() {
            Some((first, pages)) if open && *first + *pages == p && *pages < 64 => *pages += 1,
            _ => {
                runs.push((p, 1));
                open = true;
            }
        }
    }
    runs
}

/// The reference lap from `start` in `n` pages: the walk over `[start, n)`, then `[0, start)`.
fn reference_lap(bits: &[u64], n: u64, start: u64) -> Vec<(u64, u64)> {
    let start = start.min(n);
    reference_walk(bits, (start..n).chain(0..start))
}

/// The bytes of the MEMORY records of `runs` in a memory of `mem_size` bytes.
fn reference_bytes(runs: &[(u64, u64)], mem_size: u64) -> u64 {
    runs.iter()
        .map(|&(first, pages)| 36 + ((first + pages) * 4096).min(mem_size) - first * 4096)
        .sum()
}

/// Returns a random bitmap for `npages` pages: random density, runs of random lengths, and
/// garbage beyond `npages`.
fn random_bits(rng: &mut XorShift, npages: u64) -> Vec<u64> {
    let words = npages.div_ceil(64) as usize;
    let mut bits = vec![0u64; words];
    match rng.below(4) {
        0 => bits.iter_mut().for_each(|w| *w = rng.next()),
        1 => bits
            .iter_mut()
            .for_each(|w| *w = rng.next() & rng.next() & rng.next()),
        _ => {
            for _ in 0..rng.below(8) {
                if npages == 0 {
                    break;
                }
                let first = rng.below(npages as usize) as u64;
                let len = 1 + rng.below(150) as u64;
                for p in first..(first + len).min(npages) {
                    set(&mut bits, p);
                }
            }
        }
    }
    if npages % 64 != 0 {
        // Bits past the last page: they are not pages.
        if let Some(last) = bits.last_mut() {
            *last |= rng.next() & (!0u64 << (npages % 64));
        }
    }
    bits
}

/// The steps the reference expects from `plan` over frozen `bits` until `next()` says `None`:
/// the rest of the HEADER and initial pass, then the rest of the lap of dirty runs (a lap from 0
/// over the bits the initial pass left, after it), then in STOP_COPY DEVICE_REGS and END. With
/// `stop`, STOP_COPY is entered now: from the dirty cursor, the lap is a lap from there.
fn reference_drain(plan: &PreCopyPlan, bits: &[u64], mem_size: u64, stop: bool) -> Vec<Step> {
    let n = plan.npages();
    let mut steps = Vec::new();
    let mut bits = bits.to_vec();
    let runs = match plan.phase() {
        Phase::Header | Phase::Initial { .. } => {
            let (mut offset, first_page) = match plan.phase() {
                Phase::Initial { offset } => (offset, offset / 4096),
                _ => {
                    steps.push(Step::Header);
                    (0, 0)
                }
            };
            while offset < mem_size {
                let len = (mem_size - offset).min(MAX_CHUNK as u64);
                steps.push(Step::Memory {
                    offset,
                    len: len as usize,
                });
                offset += len;
            }
            // The initial pass sends the pages ahead of it, and clears their bits.
            for p in first_page..n {
                clear(&mut bits, p);
            }
            reference_lap(&bits, n, 0)
        }
        Phase::Dirty { cursor } => reference_lap(&bits, n, cursor),
        Phase::Lap(lap) if lap.wrapped() => reference_walk(&bits, lap.cursor()..lap.start()),
        Phase::Lap(lap) => reference_walk(&bits, (lap.cursor()..n).chain(0..lap.start())),
        Phase::End => return vec![Step::End],
        Phase::Done => return vec![],
    };
    for (first, pages) in runs {
        let end = ((first + pages) * 4096).min(mem_size);
        steps.push(memory(first * 4096, (end - first * 4096) as usize));
    }
    if stop || plan.is_stop_copy() {
        steps.push(Step::Regs);
        steps.push(Step::End);
    }
    steps
}

/// The first page the initial pass of `plan` has not sent yet.
fn plan_initial_page(plan: &PreCopyPlan) -> u64 {
    match plan.phase() {
        Phase::Header => 0,
        Phase::Initial { offset } => offset / 4096,
        _ => plan.npages(),
    }
}

/// For random bitmaps, one lap yields exactly the runs of the per-page reference walk, and
/// `lap_bytes` and `run_bytes` count exactly their bytes.
#[test]
fn laps_match_the_reference() {
    let mut rng = XorShift(0x0123_4567_89AB_CDEF);
    for i in 0..3000 {
        let npages = match i % 3 {
            0 => rng.below(70) as u64,
            1 => rng.below(300) as u64,
            _ => rng.below(2000) as u64,
        };
        // The last page may be partial.
        let mem_size = if npages == 0 {
            0
        } else {
            npages * 4096 - rng.below(4096) as u64
        };
        let bits = random_bits(&mut rng, npages);
        let start = rng.below(npages as usize + 2) as u64;
        let expect = reference_lap(&bits, npages, start);

        // Emission, clearing the bits of each run.
        let mut lap = Lap::new(start);
        let mut b = bits.clone();
        let mut got = Vec::new();
        while let Some(run) = lap.next_run(&b, npages) {
            assert!(run.pages >= 1 && run.pages <= 64);
            for p in run.first..run.end() {
                assert!(get(&b, p));
                clear(&mut b, p);
            }
            lap.advance(run, npages).unwrap();
            got.push((run.first, run.pages));
        }
        assert_eq!(got, expect, "npages {npages} start {start}");
        let bytes = reference_bytes(&expect, mem_size);
        assert_eq!(lap_bytes(&bits, npages, mem_size, start), Ok(bytes));

        // Emission without clearing gives the same runs.
        let mut lap = Lap::new(start);
        let mut again = Vec::new();
        while let Some(run) = lap.next_run(&bits, npages) {
            lap.advance(run, npages).unwrap();
            again.push((run.first, run.pages));
        }
        assert_eq!(again, expect);

        // A linear range is a lap from 0 of the bits in it.
        let from = rng.below(npages as usize + 1) as u64;
        let limit = from + rng.below(npages as usize + 1) as u64;
        let mut part = vec![0u64; bits.len()];
        for p in from..limit.min(npages) {
            if get(&bits, p) {
                set(&mut part, p);
            }
        }
        let expect = reference_bytes(&reference_lap(&part, npages, 0), mem_size);
        assert_eq!(run_bytes(&bits, npages, mem_size, from, limit), Ok(expect));
    }
}

/// For random bitmaps changed at random between steps: at every point, `initial_bytes() +
/// dirty_bytes()` are the bytes of the PRE_COPY steps until `None`, and `stop_copy_bytes()`
/// those of the STOP_COPY steps (entered then) until the end, for the bitmap of that point;
/// and the steps are the reference's.
#[test]
fn accounting_matches_emission() {
    let mut rng = XorShift(0xFEED_FACE_CAFE_BEEF);
    for round in 0..400 {
        let npages = match round % 4 {
            0 => rng.below(8) as u64,
            1 => rng.below(100) as u64,
            2 => 64 + rng.below(200) as u64,
            _ => 300 + rng.below(400) as u64,
        };
        let mem_size = if npages == 0 {
            0
        } else {
            npages * 4096 - rng.below(4096) as u64
        };
        let mut plan = PreCopyPlan::new(mem_size);
        assert_eq!(plan.npages(), npages);
        let mut bits = random_bits(&mut rng, npages);
        // Switch to STOP_COPY after this many steps, maybe before the HEADER.
        let switch = rng.below(40);
        let mut steps = 0;
        let mut nones = 0;
        loop {
            // The bitmap changes: a few pages, a run, a long run across the point where the
            // search for dirty runs goes on (where runs are split), or nothing.
            let search_at = match plan.phase() {
                Phase::Dirty { cursor } => cursor,
                Phase::Lap(lap) => lap.cursor(),
                _ => plan_initial_page(&plan),
            };
            match rng.below(5) {
                0 if npages > 0 => {
                    for _ in 0..rng.below(4) {
                        let p = rng.below(npages as usize) as u64;
                        if rng.below(3) == 0 {
                            clear(&mut bits, p);
                        } else {
                            set(&mut bits, p);
                        }
                    }
                }
                1 if npages > 0 => {
                    let first = rng.below(npages as usize) as u64;
                    for p in first..(first + rng.below(100) as u64).min(npages) {
                        set(&mut bits, p);
                    }
                }
                2 if npages > 0 => {
                    let first = search_at.saturating_sub(rng.below(80) as u64);
                    for p in first..(search_at + rng.below(80) as u64).min(npages) {
                        set(&mut bits, p);
                    }
                }
                _ => {}
            }

            let (pre, pre_bytes) = drain(&plan, &bits);
            let (stop, stop_bytes) = drain_stop(&plan, &bits);
            if !plan.is_stop_copy() {
                assert_eq!(
                    plan.initial_bytes().unwrap() + plan.dirty_bytes(&bits).unwrap(),
                    pre_bytes,
                    "round {round} phase {:?}",
                    plan.phase()
                );
                assert_eq!(pre, reference_drain(&plan, &bits, mem_size, false));
            }
            assert_eq!(plan.stop_copy_bytes(&bits, REGS_LEN), Ok(stop_bytes));
            assert_eq!(stop, reference_drain(&plan, &bits, mem_size, true));
            if plan.is_done() {
                break;
            }

            if steps == switch {
                plan.enter_stop_copy();
            }
            match plan.next(&bits).unwrap() {
                Some(step) => {
                    clear_step(&mut bits, step, npages);
                    plan.advance(step).unwrap();
                    steps += 1;
                }
                None => {
                    // PRE_COPY has nothing to send; the guest writes more, or STOP_COPY comes.
                    assert!(!plan.is_stop_copy());
                    assert_eq!(plan.initial_bytes(), Ok(0));
                    assert_eq!(plan.dirty_bytes(&bits), Ok(0));
                    nones += 1;
                    if nones > 3 {
                        plan.enter_stop_copy();
                    }
                }
            }
            assert!(steps < 100_000);
        }
    }
}

/// A sink that writes into a [`VecSink`] and accepts END only once every page was written, as
/// the driver's resume file does.
struct CoveredSink {
    /// The device memory and the calls.
    inner: VecSink,
    /// Which pages were written.
    coverage: Coverage,
    /// The coverage bitmap.
    written: Vec<u64>,
}

impl Sink for CoveredSink {
    fn header(&mut self, header: &Header) -> Result<(), SinkError> {
        self.inner.header(header)
    }

    fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError> {
        self.inner.regs(regs)
    }

    fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        self.inner.memory(offset, data)?;
        self.coverage
            .mark(&mut self.written, offset, data.len() as u64)
            .map_err(|_| SinkError(errno::EINVAL))
    }

    fn end(&mut self) -> Result<(), SinkError> {
        if !self.coverage.complete() {
            return Err(SinkError(errno::ENODATA));
        }
        self.inner.end()
    }
}

/// Decodes `stream` for a device of `mem_size` bytes into a sink that checks coverage.
fn decode_covered(mem_size: u64, stream: &[u8]) -> (Result<(), DecodeError>, CoveredSink) {
    let identity = bochs(mem_size as usize);
    let run = DecodeRun::new(identity);
    let coverage = Coverage::new(mem_size);
    let mut sink = CoveredSink {
        inner: VecSink::new(mem_size as usize),
        written: vec![0; coverage.words()],
        coverage,
    };
    let (mut decoder, mut scratch) = (run.decoder, run.scratch);
    // In uneven pieces, as QEMU's reads and writes cut it.
    let mut rest = stream;
    let mut cut = 1usize;
    while !rest.is_empty() {
        let (piece, later) = rest.split_at(cut.min(rest.len()));
        if let Err(e) = decoder.feed(piece, &mut scratch, &SoftCrc32c, &mut sink) {
            return (Err(e), sink);
        }
        rest = later;
        cut = cut * 7 % 100_003 + 1;
    }
    (decoder.finish(), sink)
}

/// The guest writes `len` pages from page `first` (up to the end of the memory): new contents,
/// and their dirty bits.
fn guest_writes(
    rng: &mut XorShift,
    mem: &mut [u8],
    bits: &mut [u64],
    npages: u64,
    first: u64,
    len: u64,
) {
    for p in first..(first + len).min(npages) {
        let start = (p * 4096) as usize;
        let end = (start + 4096).min(mem.len());
        let at = start + rng.below(end - start);
        mem[at] = mem[at].wrapping_add(1 + rng.below(255) as u8);
        mem[start] ^= rng.next() as u8 | 1;
        set(bits, p);
    }
}

/// Whole streams: PRE_COPY with the guest writing between steps, then STOP_COPY, encoded with
/// the plan and the `Encoder`, decode to the source's final memory and registers, with
/// coverage complete at END, and the plan's counts are the stream's bytes.
#[test]
fn pre_copy_stream_end_to_end() {
    let mut rng = XorShift(0x5EED_0FC0_FFEE);
    let sizes = [
        0,
        100,
        4096,
        3 * MAX_CHUNK as u64 + 5 * 4096 + 123,
        2 * MAX_CHUNK as u64,
    ];
    for (i, &mem_size) in sizes.iter().cycle().take(20).enumerate() {
        let identity = bochs(mem_size as usize);
        let mut dev = VecSource {
            mem: rng.bytes(mem_size as usize),
            regs: rng.bytes(REGS_LEN as usize),
            fail: None,
        };
        let mut plan = PreCopyPlan::new(mem_size);
        let npages = plan.npages();
        let mut bits = vec![0u64; plan.words()];
        let mut encoder = Encoder::new(identity, REGS_LEN);
        let mut out = vec![0u8; SCRATCH_LEN];
        let crc = SoftCrc32c;
        let mut stream = Vec::new();
        // The MIG_DATA_SIZE at entry is the stop-copy stream's length.
        assert_eq!(
            plan.stop_copy_bytes(&bits, REGS_LEN).ok(),
            stream_len(identity, REGS_LEN).ok()
        );

        // PRE_COPY: the guest writes between the steps (single pages and runs, some at the end
        // of the memory); switch-over after some steps, or once the stream has caught up.
        let switch = [0, 1, 3, 8, 1000][i % 5];
        let mut nones = 0;
        let mut steps = 0;
        while steps < switch && nones < 3 {
            if npages > 0 {
                for _ in 0..rng.below(3) {
                    let first = match rng.below(4) {
                        0 => npages - 1,
                        _ => rng.below(npages as usize) as u64,
                    };
                    let len = [1, 2, 64, 70][rng.below(4)];
                    guest_writes(&mut rng, &mut dev.mem, &mut bits, npages, first, len);
                }
            }
            let before = stream.len() as u64;
            let Some(step) = plan.next(&bits).unwrap() else {
                assert_eq!(plan.initial_bytes(), Ok(0));
                assert_eq!(plan.dirty_bytes(&bits), Ok(0));
                nones += 1;
                continue;
            };
            let ahead = plan.initial_bytes().unwrap() + plan.dirty_bytes(&bits).unwrap();
            clear_step(&mut bits, step, npages);
            let n = step.encode(&mut encoder, &mut dev, &crc, &mut out).unwrap();
            assert_eq!(n as u64, step.record_bytes(REGS_LEN).unwrap());
            stream.extend_from_slice(&out[..n]);
            plan.advance(step).unwrap();
            steps += 1;
            // What was to come is what came, and what is still to come.
            assert_eq!(
                ahead,
                stream.len() as u64 - before
                    + plan.initial_bytes().unwrap()
                    + plan.dirty_bytes(&bits).unwrap()
            );
        }

        // STOP_COPY: the device is stopped; the rest of the stream is exactly what the plan
        // said.
        if npages > 0 {
            guest_writes(&mut rng, &mut dev.mem, &mut bits, npages, 0, 1);
        }
        plan.enter_stop_copy();
        let expect = plan.stop_copy_bytes(&bits, REGS_LEN).unwrap();
        let at_switch = stream.len() as u64;
        while let Some(step) = plan.next(&bits).unwrap() {
            clear_step(&mut bits, step, npages);
            let n = step.encode(&mut encoder, &mut dev, &crc, &mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
            plan.advance(step).unwrap();
        }
        assert!(plan.is_done() && encoder.is_done());
        assert_eq!(stream.len() as u64 - at_switch, expect);
        assert_eq!(encoder.tally().bytes, stream.len() as u64);
        assert!(bits.iter().all(|&w| w == 0), "a dirty page was not sent");

        let (result, sink) = decode_covered(mem_size, &stream);
        assert_eq!(result, Ok(()), "size {mem_size} switch {switch}");
        assert!(sink.coverage.complete());
        assert!(sink.inner.mem == dev.mem, "memory differs");
        assert_eq!(sink.inner.regs.as_deref(), Some(dev.regs.as_slice()));
        assert_eq!(sink.inner.calls.len() as u64, encoder.tally().records);
    }
}

/// A stream whose pre-copy part left out a page is refused at END: the coverage check holds
/// pre-copy streams to every byte.
#[test]
fn stream_without_a_page_is_refused() {
    let mem_size = 10 * 4096;
    let identity = bochs(mem_size as usize);
    let mut dev = VecSource {
        mem: vec![7; mem_size as usize],
        regs: vec![1; REGS_LEN as usize],
        fail: None,
    };
    let mut encoder = Encoder::new(identity, REGS_LEN);
    let mut out = vec![0u8; SCRATCH_LEN];
    let mut stream = Vec::new();
    for step in [Step::Header, memory(0, 9 * 4096), Step::Regs, Step::End] {
        let n = step
            .encode(&mut encoder, &mut dev, &SoftCrc32c, &mut out)
            .unwrap();
        stream.extend_from_slice(&out[..n]);
    }
    // Out of place, the encoder refuses a step.
    assert_eq!(
        Step::Header.encode(&mut encoder, &mut dev, &SoftCrc32c, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    let (result, _) = decode_covered(mem_size, &stream);
    assert_eq!(result, Err(DecodeError::Sink(SinkError(errno::ENODATA))));
}
