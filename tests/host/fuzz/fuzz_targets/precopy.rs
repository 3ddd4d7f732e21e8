// SPDX-License-Identifier: GPL-2.0

//! Runs a pre-copy stream under a fuzzer-chosen schedule of guest writes, steps and switch-over:
//! at every point the plan's byte counts must be what its steps produce, and the whole stream
//! must decode to the source's final memory.
//!
//! The input is:
//!
//! ```text
//! byte 0      bits 0-3 memory size class
//! bytes 1-2   le16 memory size parameter
//! rest        operations, 3 bytes each: op, le16 argument
//! ```
//!
//! Operations (`op & 7`): 0 the guest writes page `arg`; 1 it writes `(op >> 3) * 4 + 1` pages
//! from page `arg` on; 2 it writes pages around the point where the search for dirty runs goes
//! on, `arg & 0xFF` before it and `arg >> 8` after it (runs are split there); 3 switch to
//! STOP_COPY; 4 to 7 send the next record, if there is one. Page numbers are taken modulo the
//! number of pages. Once in STOP_COPY the device is stopped: the guest writes nothing. After
//! the operations, the stream switches to STOP_COPY and runs to its end.
//!
//! After every operation, for the bitmap of that point frozen (but for the bits of sent pages,
//! which the sender clears): `initial_bytes() + dirty_bytes()` must be the bytes of the PRE_COPY
//! steps until there is nothing to send, `stop_copy_bytes()` those of the STOP_COPY steps until
//! END; every dirty run must consist of dirty pages, and in PRE_COPY after the initial pass the
//! runs must be those of a per-page walk from the dirty cursor. The stream must decode, END
//! included, to the source's final memory and registers.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use qvp_stream::harness::{
    CheckedDecoder,
    PreCopyStream,
    MAX_CHUNK,
    MAX_REGS_LEN,
    SCRATCH_LEN, //
};

/// The register blob length of bochs-display.
const REGS_LEN: usize = 24;

/// The most operations of one input.
const MAX_OPS: usize = 400;

/// Buffers reused across runs.
struct Buffers {
    /// One record.
    out: Vec<u8>,
    /// Decoder scratch buffer.
    scratch: Vec<u8>,
    /// The whole stream.
    stream: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers {
        out: vec![0; SCRATCH_LEN],
        scratch: vec![0; SCRATCH_LEN],
        stream: Vec::new(),
    });
}

/// Returns the device memory size for size class `class` and parameter `p`: mostly up to a few
/// hundred pages, the last one often partial; sometimes a few MAX_CHUNK pieces' worth.
fn mem_size(class: u8, p: u16) -> u64 {
    let p = u64::from(p);
    match class {
        0 => p % 3,
        1..=9 => p % (64 * 4096),
        10..=13 => p * 16,
        _ => p * 64 % (4 * MAX_CHUNK as u64),
    }
}

/// Returns whether page `p` is set in `bits`.
fn get(bits: &[u64], p: u64) -> bool {
    bits[(p / 64) as usize] >> (p % 64) & 1 != 0
}

/// Sets or clears page `p` in `bits`.
fn put(bits: &mut [u64], p: u64, on: bool) {
    let (w, b) = ((p / 64) as usize, p % 64);
    if on {
        bits[w] |= 1 << b;
    } else {
        bits[w] &= !(1 << b);
    }
}

/// The dirty runs of one lap from page `start` in `n` pages, by a walk over the list of pages
/// `[start, n)`, `[0, start)` one at a time: a run goes on while the next page in the list is
/// set, is the next page of the memory, and the run has fewer than 64 pages.
fn reference_lap(bits: &[u64], n: u64, start: u64) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut open = false;
    for p in (start..n).chain(0..start.min(n)) {
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

/// Runs `stream` over `bits`, frozen but for the bits of the pages it sends, until there is
/// nothing to send (PRE_COPY) or END (STOP_COPY); returns the bytes of the records and the
/// dirty runs, checking that they are dirty pages.
fn drain(stream: &PreCopyStream, bits: &[u64]) -> (u64, Vec<(u64, u64)>) {
    let mut stream = *stream;
    let mut bits = bits.to_vec();
    let mut bytes = 0;
    let mut runs = Vec::new();
    let initial = |s: &PreCopyStream| s.initial_bytes() > 0;
    while let Some(step) = stream.next(&bits) {
        let in_initial = initial(&stream);
        if let Some((first, pages)) = step.pages() {
            if !in_initial {
                assert!((1..=64).contains(&pages), "run of {pages} pages");
                runs.push((first, pages));
            }
            for p in first..(first + pages).min(stream.npages()) {
                assert!(in_initial || get(&bits, p), "clean page {p} in a dirty run");
                put(&mut bits, p, false);
            }
        }
        bytes += stream.record_bytes(step);
        stream.advance(step);
        assert!(runs.len() <= 1 << 20, "no end");
    }
    assert_eq!(
        stream.is_done(),
        stream.is_stop_copy(),
        "STOP_COPY ends with END"
    );
    (bytes, runs)
}

/// Checks the counts of `stream` against its steps for `bits` as they are.
fn check(stream: &PreCopyStream, bits: &[u64]) {
    if !stream.is_stop_copy() {
        let (bytes, runs) = drain(stream, bits);
        assert_eq!(
            stream.initial_bytes() + stream.dirty_bytes(bits),
            bytes,
            "PRE_COPY counts"
        );
        if let Some(cursor) = stream.dirty_cursor() {
            assert_eq!(runs, reference_lap(bits, stream.npages(), cursor), "runs");
        }
    }
    let mut stopped = *stream;
    stopped.enter_stop_copy();
    let (bytes, _) = drain(&stopped, bits);
    assert_eq!(stream.stop_copy_bytes(bits), bytes, "STOP_COPY counts");
    assert_eq!(stopped.stop_copy_bytes(bits), bytes, "STOP_COPY counts");
}

/// The guest writes page `p`: new contents and its dirty bit.
fn guest_write(mem: &mut [u8], bits: &mut [u64], p: u64, x: &mut u64) {
    let start = (p * 4096) as usize;
    let end = (start + 4096).min(mem.len());
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let at = start + (*x as usize) % (end - start);
    mem[at] = mem[at].wrapping_add(1 + (*x >> 32) as u8 % 255);
    put(bits, p, true);
}

/// Writes the next record of `stream` into `stream_bytes`, if there is one, clearing the dirty
/// bits of its pages first.
fn send(
    stream: &mut PreCopyStream,
    bits: &mut [u64],
    mem: &[u8],
    regs: &[u8],
    b: &mut Buffers,
) -> bool {
    let Some(step) = stream.next(bits) else {
        return false;
    };
    if let Some((first, pages)) = step.pages() {
        for p in first..(first + pages).min(stream.npages()) {
            put(bits, p, false);
        }
    }
    let n = stream.write(step, mem, regs, &mut b.out);
    b.stream.extend_from_slice(&b.out[..n]);
    assert_eq!(stream.written(), b.stream.len() as u64);
    true
}

fuzz_target!(|data: &[u8]| {
    let [ctl, m0, m1, rest @ ..] = data else {
        return;
    };
    let mem_size = mem_size(ctl & 15, u16::from_le_bytes([*m0, *m1]));
    let mut stream = PreCopyStream::new(mem_size, REGS_LEN as u32);
    let npages = stream.npages();
    let mut bits = vec![0u64; stream.words()];
    let mut x = u64::from_le_bytes([*ctl, *m0, *m1, 1, 2, 3, 4, 5]) | 1;
    let mut mem: Vec<u8> = (0..mem_size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7) | 1)
        .collect();
    let regs: Vec<u8> = (0..REGS_LEN as u8).map(|i| i ^ 0x5A).collect();

    BUFFERS.with_borrow_mut(|b| {
        b.stream.clear();
        check(&stream, &bits);
        for op in rest.chunks_exact(3).take(MAX_OPS) {
            let arg = u16::from_le_bytes([op[1], op[2]]);
            let writes = npages > 0 && !stream.is_stop_copy();
            match op[0] & 7 {
                0 if writes => guest_write(&mut mem, &mut bits, u64::from(arg) % npages, &mut x),
                1 if writes => {
                    let first = u64::from(arg) % npages;
                    let len = u64::from(op[0] >> 3) * 4 + 1;
                    for p in first..(first + len).min(npages) {
                        guest_write(&mut mem, &mut bits, p, &mut x);
                    }
                }
                2 if writes => {
                    let at = stream.dirty_cursor().unwrap_or(0);
                    let first = at.saturating_sub(u64::from(arg & 0xFF));
                    for p in first..(at + u64::from(arg >> 8)).min(npages) {
                        guest_write(&mut mem, &mut bits, p, &mut x);
                    }
                }
                3 => stream.enter_stop_copy(),
                4..=7 => {
                    send(&mut stream, &mut bits, &mem, &regs, b);
                }
                _ => {}
            }
            check(&stream, &bits);
        }

        // STOP_COPY to the end: exactly the bytes the plan said.
        stream.enter_stop_copy();
        let expect = stream.stop_copy_bytes(&bits);
        let at_switch = b.stream.len() as u64;
        while send(&mut stream, &mut bits, &mem, &regs, b) {}
        assert!(stream.is_done());
        assert_eq!(b.stream.len() as u64 - at_switch, expect, "STOP_COPY bytes");
        assert!(bits.iter().all(|&w| w == 0), "a dirty page was not sent");

        // The destination gets the source's final state.
        let mut got_mem = vec![0u8; mem.len()];
        let mut got_regs = [0u8; MAX_REGS_LEN];
        let mut decoder = CheckedDecoder::new(1, &mut got_mem, &mut got_regs, None);
        decoder.feed(&b.stream, &mut b.scratch, false);
        let outcome = decoder.finish();
        assert_eq!(outcome.error, None, "stream rejected");
        assert!(got_regs[..REGS_LEN] == regs[..], "registers differ");
        if got_mem != mem {
            let at = got_mem.iter().zip(&mem).position(|(a, b)| a != b);
            panic!("memory differs at {at:x?} of {mem_size:#x}");
        }
    });
});
