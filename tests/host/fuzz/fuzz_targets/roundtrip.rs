// SPDX-License-Identifier: GPL-2.0

//! Encodes a random device image and decodes it through a random segmentation: the decoder must
//! give back exactly the image the encoder was given.
//!
//! The input is:
//!
//! ```text
//! byte 0      bit 0 ivshmem-plain (else bochs-display), bit 1 in-place API (as the resume file
//!             uses it), bit 2 also decode a truncated stream, bits 3-6 memory size class
//! bytes 1-2   le16 memory size parameter
//! bytes 3-4   le16 register blob length (mod MAX_REGS_LEN + 1)
//! bytes 5-6   le16 where the truncated stream ends (see `truncated_len`)
//! byte 7      number n of cuts (mod 32)
//! 2n bytes    le16 cuts: lengths of the pieces the stream is fed in, used cyclically
//! rest        the start of the device memory; the rest of it is pseudo-random
//! ```
//!
//! The stream is written one record at a time into a staging buffer with the crate's `Encoder`,
//! as the driver's save file does, then fed to the `Decoder` in the pieces the cuts give (a
//! piece may end anywhere, inside a record header, a payload or a CRC, and may be empty). The
//! decoded register blob and every byte of memory must equal the image, with END seen and
//! exactly one sink call per record. A truncated stream must fail with `Truncated`, never call
//! `end()`, and must have applied exactly the MEMORY records that it holds whole.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use qvp_stream::harness::{
    CheckedDecoder,
    RecordEncoder,
    MAX_CHUNK,
    MAX_REGS_LEN,
    SCRATCH_LEN, //
};

/// Zeros to compare with.
static ZEROS: [u8; MAX_CHUNK] = [0; MAX_CHUNK];

/// Buffers reused across runs.
struct Buffers {
    /// The encoder's staging buffer, one record.
    staging: Vec<u8>,
    /// Decoder scratch buffer.
    scratch: Vec<u8>,
    /// The whole stream.
    stream: Vec<u8>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers {
        staging: vec![0; SCRATCH_LEN],
        scratch: vec![0; SCRATCH_LEN],
        stream: Vec::new(),
    });
}

/// Returns the device memory size for size class `class` and parameter `p`.
///
/// Mostly small, for speed: up to 4 KiB (12 of 16 classes), up to 64 KiB (3 of 16); rarely (1 of
/// 16) around one MEMORY record's worth or from two to three records' worth, so that full and
/// partial chunks and the boundaries between their records are covered.
fn mem_size(class: u8, p: u16) -> usize {
    let p = usize::from(p);
    match class {
        0..=11 => p % 4097,
        12..=14 => p,
        _ if p & 1 == 0 => MAX_CHUNK - 256 + (p >> 1) % 512,
        _ => 2 * MAX_CHUNK - 256 + (p >> 1) % (MAX_CHUNK + 512),
    }
}

/// Fills `mem` with `prefix`, then with pseudo-random bytes from `seed`.
fn fill(mem: &mut [u8], prefix: &[u8], seed: u64) {
    let n = prefix.len().min(mem.len());
    let (head, tail) = mem.split_at_mut(n);
    head.copy_from_slice(&prefix[..n]);
    let mut x = seed | 1;
    for chunk in tail.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// Returns where the truncated stream ends, from the parameter `t`, for a stream of `len > 0`
/// bytes: `t` itself if the stream is short; else a point spread over the whole stream (so that
/// MEMORY records after the first can be cut), moved by the low bits of `t`.
fn truncated_len(t: u16, len: usize) -> usize {
    let t = usize::from(t);
    if len <= 1 << 16 {
        t % len
    } else {
        ((t >> 6) * (len >> 10) + (t & 63)).min(len - 1)
    }
}

/// Decodes `stream` for a device with `mem_size` bytes of memory, cut as `cuts` says (cyclically;
/// no cuts, or only empty ones, means one piece), and returns the outcome, memory and registers.
fn decode(
    stream: &[u8],
    kind: u32,
    mem_size: usize,
    cuts: &[u16],
    in_place: bool,
    scratch: &mut [u8],
) -> (qvp_stream::harness::Outcome, Vec<u8>, [u8; MAX_REGS_LEN]) {
    let mut mem = vec![0u8; mem_size];
    let mut regs = [0u8; MAX_REGS_LEN];
    let mut decoder = CheckedDecoder::new(kind, &mut mem, &mut regs, None);
    let one_piece = cuts.iter().all(|&c| c == 0);
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = if one_piece {
            rest.len()
        } else {
            usize::from(cuts[i % cuts.len()])
        };
        i += 1;
        let (piece, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        decoder.feed(piece, scratch, in_place);
    }
    let outcome = decoder.finish();
    (outcome, mem, regs)
}

fuzz_target!(|data: &[u8]| {
    let [ctl, m0, m1, r0, r1, t0, t1, n, rest @ ..] = data else {
        return;
    };
    let kind = if ctl & 1 != 0 { 2 } else { 1 };
    let in_place = ctl & 2 != 0;
    let mem_size = mem_size((ctl >> 3) & 15, u16::from_le_bytes([*m0, *m1]));
    let regs_len = usize::from(u16::from_le_bytes([*r0, *r1])) % (MAX_REGS_LEN + 1);
    let (cut_bytes, prefix) = rest.split_at((usize::from(n % 32) * 2).min(rest.len()));
    let cuts: Vec<u16> = cut_bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();

    let seed = u64::from_le_bytes([*m0, *m1, *r0, *r1, *t0, *t1, *n, *ctl]);
    let mut mem = vec![0u8; mem_size];
    fill(&mut mem, prefix, seed);
    let mut regs = vec![0u8; regs_len];
    fill(&mut regs, &[], !seed);

    BUFFERS.with_borrow_mut(|b| {
        // Encode, one record at a time through the staging buffer, as the save file does.
        let mut encoder = RecordEncoder::new(kind, &mem, &regs).expect("regs_len within bounds");
        let stream_len = usize::try_from(encoder.stream_len()).expect("stream fits in memory");
        b.stream.clear();
        b.stream.reserve(stream_len);
        let mut record_ends = Vec::new();
        while let Some(len) = encoder
            .next_record(&mut b.staging)
            .expect("encoding failed")
        {
            b.stream.extend_from_slice(&b.staging[..len]);
            record_ends.push(b.stream.len());
        }
        assert_eq!(b.stream.len(), stream_len);
        let chunks = mem_size.div_ceil(MAX_CHUNK);
        // HEADER, DEVICE_REGS, the MEMORY records, END.
        assert_eq!(record_ends.len(), 3 + chunks, "wrong number of records");

        // Decode it whole, in the pieces the cuts give: the same image comes back.
        let (outcome, got_mem, got_regs) =
            decode(&b.stream, kind, mem_size, &cuts, in_place, &mut b.scratch);
        assert_eq!(outcome.error, None, "valid stream rejected");
        assert_eq!(
            outcome.calls as usize,
            3 + chunks,
            "wrong number of sink calls"
        );
        assert!(got_regs[..regs_len] == regs[..], "registers differ");
        assert!(
            got_regs[regs_len..] == ZEROS[..MAX_REGS_LEN - regs_len],
            "registers overrun"
        );
        if got_mem != mem {
            let at = got_mem.iter().zip(&mem).position(|(a, b)| a != b);
            panic!("memory differs at {at:x?} of {mem_size:#x}");
        }

        // Cut short, the stream fails, and only the whole MEMORY records in it took effect.
        if ctl & 4 != 0 {
            let end = truncated_len(u16::from_le_bytes([*t0, *t1]), stream_len);
            let (outcome, got_mem, _) = decode(
                &b.stream[..end],
                kind,
                mem_size,
                &cuts,
                in_place,
                &mut b.scratch,
            );
            assert_eq!(
                outcome.error,
                Some("Truncated"),
                "truncated stream at {end}"
            );
            let whole = record_ends.iter().filter(|&&e| e <= end).count();
            assert_eq!(
                outcome.calls as usize, whole,
                "sink calls of a truncated stream"
            );
            // Record k >= 2 is MEMORY record k - 2, for [(k - 2) * MAX_CHUNK, ...).
            let applied = whole.saturating_sub(2).min(chunks);
            let applied_bytes = (applied * MAX_CHUNK).min(mem_size);
            assert!(
                got_mem[..applied_bytes] == mem[..applied_bytes],
                "whole records of a truncated stream not applied"
            );
            assert!(
                got_mem[applied_bytes..]
                    .chunks(MAX_CHUNK)
                    .all(|c| *c == ZEROS[..c.len()]),
                "part of a record applied"
            );
        }
    });
});
