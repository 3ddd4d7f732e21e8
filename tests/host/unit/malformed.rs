// SPDX-License-Identifier: GPL-2.0

//! Each kind of malformed stream gets its own error, and errors are final.

use std::{
    vec,
    vec::Vec, //
};

use super::util::{
    bochs,
    decode,
    small_stream,
    Builder,
    Call,
    Run,
    VecSink,
    SMALL_MEM, //
};
use crate::stream::{
    crc::{
        checksum,
        SoftCrc32c, //
    },
    format::{
        errno,
        hdr,
        put_le32,
        put_le64,
        rec,
        RecordType,
        FLAG_OPTIONAL,
        HEADER_PAYLOAD_LEN,
        MAGIC,
        MAX_HEADER_PAYLOAD,
        MAX_MEMORY_PAYLOAD,
        MAX_PAYLOAD,
        RECORD_HEADER_LEN,
        RECORD_TAG,
        VERSION, //
    },
    DecodeError,
    Decoder,
    DeviceIdentity,
    DeviceKind,
    SinkError,
    MAX_REGS_LEN,
    SCRATCH_LEN, //
};

/// The device of the tests.
fn dev() -> DeviceIdentity {
    bochs(SMALL_MEM)
}

/// A version 1 HEADER payload with the given fields.
fn header_payload(version: u32, kind: u32, mem_size: u64, regs_len: u32, reserved: u32) -> Vec<u8> {
    let mut p = vec![0u8; HEADER_PAYLOAD_LEN];
    p[..8].copy_from_slice(&MAGIC);
    put_le32(&mut p, hdr::VERSION, version).unwrap();
    put_le32(&mut p, hdr::KIND, kind).unwrap();
    put_le64(&mut p, hdr::MEM_SIZE, mem_size).unwrap();
    put_le32(&mut p, hdr::REGS_LEN, regs_len).unwrap();
    put_le32(&mut p, hdr::RESERVED, reserved).unwrap();
    p
}

/// A stream starting with a HEADER record with `payload`, followed by a valid rest.
fn with_header(payload: &[u8]) -> Vec<u8> {
    Builder::new(dev())
        .raw(RecordType::Header.raw(), 0, payload)
        .regs(&[1, 2, 3, 4])
        .end()
        .build()
}

/// A builder with a valid HEADER (4-byte register blob) and DEVICE_REGS.
fn started() -> Builder {
    let mut b = Builder::new(dev());
    b.header(dev(), 4).regs(&[1, 2, 3, 4]);
    b
}

/// Decodes `stream` in one piece and returns the error.
fn error_of(stream: &[u8]) -> DecodeError {
    let (result, _) = decode(dev(), stream);
    result.unwrap_err()
}

/// A record header, without payload or CRC.
fn record_header(ty: u32, flags: u32, reserved: u32, payload_len: u64) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[..4].copy_from_slice(&RECORD_TAG);
    put_le32(&mut h, rec::TYPE, ty).unwrap();
    put_le32(&mut h, rec::FLAGS, flags).unwrap();
    put_le32(&mut h, rec::RESERVED, reserved).unwrap();
    put_le64(&mut h, rec::PAYLOAD_LEN, payload_len).unwrap();
    h
}

/// Feeds a valid HEADER then only the record header `h` and returns the result; the decoder
/// must decide on the record header alone.
fn judge_record_header(h: &[u8]) -> Result<usize, DecodeError> {
    let mut run = Run::new(dev());
    run.feed(&started().build()).unwrap();
    run.feed(h)
}

#[test]
fn valid_baseline() {
    assert_eq!(decode(dev(), &started().end().build()).0, Ok(()));
    assert_eq!(
        decode(
            dev(),
            &with_header(&header_payload(1, 1, SMALL_MEM as u64, 4, 0))
        )
        .0,
        Ok(())
    );
}

#[test]
fn bad_magic() {
    let mut p = header_payload(1, 1, SMALL_MEM as u64, 4, 0);
    p[0] ^= 0x20;
    assert_eq!(error_of(&with_header(&p)), DecodeError::BadMagic);

    // A bad record tag is rejected as soon as the record header is there.
    let mut stream = started().end().build();
    stream[0] = b'X';
    let mut run = Run::new(dev());
    assert_eq!(
        run.feed(&stream[..RECORD_HEADER_LEN]),
        Err(DecodeError::BadMagic)
    );

    // Also for later records.
    let mut b = started();
    let at = b.stream.len();
    b.end();
    let mut stream = b.build();
    stream[at + 3] = 0;
    assert_eq!(error_of(&stream), DecodeError::BadMagic);
}

#[test]
fn unsupported_version() {
    let p = header_payload(2, 1, SMALL_MEM as u64, 4, 0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::UnsupportedVersion);
    let p = header_payload(0, 1, SMALL_MEM as u64, 4, 0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::UnsupportedVersion);

    // A later version with a longer header is still reported as a version problem.
    let mut p = header_payload(7, 1, SMALL_MEM as u64, 4, 0);
    p.resize(MAX_HEADER_PAYLOAD, 0x55);
    assert_eq!(error_of(&with_header(&p)), DecodeError::UnsupportedVersion);
}

#[test]
fn header_malformed() {
    // Version 1 with a longer or shorter header.
    let mut p = header_payload(VERSION, 1, SMALL_MEM as u64, 4, 0);
    p.push(0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::Malformed);
    let p = header_payload(VERSION, 1, SMALL_MEM as u64, 4, 0);
    assert_eq!(
        error_of(&with_header(&p[..HEADER_PAYLOAD_LEN - 1])),
        DecodeError::Malformed
    );
    // Too short to even hold magic and version: rejected on the record header.
    assert_eq!(error_of(&with_header(&p[..11])), DecodeError::Malformed);
    // Reserved field.
    let p = header_payload(VERSION, 1, SMALL_MEM as u64, 4, 1);
    assert_eq!(error_of(&with_header(&p)), DecodeError::Malformed);
    // Longer than any version may be.
    let mut p = header_payload(VERSION, 1, SMALL_MEM as u64, 4, 0);
    p.resize(MAX_HEADER_PAYLOAD + 1, 0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::Oversized);
}

#[test]
fn wrong_device_kind() {
    let p = header_payload(
        VERSION,
        DeviceKind::IvshmemPlain.raw(),
        SMALL_MEM as u64,
        4,
        0,
    );
    assert_eq!(error_of(&with_header(&p)), DecodeError::WrongDeviceKind);
    let p = header_payload(VERSION, 77, SMALL_MEM as u64, 4, 0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::WrongDeviceKind);
}

#[test]
fn mem_size_mismatch() {
    for size in [0, SMALL_MEM as u64 - 1, SMALL_MEM as u64 + 1, u64::MAX] {
        let p = header_payload(VERSION, 1, size, 4, 0);
        assert_eq!(error_of(&with_header(&p)), DecodeError::MemSizeMismatch);
    }
}

#[test]
fn regs_len() {
    // The HEADER declares more than MAX_REGS_LEN.
    let p = header_payload(VERSION, 1, SMALL_MEM as u64, MAX_REGS_LEN as u32 + 1, 0);
    assert_eq!(error_of(&with_header(&p)), DecodeError::Oversized);

    // DEVICE_REGS differs from the HEADER: rejected on its record header.
    let mut b = Builder::new(dev());
    b.header(dev(), 4).regs(&[1, 2, 3, 4, 5]).end();
    assert_eq!(error_of(&b.build()), DecodeError::RegsLenMismatch);
    let mut b = Builder::new(dev());
    b.header(dev(), 4).regs(&[1, 2, 3]).end();
    assert_eq!(error_of(&b.build()), DecodeError::RegsLenMismatch);
    let mut run = Run::new(dev());
    let mut b = Builder::new(dev());
    b.header(dev(), 4);
    run.feed(&b.build()).unwrap();
    let h = record_header(RecordType::DeviceRegs.raw(), 0, 0, 5);
    assert_eq!(run.feed(&h), Err(DecodeError::RegsLenMismatch));

    // Over MAX_REGS_LEN, whatever the HEADER says.
    let h = record_header(RecordType::DeviceRegs.raw(), 0, 0, MAX_REGS_LEN as u64 + 1);
    let mut run = Run::new(dev());
    run.feed(&b.build()).unwrap();
    assert_eq!(run.feed(&h), Err(DecodeError::Oversized));
}

#[test]
fn bad_checksum() {
    let stream = started().end().build();
    for at in [RECORD_HEADER_LEN + HEADER_PAYLOAD_LEN, stream.len() - 1] {
        let mut s = stream.clone();
        s[at] ^= 0x80;
        assert_eq!(error_of(&s), DecodeError::BadChecksum);
    }
    // A changed payload byte.
    let mut s = stream.clone();
    s[RECORD_HEADER_LEN + hdr::MEM_SIZE + 7] ^= 1;
    assert_eq!(error_of(&s), DecodeError::BadChecksum);
}

#[test]
fn unknown_records() {
    // Mandatory: rejected on the record header.
    assert_eq!(
        judge_record_header(&record_header(0x1234, 0, 0, 8)),
        Err(DecodeError::UnknownMandatoryRecord)
    );
    let mut b = started();
    b.raw(4, 0, b"new").end();
    assert_eq!(error_of(&b.build()), DecodeError::UnknownMandatoryRecord);

    // Optional: skipped, also when empty or as large as any record.
    let mut b = started();
    b.raw(4, FLAG_OPTIONAL, b"new")
        .raw(0xDEAD_BEEF, FLAG_OPTIONAL, b"")
        .raw(0x7FFF, FLAG_OPTIONAL, &vec![9; MAX_PAYLOAD])
        .memory(0, &[7; 10])
        .end();
    let (result, sink) = decode(dev(), &b.build());
    assert_eq!(result, Ok(()));
    assert_eq!(sink.calls.len(), 4);
    assert_eq!(sink.calls[2], Call::Memory(0, vec![7; 10]));

    // But their CRC is still checked.
    let mut b = started();
    b.raw(4, FLAG_OPTIONAL, b"new").end();
    let mut s = b.build();
    let at = s.len() - 44 - 5;
    s[at] ^= 1;
    assert_eq!(error_of(&s), DecodeError::BadChecksum);
}

#[test]
fn bad_flags() {
    for (flags, reserved) in [(2, 0), (0x8000_0000, 0), (3, 0), (0, 1), (0, 0x100)] {
        assert_eq!(
            judge_record_header(&record_header(
                RecordType::Memory.raw(),
                flags,
                reserved,
                16
            )),
            Err(DecodeError::BadFlags),
            "flags {flags:#x} reserved {reserved:#x}"
        );
    }
    // OPTIONAL on a known type.
    for ty in [RecordType::Memory, RecordType::End, RecordType::DeviceRegs] {
        assert_eq!(
            judge_record_header(&record_header(ty.raw(), FLAG_OPTIONAL, 0, 16)),
            Err(DecodeError::BadFlags)
        );
    }
    let mut b = Builder::new(dev());
    b.raw(
        RecordType::Header.raw(),
        FLAG_OPTIONAL,
        &header_payload(1, 1, SMALL_MEM as u64, 4, 0),
    );
    assert_eq!(error_of(&b.build()), DecodeError::BadFlags);
}

#[test]
fn oversized_before_buffering() {
    // A record header claiming 2^60 bytes is rejected as soon as it is complete.
    for ty in [RecordType::Memory.raw(), RecordType::End.raw()] {
        let h = record_header(ty, 0, 0, 1 << 60);
        assert_eq!(judge_record_header(&h), Err(DecodeError::Oversized));
    }
    assert_eq!(
        judge_record_header(&record_header(0x99, FLAG_OPTIONAL, 0, u64::MAX)),
        Err(DecodeError::Oversized)
    );
    let mut run = Run::new(dev());
    let h = record_header(RecordType::Header.raw(), 0, 0, 1 << 60);
    assert_eq!(run.feed(&h), Err(DecodeError::Oversized));

    // One byte over each bound.
    let cases = [
        (RecordType::Memory.raw(), 0, MAX_MEMORY_PAYLOAD),
        (RecordType::End.raw(), 0, 16),
        (0x99, FLAG_OPTIONAL, MAX_PAYLOAD),
    ];
    for (ty, flags, max) in cases {
        let ok = judge_record_header(&record_header(ty, flags, 0, max as u64));
        assert_eq!(ok, Ok(RECORD_HEADER_LEN));
        let h = record_header(ty, flags, 0, max as u64 + 1);
        assert_eq!(judge_record_header(&h), Err(DecodeError::Oversized));
    }
}

#[test]
fn too_short() {
    // MEMORY without the whole offset, END with a short payload.
    assert_eq!(
        judge_record_header(&record_header(RecordType::Memory.raw(), 0, 0, 7)),
        Err(DecodeError::Malformed)
    );
    assert_eq!(
        judge_record_header(&record_header(RecordType::End.raw(), 0, 0, 15)),
        Err(DecodeError::Malformed)
    );
}

#[test]
fn out_of_range() {
    let mut b = started();
    b.memory_raw(SMALL_MEM as u64 - 10, &[0; 11]).end();
    assert_eq!(error_of(&b.build()), DecodeError::OutOfRange);
    let mut b = started();
    b.memory_raw(SMALL_MEM as u64, &[0; 1]).end();
    assert_eq!(error_of(&b.build()), DecodeError::OutOfRange);
    let mut b = started();
    b.memory_raw(u64::MAX - 3, &[0; 8]).end();
    assert_eq!(error_of(&b.build()), DecodeError::OutOfRange);
    let mut b = started();
    b.memory_raw(u64::MAX, &[]).end();
    assert_eq!(error_of(&b.build()), DecodeError::OutOfRange);

    // Exactly at the end, and empty at the end, are fine.
    let mut b = started();
    b.memory_raw(SMALL_MEM as u64 - 10, &[0; 10])
        .memory_raw(SMALL_MEM as u64, &[])
        .end();
    assert_eq!(decode(dev(), &b.build()).0, Ok(()));
}

#[test]
fn record_order() {
    // Anything before the HEADER, even an optional record.
    let mut b = Builder::new(dev());
    b.memory(0, &[1; 4]);
    assert_eq!(error_of(&b.build()), DecodeError::UnexpectedRecord);
    let mut b = Builder::new(dev());
    b.raw(0x99, FLAG_OPTIONAL, b"x").header(dev(), 4);
    assert_eq!(error_of(&b.build()), DecodeError::UnexpectedRecord);
    let mut b = Builder::new(dev());
    b.end_with(0, 0);
    assert_eq!(error_of(&b.build()), DecodeError::UnexpectedRecord);

    // END before DEVICE_REGS.
    let mut b = Builder::new(dev());
    b.header(dev(), 4).memory(0, &[1; 4]).end();
    assert_eq!(error_of(&b.build()), DecodeError::UnexpectedRecord);

    // Duplicates.
    let mut b = started();
    b.header(dev(), 4).end();
    assert_eq!(error_of(&b.build()), DecodeError::Duplicate);
    let mut b = started();
    b.regs(&[1, 2, 3, 4]).end();
    assert_eq!(error_of(&b.build()), DecodeError::Duplicate);
}

#[test]
fn truncated_at_every_length() {
    let (stream, _, _) = small_stream();
    for len in 0..stream.len() {
        let mut run = Run::new(dev());
        assert_eq!(run.feed(&stream[..len]), Ok(len));
        assert_eq!(
            run.decoder.finish(),
            Err(DecodeError::Truncated),
            "length {len}"
        );
        assert!(!run.sink.calls.contains(&Call::End));
    }
    // Nothing at all.
    assert_eq!(Decoder::new(dev()).finish(), Err(DecodeError::Truncated));
}

#[test]
fn trailing_data() {
    let (stream, _, _) = small_stream();
    let mut run = Run::new(dev());
    assert_eq!(run.feed(&stream), Ok(stream.len()));
    assert_eq!(run.decoder.finish(), Ok(()));
    // Feeding nothing after END is fine.
    assert_eq!(run.feed(&[]), Ok(0));
    assert_eq!(run.feed(&[0]), Err(DecodeError::TrailingData));
    assert_eq!(run.decoder.finish(), Err(DecodeError::TrailingData));

    // In the same piece as the END record, and as a whole valid record.
    let mut s = stream.clone();
    s.push(0);
    assert_eq!(error_of(&s), DecodeError::TrailingData);
    let mut s = stream.clone();
    s.extend_from_slice(&stream[..60]);
    assert_eq!(error_of(&s), DecodeError::TrailingData);

    // In place: asking for room after END.
    let mut run = Run::new(dev());
    run.feed_in_place(&stream).unwrap();
    assert_eq!(
        run.decoder.buffer(&mut run.scratch).err(),
        Some(DecodeError::TrailingData)
    );
}

#[test]
fn count_mismatch() {
    let mut b = started();
    b.memory(0, &[1; 8]);
    let (records, bytes) = (b.starts.len() as u64, b.stream.len() as u64);
    for (r, by) in [
        (records + 1, bytes),
        (records - 1, bytes),
        (records, bytes + 1),
        (records, 0),
    ] {
        let mut b2 = Builder::new(dev());
        b2.stream = b.stream.clone();
        b2.end_with(r, by);
        assert_eq!(error_of(&b2.build()), DecodeError::CountMismatch);
    }

    // A dropped MEMORY record.
    let (stream, _, _) = small_stream();
    let mut b = started();
    b.memory(0, &[1; 8]).memory(8, &[2; 8]).end();
    let full = b.build();
    let (a, c) = (b.starts[2], b.starts[3]);
    let dropped = [&full[..a], &full[c..]].concat();
    assert_eq!(error_of(&dropped), DecodeError::CountMismatch);
    assert_eq!(decode(dev(), &stream).0, Ok(()));
}

#[test]
fn errors_are_sticky() {
    let (stream, _, _) = small_stream();
    let mut bad = stream.clone();
    bad[100] ^= 4;
    let mut run = Run::new(dev());
    let e = run.feed(&bad[..200]).unwrap_err();
    assert_eq!(e, DecodeError::BadChecksum);
    let calls = run.sink.calls.len();
    // Valid input, empty input, in-place calls, finish: all the same error, no sink calls.
    assert_eq!(run.feed(&stream), Err(e));
    assert_eq!(run.feed(&[]), Err(e));
    assert_eq!(run.decoder.buffer(&mut run.scratch).err(), Some(e));
    assert_eq!(
        run.decoder
            .commit(0, &run.scratch, &SoftCrc32c, &mut run.sink),
        Err(e)
    );
    assert_eq!(run.decoder.finish(), Err(e));
    assert_eq!(run.sink.calls.len(), calls);
}

#[test]
fn sink_errors() {
    let (stream, _, _) = small_stream();
    for fail_at in 0..7 {
        let mut run = Run::new(dev());
        run.sink.fail_at = Some(fail_at);
        let e = DecodeError::Sink(SinkError(5));
        assert_eq!(run.feed_pieces(stream.chunks(9)), Err(e));
        assert_eq!(run.sink.calls.len(), fail_at + 1);
        assert_eq!(run.feed(&stream), Err(e));
        assert_eq!(run.sink.calls.len(), fail_at + 1);
        assert_eq!(e.errno_hint(), 5);
    }
    assert_eq!(DecodeError::Sink(SinkError(-5)).errno_hint(), errno::EIO);
    assert_eq!(DecodeError::Sink(SinkError(0)).errno_hint(), errno::EIO);
}

#[test]
fn scratch_misuse() {
    let (stream, _, _) = small_stream();
    let mut decoder = Decoder::new(dev());
    let mut small = vec![0u8; SCRATCH_LEN - 1];
    let mut sink = VecSink::new(SMALL_MEM);
    assert_eq!(
        decoder.feed(&stream, &mut small, &SoftCrc32c, &mut sink),
        Err(DecodeError::ScratchTooSmall)
    );
    assert!(sink.calls.is_empty());

    // Committing more than `buffer()` offered.
    let mut run = Run::new(dev());
    let room = run.decoder.buffer(&mut run.scratch).unwrap().len();
    assert_eq!(room, RECORD_HEADER_LEN);
    assert_eq!(
        run.decoder
            .commit(room + 1, &run.scratch, &SoftCrc32c, &mut run.sink),
        Err(DecodeError::ScratchTooSmall)
    );
}

#[test]
fn errno_table() {
    use DecodeError::*;
    let table = [
        (BadMagic, 22),
        (UnsupportedVersion, 93),
        (WrongDeviceKind, 19),
        (MemSizeMismatch, 19),
        (RegsLenMismatch, 74),
        (BadChecksum, 74),
        (UnknownMandatoryRecord, 95),
        (BadFlags, 95),
        (Malformed, 74),
        (Oversized, 90),
        (OutOfRange, 34),
        (UnexpectedRecord, 71),
        (Duplicate, 71),
        (CountMismatch, 74),
        (TrailingData, 22),
        (Truncated, 61),
        (ScratchTooSmall, 105),
        (Sink(SinkError(16)), 16),
    ];
    for (e, n) in table {
        assert_eq!(e.errno_hint(), n, "{e:?}");
    }
}

#[test]
fn crc_covers_record_header() {
    // A record whose CRC covers only the payload is rejected.
    let p = header_payload(VERSION, 1, SMALL_MEM as u64, 4, 0);
    let mut s = record_header(RecordType::Header.raw(), 0, 0, p.len() as u64).to_vec();
    s.extend_from_slice(&p);
    s.extend_from_slice(&checksum(&SoftCrc32c, &p).to_le_bytes());
    assert_eq!(error_of(&s), DecodeError::BadChecksum);
}
