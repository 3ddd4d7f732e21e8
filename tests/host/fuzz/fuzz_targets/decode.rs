// SPDX-License-Identifier: GPL-2.0

//! Fuzzes the migration stream decoder.
//!
//! The input is a control header and a body:
//!
//! ```text
//! byte 0     bits 0-1 mode, bit 2 in-place API, bit 3 make the sink fail, bit 4 ivshmem,
//!            bit 5 fix CRCs after mutating (mode 2), bit 6 device memory size from the body's
//!            HEADER (modes 0 and 1)
//! byte 1     sink call that fails, if bit 3
//! byte 2     number n of piece-size bytes (mod 16)
//! n bytes    piece sizes (see `harness::DecodeParams::pieces`)
//! rest       body
//! ```
//!
//! Modes: 0 decodes the body as is, 1 decodes it after fixing its CRCs (so the fuzzer gets past
//! them), 2 encodes a valid stream from parameters in the body, mutates it as the body says and
//! decodes it. Every run decodes twice, in the chosen pieces and in one piece, and the results
//! must be identical; the harness sink panics if the decoder breaks a promise.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use qvp_stream::harness::{
    self,
    DecodeParams,
    Outcome,
    MAX_CHUNK,
    MAX_REGS_LEN,
    SCRATCH_LEN, //
};

/// Buffers reused across runs.
struct Buffers {
    /// Decoder scratch buffer.
    scratch: Vec<u8>,
    /// Encoder output.
    stream: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers {
        scratch: vec![0; SCRATCH_LEN],
        stream: vec![0; 2 * MAX_CHUNK],
    });
}

/// Device memory size in modes 0 and 1.
const RAW_MEM: usize = 4096;

/// Largest device memory size taken from the body's HEADER in modes 0 and 1.
const MAX_HEADER_MEM: u64 = 64 * 1024;

/// Offset of the HEADER's `mem_size` field in a stream: record header (24 bytes), then 16.
const HEADER_MEM_SIZE_AT: usize = 24 + 16;

/// Returns the device memory size for modes 0 and 1: with control bit 6, the one the stream's
/// HEADER (if it starts the body) claims, if at most [`MAX_HEADER_MEM`]; else [`RAW_MEM`].
///
/// So that real streams of any small size get past the memory size check.
fn raw_mem_size(ctl: u8, body: &[u8]) -> usize {
    let claimed = body
        .get(HEADER_MEM_SIZE_AT..HEADER_MEM_SIZE_AT + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    match claimed {
        Some(size) if ctl & 0x40 != 0 && size <= MAX_HEADER_MEM => size as usize,
        _ => RAW_MEM,
    }
}

/// Decodes `stream` with `params` and with one piece, checks that both agree and returns the
/// outcome, the device memory and the register blob.
fn decode_twice(
    stream: &[u8],
    params: DecodeParams<'_>,
    mem_size: usize,
    scratch: &mut [u8],
) -> (Outcome, Vec<u8>, [u8; MAX_REGS_LEN]) {
    let mut mem = vec![0u8; mem_size];
    let mut regs = [0u8; MAX_REGS_LEN];
    let outcome = harness::decode(stream, params, scratch, &mut mem, &mut regs);

    let whole = DecodeParams {
        pieces: &[],
        in_place: false,
        ..params
    };
    let mut mem2 = vec![0u8; mem_size];
    let mut regs2 = [0u8; MAX_REGS_LEN];
    let reference = harness::decode(stream, whole, scratch, &mut mem2, &mut regs2);
    assert_eq!(outcome, reference, "result depends on segmentation");
    assert!(
        mem == mem2 && regs == regs2,
        "state depends on segmentation"
    );
    (outcome, mem, regs)
}

/// A xorshift64 step.
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Returns `len` pseudo-random bytes from `seed`, eight per step.
fn random_bytes(len: usize, seed: &mut u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&xorshift(seed).to_le_bytes()[..chunk.len()]);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [ctl, fail_at, n, rest @ ..] = data else {
        return;
    };
    let (pieces, body) = rest.split_at(usize::from(n % 16).min(rest.len()));
    let kind = if ctl & 0x10 != 0 { 2 } else { 1 };
    let params = DecodeParams {
        kind,
        pieces,
        in_place: ctl & 0x04 != 0,
        fail_at: (ctl & 0x08 != 0).then_some(u32::from(*fail_at)),
    };

    BUFFERS.with_borrow_mut(|b| match ctl & 3 {
        0 => {
            decode_twice(body, params, raw_mem_size(*ctl, body), &mut b.scratch);
        }
        1 => {
            let mut stream = body.to_vec();
            harness::fix_crcs(&mut stream);
            decode_twice(&stream, params, raw_mem_size(*ctl, body), &mut b.scratch);
        }
        _ => {
            // Device parameters, then mutations of 3 bytes each.
            let [m0, m1, m2, r, s0, s1, mutations @ ..] = body else {
                return;
            };
            let mut mem_size = usize::from(u16::from_le_bytes([*m0, *m1]) % 4096);
            // Sometimes more than one MEMORY record, but rarely: large streams are slow.
            if m2 & 0xF0 == 0xF0 {
                mem_size += MAX_CHUNK;
            }
            let regs_len = usize::from(*r) % (MAX_REGS_LEN + 1);
            let mut seed = u64::from(u16::from_le_bytes([*s0, *s1])) | 1 << 32;
            let mem = random_bytes(mem_size, &mut seed);
            let regs = random_bytes(regs_len, &mut seed);

            let len = harness::encode(kind, &mem, &regs, &mut b.stream).expect("encoding failed");
            let mut stream = b.stream[..len].to_vec();
            let mut mutated = false;
            for m in mutations.chunks_exact(3) {
                let at = usize::from(u16::from_le_bytes([m[0], m[1]])) % (stream.len() + 1);
                match m[2] {
                    // Truncate.
                    0 => stream.truncate(at),
                    // Insert a byte.
                    1 => stream.insert(at, m[0]),
                    // Remove a byte.
                    2 if at < stream.len() => {
                        stream.remove(at);
                    }
                    x if at < stream.len() => stream[at] ^= x,
                    _ => continue,
                }
                mutated = true;
            }
            if ctl & 0x20 != 0 {
                harness::fix_crcs(&mut stream);
            }
            let (outcome, got_mem, got_regs) =
                decode_twice(&stream, params, mem_size, &mut b.scratch);
            if !mutated && params.fail_at.is_none() {
                assert_eq!(outcome.error, None, "valid stream rejected");
                assert!(got_mem == mem, "memory differs");
                assert!(got_regs[..regs_len] == regs[..], "registers differ");
            }
        }
    });
});
