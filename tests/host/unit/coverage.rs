// SPDX-License-Identifier: GPL-2.0

//! Coverage of the device memory by MEMORY records.

use std::vec;

use super::util::{
    bochs,
    encode_stream,
    small_stream,
    Call,
    VecSource,
    XorShift,
    SMALL_MEM, //
};
use crate::stream::coverage::{
    Coverage,
    CoverageError,
    GRANULE, //
};

#[test]
fn complete_only_when_every_page_was_written() {
    let mem = 130 * GRANULE + 7;
    let mut c = Coverage::new(mem);
    assert_eq!(c.words(), 3);
    assert_eq!(c.progress(), (0, 131));
    let mut bits = vec![0u64; c.words()];
    // Out of order, overlapping, repeated: each page counts once. The record that ends the
    // memory covers the partial last page.
    c.mark(&mut bits, 64 * GRANULE, 66 * GRANULE + 7).unwrap();
    c.mark(&mut bits, 64 * GRANULE, GRANULE).unwrap();
    c.mark(&mut bits, 10 * GRANULE, 0).unwrap();
    assert_eq!(c.progress(), (67, 131));
    c.mark(&mut bits, 0, 63 * GRANULE).unwrap();
    assert!(!c.complete());
    assert_eq!(c.progress(), (130, 131));
    c.mark(&mut bits, 63 * GRANULE, GRANULE).unwrap();
    assert!(c.complete());
    assert_eq!(bits[2], 0b111);
}

#[test]
fn partial_pages_do_not_count() {
    let mem = 4 * GRANULE;
    let mut c = Coverage::new(mem);
    let mut bits = vec![0u64; c.words()];
    // Two halves of page 0 and a range that only covers page 2 whole.
    c.mark(&mut bits, 0, GRANULE / 2).unwrap();
    c.mark(&mut bits, GRANULE / 2, GRANULE / 2).unwrap();
    c.mark(&mut bits, GRANULE + 1, 2 * GRANULE).unwrap();
    assert_eq!(c.progress(), (1, 4));
    assert_eq!(bits[0], 0b100);
    // A short record that does not end the memory covers nothing.
    c.mark(&mut bits, 3 * GRANULE, GRANULE - 1).unwrap();
    assert_eq!(c.progress(), (1, 4));
}

#[test]
fn refused_ranges_mark_nothing() {
    let mem = 8 * GRANULE;
    let mut c = Coverage::new(mem);
    let mut bits = vec![0u64; c.words()];
    for (offset, len) in [
        (7 * GRANULE, 2 * GRANULE),
        (u64::MAX - 1, 2),
        (8 * GRANULE, 1),
    ] {
        assert_eq!(
            c.mark(&mut bits, offset, len),
            Err(CoverageError),
            "{offset} + {len}"
        );
    }
    assert_eq!(c.progress(), (0, 8));
    assert!(bits.iter().all(|&w| w == 0));
    // A bitmap that is too short.
    assert_eq!(c.mark(&mut [], 0, GRANULE), Err(CoverageError));
}

#[test]
fn empty_memory_is_complete() {
    let c = Coverage::new(0);
    assert!(c.complete());
    assert_eq!(c.words(), 0);
}

/// Feeds the MEMORY records a decoder handed to the sink to a coverage.
fn cover(mem_size: u64, calls: &[Call]) -> Coverage {
    let mut c = Coverage::new(mem_size);
    let mut bits = vec![0u64; c.words()];
    for call in calls {
        if let Call::Memory(offset, data) = call {
            c.mark(&mut bits, *offset, data.len() as u64).unwrap();
        }
    }
    c
}

#[test]
fn encoder_streams_cover_everything() {
    for mem_size in [0usize, 1, 4095, 4096, 4097, 3 * 262_144 + 4096 + 13] {
        let identity = bochs(mem_size);
        let mut rng = XorShift(mem_size as u64 + 1);
        let mut source = VecSource {
            mem: rng.bytes(mem_size),
            regs: rng.bytes(24),
            fail: None,
        };
        let stream = encode_stream(identity, &mut source);
        let (result, sink) = super::util::decode(identity, &stream);
        assert_eq!(result, Ok(()));
        assert!(cover(mem_size as u64, &sink.calls).complete(), "{mem_size}");
    }
    // A hand-made stream that writes its one partial page through several records does not.
    let (stream, _, _) = small_stream();
    let (result, sink) = super::util::decode(bochs(SMALL_MEM), &stream);
    assert_eq!(result, Ok(()));
    assert!(!cover(SMALL_MEM as u64, &sink.calls).complete());
}
