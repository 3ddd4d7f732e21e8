// SPDX-License-Identifier: GPL-2.0

//! The encoder: stream length, errors, retries and pre-copy style use.

use std::{
    vec,
    vec::Vec, //
};

use super::util::{
    bochs,
    decode,
    encode_stream,
    VecSource,
    XorShift, //
};
use crate::stream::{
    crc::SoftCrc32c,
    encoder::{
        encode_header,
        encode_memory,
        encode_raw_record,
        encode_regs,
        Tally, //
    },
    format::{
        errno,
        MAX_PAYLOAD,
        RECORD_OVERHEAD, //
    },
    stream_len,
    DeviceIdentity,
    DeviceKind,
    EncodeError,
    Encoder,
    SourceError,
    MAX_CHUNK,
    MAX_REGS_LEN,
    SCRATCH_LEN, //
};

/// A source for `mem_size` bytes of memory and `regs_len` bytes of registers.
fn source(mem_size: usize, regs_len: usize) -> VecSource {
    let mut rng = XorShift(mem_size as u64 ^ 0x55);
    VecSource {
        mem: rng.bytes(mem_size),
        regs: rng.bytes(regs_len),
        fail: None,
    }
}

#[test]
fn stream_len_formula() {
    // HEADER 60, DEVICE_REGS 28 + regs, MEMORY 36 + data each, END 44.
    assert_eq!(stream_len(bochs(0), 0), Ok(60 + 28 + 44));
    assert_eq!(stream_len(bochs(1), 3), Ok(60 + 31 + 37 + 44));
    assert_eq!(
        stream_len(bochs(MAX_CHUNK + 1), 0),
        Ok(60 + 28 + 2 * 36 + MAX_CHUNK as u64 + 1 + 44)
    );
    for mem in [0, 1, 1000, MAX_CHUNK, MAX_CHUNK + 5] {
        let mut s = source(mem, 12);
        let stream = encode_stream(bochs(mem), &mut s);
        assert_eq!(stream_len(bochs(mem), 12), Ok(stream.len() as u64));
    }

    // Large but representable, and too large.
    let big = DeviceIdentity {
        kind: DeviceKind::IvshmemPlain,
        mem_size: 1 << 40,
    };
    let chunks = (1u64 << 40) / MAX_CHUNK as u64;
    assert_eq!(
        stream_len(big, 0),
        Ok(60 + 28 + chunks * 36 + (1 << 40) + 44)
    );
    let huge = DeviceIdentity {
        kind: DeviceKind::IvshmemPlain,
        mem_size: u64::MAX - 100,
    };
    assert_eq!(stream_len(huge, 0), Err(EncodeError::Oversized));
    assert_eq!(
        stream_len(bochs(0), MAX_REGS_LEN as u32 + 1),
        Err(EncodeError::Oversized)
    );
}

#[test]
fn buffer_too_small_is_retryable() {
    let identity = bochs(MAX_CHUNK + 10);
    let mut s = source(MAX_CHUNK + 10, 8);
    let reference = encode_stream(identity, &mut s);

    let mut encoder = Encoder::new(identity, 8);
    let mut small = vec![0u8; 100];
    let mut big = vec![0u8; SCRATCH_LEN];
    let mut stream = Vec::new();
    loop {
        // Try the small buffer first; the MEMORY record of MAX_CHUNK bytes does not fit.
        let before = encoder.tally();
        match encoder.next_record(&mut s, &SoftCrc32c, &mut small) {
            Ok(Some(n)) => stream.extend_from_slice(&small[..n]),
            Ok(None) => break,
            Err(e) => {
                assert_eq!(e, EncodeError::BufferTooSmall);
                assert_eq!(encoder.tally(), before);
                let n = encoder
                    .next_record(&mut s, &SoftCrc32c, &mut big)
                    .unwrap()
                    .unwrap();
                stream.extend_from_slice(&big[..n]);
            }
        }
    }
    assert_eq!(stream, reference);
    assert_eq!(encoder.next_record(&mut s, &SoftCrc32c, &mut big), Ok(None));
}

#[test]
fn source_errors() {
    let identity = bochs(100);
    let mut s = source(100, 8);
    let mut encoder = Encoder::new(identity, 8);
    let mut out = vec![0u8; SCRATCH_LEN];
    assert!(encoder.next_record(&mut s, &SoftCrc32c, &mut out).is_ok());
    s.fail = Some(errno::EIO);
    let e = encoder.next_record(&mut s, &SoftCrc32c, &mut out);
    assert_eq!(e, Err(EncodeError::Source(SourceError(errno::EIO))));
    assert_eq!(EncodeError::Source(SourceError(errno::EIO)).errno_hint(), 5);
    assert_eq!(
        EncodeError::Source(SourceError(-1)).errno_hint(),
        errno::EIO
    );
    assert_eq!(EncodeError::BufferTooSmall.errno_hint(), errno::ENOBUFS);
    assert_eq!(EncodeError::Oversized.errno_hint(), errno::EMSGSIZE);
    assert_eq!(EncodeError::OutOfRange.errno_hint(), errno::ERANGE);
    assert_eq!(EncodeError::UnexpectedRecord.errno_hint(), errno::EPROTO);
    assert_eq!(encoder.tally().records, 1);
}

#[test]
fn record_writer_bounds() {
    let mut s = source(100, 8);
    let mut out = vec![0u8; SCRATCH_LEN];
    let crc = SoftCrc32c;
    assert_eq!(
        encode_memory(100, 90, 11, &mut s, &crc, &mut out),
        Err(EncodeError::OutOfRange)
    );
    assert_eq!(
        encode_memory(100, u64::MAX, 1, &mut s, &crc, &mut out),
        Err(EncodeError::OutOfRange)
    );
    assert_eq!(
        encode_memory(u64::MAX, 0, MAX_CHUNK + 1, &mut s, &crc, &mut out),
        Err(EncodeError::Oversized)
    );
    assert_eq!(
        encode_memory(100, 90, 10, &mut s, &crc, &mut out),
        Ok(RECORD_OVERHEAD + 8 + 10)
    );
    assert_eq!(
        encode_header(bochs(1), MAX_REGS_LEN as u32 + 1, &crc, &mut out),
        Err(EncodeError::Oversized)
    );
    assert_eq!(
        encode_regs(MAX_REGS_LEN as u32 + 1, &mut s, &crc, &mut out),
        Err(EncodeError::Oversized)
    );
    let payload = vec![0u8; MAX_PAYLOAD + 1];
    assert_eq!(
        encode_raw_record(9, 1, &payload, &crc, &mut vec![0u8; 2 * SCRATCH_LEN]),
        Err(EncodeError::Oversized)
    );
    assert_eq!(
        encode_raw_record(9, 1, &payload[1..], &crc, &mut out),
        Ok(SCRATCH_LEN)
    );

    // The encoder rejects an oversized register blob up front.
    let mut encoder = Encoder::new(bochs(1), MAX_REGS_LEN as u32 + 1);
    assert_eq!(
        encoder.next_record(&mut s, &crc, &mut out),
        Err(EncodeError::Oversized)
    );
    assert_eq!(encoder.tally(), Tally::default());
}

/// Pre-copy: MEMORY records of the caller's choice between HEADER and the stop-copy walk are
/// counted in END, and the later walk overwrites them.
#[test]
fn interleaved_memory_records() {
    let identity = bochs(3000);
    let mut s = source(3000, 8);
    let mut encoder = Encoder::new(identity, 8);
    let mut out = vec![0u8; SCRATCH_LEN];
    let crc = SoftCrc32c;
    let mut stream = Vec::new();

    assert_eq!(
        encoder.encode_memory(0, 10, &mut s, &crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    let n = encoder
        .next_record(&mut s, &crc, &mut out)
        .unwrap()
        .unwrap();
    stream.extend_from_slice(&out[..n]);
    let stale = s.mem.clone();
    for (offset, len) in [(0, 100), (2900, 100), (1000, 0), (500, 1000)] {
        let n = encoder
            .encode_memory(offset, len, &mut s, &crc, &mut out)
            .unwrap();
        stream.extend_from_slice(&out[..n]);
    }
    assert_eq!(
        encoder.encode_memory(2990, 11, &mut s, &crc, &mut out),
        Err(EncodeError::OutOfRange)
    );
    // The device changes before stop-copy.
    s.mem.iter_mut().for_each(|b| *b = b.wrapping_add(1));
    assert_ne!(stale, s.mem);
    while let Some(n) = encoder.next_record(&mut s, &crc, &mut out).unwrap() {
        stream.extend_from_slice(&out[..n]);
    }
    assert!(encoder.is_done());
    assert_eq!(
        encoder.encode_memory(0, 10, &mut s, &crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    assert_eq!(encoder.tally().records, 1 + 4 + 1 + 1 + 1);

    let (result, sink) = decode(identity, &stream);
    assert_eq!(result, Ok(()));
    assert!(sink.mem == s.mem);
    assert_eq!(sink.calls.len(), encoder.tally().records as usize);
}

/// Pre-copy order: HEADER, MEMORY records of the caller's choice, DEVICE_REGS and END through the
/// single-record writers, each only in its place; the stream decodes and its END counts it all.
#[test]
fn single_record_writers() {
    let identity = bochs(3000);
    let mut s = source(3000, 8);
    let mut encoder = Encoder::new(identity, 8);
    let mut out = vec![0u8; SCRATCH_LEN];
    let crc = SoftCrc32c;
    let mut stream = Vec::new();

    // Only the HEADER may come first.
    assert_eq!(
        encoder.encode_regs(&mut s, &crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    assert_eq!(
        encoder.encode_end(&crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    assert_eq!(encoder.tally(), Tally::default());
    let n = encoder.encode_header(&crc, &mut out).unwrap();
    assert_eq!(n, 60);
    stream.extend_from_slice(&out[..n]);
    assert_eq!(
        encoder.encode_header(&crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    // END needs DEVICE_REGS first.
    assert_eq!(
        encoder.encode_end(&crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    for (offset, len) in [(0, 3000), (100, 50)] {
        let n = encoder
            .encode_memory(offset, len, &mut s, &crc, &mut out)
            .unwrap();
        stream.extend_from_slice(&out[..n]);
    }
    // A failed write changes nothing.
    assert_eq!(
        encoder.encode_regs(&mut s, &crc, &mut out[..10]),
        Err(EncodeError::BufferTooSmall)
    );
    let n = encoder.encode_regs(&mut s, &crc, &mut out).unwrap();
    assert_eq!(n, 28 + 8);
    stream.extend_from_slice(&out[..n]);
    assert_eq!(
        encoder.encode_regs(&mut s, &crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );
    // Memory may still come between DEVICE_REGS and END.
    let n = encoder
        .encode_memory(2000, 1000, &mut s, &crc, &mut out)
        .unwrap();
    stream.extend_from_slice(&out[..n]);
    let n = encoder.encode_end(&crc, &mut out).unwrap();
    assert_eq!(n, 44);
    stream.extend_from_slice(&out[..n]);
    assert!(encoder.is_done());
    assert_eq!(encoder.tally().records, 6);
    assert_eq!(encoder.tally().bytes, stream.len() as u64);
    assert_eq!(encoder.next_record(&mut s, &crc, &mut out), Ok(None));
    assert_eq!(
        encoder.encode_end(&crc, &mut out),
        Err(EncodeError::UnexpectedRecord)
    );

    let (result, sink) = decode(identity, &stream);
    assert_eq!(result, Ok(()));
    assert!(sink.mem == s.mem);

    // After its own HEADER, the stop-copy walk is the usual stream; END only at its end.
    let mut encoder = Encoder::new(identity, 8);
    let mut stream = Vec::new();
    let n = encoder.encode_header(&crc, &mut out).unwrap();
    stream.extend_from_slice(&out[..n]);
    let mut records = 1;
    while !encoder.is_done() {
        if records < 3 {
            assert_eq!(
                encoder.encode_end(&crc, &mut out),
                Err(EncodeError::UnexpectedRecord)
            );
        }
        let n = encoder
            .next_record(&mut s, &crc, &mut out)
            .unwrap()
            .unwrap();
        stream.extend_from_slice(&out[..n]);
        records += 1;
    }
    assert_eq!(stream, encode_stream(identity, &mut s));
}
