// SPDX-License-Identifier: GPL-2.0

//! The result does not depend on how the stream is cut into pieces.

use std::vec::Vec;

use super::util::{
    bochs,
    decode,
    small_stream,
    Run,
    XorShift,
    SMALL_MEM, //
};

#[test]
fn reference_decode() {
    let (stream, mem, regs) = small_stream();
    let (result, sink) = decode(bochs(SMALL_MEM), &stream);
    assert_eq!(result, Ok(()));
    assert_eq!(sink.mem, mem);
    assert_eq!(sink.regs, Some(regs));
    // HEADER, 4 MEMORY, DEVICE_REGS, END; the optional record is skipped.
    assert_eq!(sink.calls.len(), 7);
}

#[test]
fn every_split_point() {
    let (stream, _, _) = small_stream();
    let (_, reference) = decode(bochs(SMALL_MEM), &stream);
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        let mut run = Run::new(bochs(SMALL_MEM));
        assert_eq!(run.feed_pieces([a, b]), Ok(()), "split at {split}");
        assert_eq!(run.sink.calls, reference.calls, "split at {split}");

        let mut run = Run::new(bochs(SMALL_MEM));
        run.feed_in_place(a).unwrap();
        run.feed_in_place(b).unwrap();
        assert_eq!(run.decoder.finish(), Ok(()));
        assert_eq!(
            run.sink.calls, reference.calls,
            "in place, split at {split}"
        );
    }
}

#[test]
fn single_bytes() {
    let (stream, _, _) = small_stream();
    let (_, reference) = decode(bochs(SMALL_MEM), &stream);
    let mut run = Run::new(bochs(SMALL_MEM));
    assert_eq!(run.feed_pieces(stream.chunks(1)), Ok(()));
    assert_eq!(run.sink.calls, reference.calls);

    // Empty pieces in between change nothing either.
    let mut run = Run::new(bochs(SMALL_MEM));
    let pieces = stream.chunks(1).flat_map(|b| [b, &[][..]]);
    assert_eq!(run.feed_pieces(pieces), Ok(()));
    assert_eq!(run.sink.calls, reference.calls);
}

#[test]
fn random_pieces() {
    let (stream, _, _) = small_stream();
    let (_, reference) = decode(bochs(SMALL_MEM), &stream);
    let mut rng = XorShift(42);
    for round in 0..500 {
        let max = [2, 8, 40, 200, stream.len()][round % 5];
        let mut pieces = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = rng.below(max + 1).min(rest.len());
            let (piece, later) = rest.split_at(n);
            pieces.push(piece);
            rest = later;
        }
        let mut run = Run::new(bochs(SMALL_MEM));
        if round % 2 == 0 {
            assert_eq!(run.feed_pieces(pieces.iter().copied()), Ok(()));
        } else {
            for piece in &pieces {
                run.feed_in_place(piece).unwrap();
            }
            assert_eq!(run.decoder.finish(), Ok(()));
        }
        assert_eq!(run.sink.calls, reference.calls, "round {round}");
    }
}
