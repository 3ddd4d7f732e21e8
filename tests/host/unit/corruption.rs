// SPDX-License-Identifier: GPL-2.0

//! Every single-bit corruption is detected before any of the corrupted record reaches the sink.

use super::util::{
    bochs,
    decode,
    encode_stream,
    small_stream,
    Run,
    VecSource,
    XorShift,
    SMALL_MEM, //
};
use crate::stream::{
    format::{
        get_le64,
        rec,
        RECORD_OVERHEAD, //
    },
    DeviceIdentity, //
};

/// Returns the start of every record of the valid stream `stream`.
fn record_starts(stream: &[u8]) -> std::vec::Vec<usize> {
    let mut starts = std::vec::Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        starts.push(pos);
        pos += get_le64(&stream[pos..], rec::PAYLOAD_LEN).unwrap() as usize + RECORD_OVERHEAD;
    }
    assert_eq!(pos, stream.len());
    starts
}

/// Flips every bit of `stream` in turn and checks that the decoder rejects the result and that
/// the sink only saw the records before the corrupted one, unchanged.
///
/// `skipped` lists the records the sink does not see (unknown optional ones).
fn flip_every_bit(
    identity: DeviceIdentity,
    stream: &[u8],
    skipped: &[usize],
    reference: Option<(&[u8], &[u8])>,
) {
    let (result, good) = decode(identity, stream);
    assert_eq!(result, Ok(()));
    let starts = record_starts(stream);
    let mut corrupt = stream.to_vec();
    for byte in 0..stream.len() {
        let record = starts.partition_point(|&s| s <= byte) - 1;
        let delivered = (0..record).filter(|r| !skipped.contains(r)).count();
        for bit in 0..8 {
            corrupt[byte] ^= 1 << bit;
            let mut run = Run::new(identity);
            run.sink.reference = reference.map(|(m, r)| (m.to_vec(), r.to_vec()));
            // Vary the segmentation too.
            let result = if bit % 2 == 0 {
                run.feed_pieces([&corrupt[..]])
            } else {
                run.feed_pieces(corrupt.chunks(bit * 7 + 1))
            };
            assert!(
                result.is_err(),
                "flip of bit {bit} of byte {byte} not detected"
            );
            assert!(
                run.sink.calls.len() <= delivered,
                "byte {byte} bit {bit}: sink saw the corrupted record or later ones"
            );
            assert_eq!(run.sink.calls[..], good.calls[..run.sink.calls.len()]);
            assert_eq!(run.sink.bad_writes, 0);
            corrupt[byte] ^= 1 << bit;
        }
    }
}

#[test]
fn encoded_stream() {
    let mut rng = XorShift(5);
    let identity = bochs(SMALL_MEM);
    let mut source = VecSource {
        mem: rng.bytes(SMALL_MEM),
        regs: rng.bytes(20),
        fail: None,
    };
    let stream = encode_stream(identity, &mut source);
    flip_every_bit(identity, &stream, &[], Some((&source.mem, &source.regs)));
}

#[test]
fn hand_made_stream() {
    let (stream, _, _) = small_stream();
    // Record 4 is the unknown optional one.
    flip_every_bit(bochs(SMALL_MEM), &stream, &[4], None);
}
