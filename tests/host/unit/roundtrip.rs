// SPDX-License-Identifier: GPL-2.0

//! Encoding a stream and decoding it gives back the device state.

use std::vec::Vec;

use super::util::{
    bochs,
    decode,
    encode_stream,
    Call,
    Run,
    VecSource,
    XorShift, //
};
use crate::stream::{
    format::VERSION,
    stream_len,
    DeviceIdentity,
    DeviceKind,
    Header,
    MAX_CHUNK, //
};

/// Encodes and decodes a device with `mem_size` bytes of memory and `regs_len` bytes of
/// registers, checks the result and returns the sink calls.
fn round_trip(identity: DeviceIdentity, regs_len: usize, seed: u64) -> Vec<Call> {
    let mut rng = XorShift(seed);
    let mem_size = identity.mem_size as usize;
    let mut source = VecSource {
        mem: rng.bytes(mem_size),
        regs: rng.bytes(regs_len),
        fail: None,
    };
    let stream = encode_stream(identity, &mut source);
    assert_eq!(
        stream_len(identity, regs_len as u32),
        Ok(stream.len() as u64)
    );

    let (result, sink) = decode(identity, &stream);
    assert_eq!(result, Ok(()));
    assert!(sink.mem == source.mem, "memory differs");
    assert_eq!(sink.regs.as_deref(), Some(&source.regs[..]));

    // The same in pieces of one record's worth plus a bit, and in place.
    let mut run = Run::new(identity);
    assert_eq!(run.feed_pieces(stream.chunks(MAX_CHUNK + 7)), Ok(()));
    assert!(run.sink.calls == sink.calls);
    let mut run = Run::new(identity);
    for piece in stream.chunks(MAX_CHUNK / 3) {
        run.feed_in_place(piece).unwrap();
    }
    assert_eq!(run.decoder.finish(), Ok(()));
    assert!(run.sink.calls == sink.calls);
    sink.calls
}

#[test]
fn multi_chunk_device() {
    let identity = bochs(3 * MAX_CHUNK + 123);
    let calls = round_trip(identity, 64, 1);

    // HEADER, DEVICE_REGS, four MEMORY records in order, END.
    assert_eq!(calls.len(), 7);
    assert_eq!(
        calls[0],
        Call::Header(Header {
            version: VERSION,
            identity,
            regs_len: 64,
        })
    );
    assert!(matches!(&calls[1], Call::Regs(r) if r.len() == 64));
    for (i, call) in calls[2..6].iter().enumerate() {
        let Call::Memory(offset, data) = call else {
            panic!("not memory: {call:?}");
        };
        assert_eq!(*offset, (i * MAX_CHUNK) as u64);
        assert_eq!(data.len(), if i < 3 { MAX_CHUNK } else { 123 });
    }
    assert_eq!(calls[6], Call::End);
}

#[test]
fn edge_sizes() {
    for mem_size in [0, 1, MAX_CHUNK - 1, MAX_CHUNK, MAX_CHUNK + 1, 2 * MAX_CHUNK] {
        for regs_len in [0, 1, 256] {
            let identity = DeviceIdentity {
                kind: DeviceKind::IvshmemPlain,
                mem_size: mem_size as u64,
            };
            let calls = round_trip(identity, regs_len, mem_size as u64 + 3);
            let memory = calls
                .iter()
                .filter(|c| matches!(c, Call::Memory(..)))
                .count();
            assert_eq!(memory, mem_size.div_ceil(MAX_CHUNK));
        }
    }
}
