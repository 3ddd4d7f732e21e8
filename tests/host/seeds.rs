// SPDX-License-Identifier: GPL-2.0

//! Seed inputs for the fuzz targets in `fuzz/`, made from real streams.
//!
//! [`decode`] gives inputs for the `decode` target: stop-copy streams the [`Encoder`] writes for
//! devices of several sizes, streams with many small MEMORY records in any order (as pre-copy
//! writes them) and an optional record, and malformed variants of them that each stop the
//! decoder at another check. [`roundtrip`] gives inputs for the `roundtrip` target, one per memory
//! size class. The `fuzz-seeds` binary (`bin/fuzz-seeds.rs`) writes them into the corpus
//! directories.
//!
//! [`Encoder`]: crate::stream::Encoder

use alloc::{
    format,
    string::String,
    vec,
    vec::Vec, //
};

use crate::{
    harness,
    stream::{
        crc::{
            checksum,
            SoftCrc32c, //
        },
        format::{
            FLAG_OPTIONAL,
            MAGIC,
            MAX_CHUNK,
            RECORD_TAG,
            VERSION, //
        },
    },
};

/// Record types on the wire.
const HEADER: u32 = 1;
/// DEVICE_REGS.
const REGS: u32 = 2;
/// MEMORY.
const MEMORY: u32 = 3;
/// END.
const END: u32 = 0xFFFF;

/// Decode target control byte: in-place API.
const IN_PLACE: u8 = 0x04;
/// Decode target control byte: ivshmem-plain.
const IVSHMEM: u8 = 0x10;
/// Decode target control byte: device memory size from the HEADER.
const MEM_FROM_HEADER: u8 = 0x40;

/// Returns `len` pseudo-random bytes from `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A stream under construction, record by record, with any field values.
#[derive(Clone, Default)]
struct Stream {
    /// The bytes so far.
    bytes: Vec<u8>,
    /// Number of records so far.
    records: u64,
}

impl Stream {
    /// Appends a record with any type, flags, reserved field and payload, and a correct CRC.
    fn record(mut self, ty: u32, flags: u32, reserved: u32, payload: &[u8]) -> Self {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&RECORD_TAG);
        self.bytes.extend_from_slice(&ty.to_le_bytes());
        self.bytes.extend_from_slice(&flags.to_le_bytes());
        self.bytes.extend_from_slice(&reserved.to_le_bytes());
        self.bytes
            .extend_from_slice(&(payload.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(payload);
        let sum = checksum(&SoftCrc32c, &self.bytes[start..]);
        self.bytes.extend_from_slice(&sum.to_le_bytes());
        self.records += 1;
        self
    }

    /// Appends a version 1 HEADER.
    fn header(self, kind: u32, mem_size: u64, regs_len: u32) -> Self {
        let p = header_payload(VERSION, kind, mem_size, regs_len);
        self.record(HEADER, 0, 0, &p)
    }

    /// Appends a MEMORY record for `data` at `offset`.
    fn memory(self, offset: u64, data: &[u8]) -> Self {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(data);
        self.record(MEMORY, 0, 0, &p)
    }

    /// Appends an END record with the right counters.
    fn end(self) -> Self {
        let (records, bytes) = (self.records, self.bytes.len() as u64);
        self.end_with(records, bytes)
    }

    /// Appends an END record with the given counters.
    fn end_with(self, records: u64, bytes: u64) -> Self {
        let mut p = records.to_le_bytes().to_vec();
        p.extend_from_slice(&bytes.to_le_bytes());
        self.record(END, 0, 0, &p)
    }
}

/// Returns a HEADER payload.
fn header_payload(version: u32, kind: u32, mem_size: u64, regs_len: u32) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p.extend_from_slice(&kind.to_le_bytes());
    p.extend_from_slice(&mem_size.to_le_bytes());
    p.extend_from_slice(&regs_len.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p
}

/// Returns a decode target input in mode 0 (or 1 with `fix_crcs`) for `stream`, cut in `pieces`
/// (see `harness::DecodeParams::pieces`).
fn raw_input(ctl: u8, pieces: &[u8], stream: &[u8]) -> Vec<u8> {
    let mut v = vec![ctl, 0, pieces.len() as u8];
    v.extend_from_slice(pieces);
    v.extend_from_slice(stream);
    v
}

/// Calls `emit` with the name and contents of every seed input of the `decode` target.
pub fn decode(mut emit: impl FnMut(&str, &[u8])) {
    // Stop-copy streams from the Encoder, as the save file writes them, for devices of several
    // sizes (up to 64 KiB: the target takes memory sizes up to that from the HEADER).
    let mut out = vec![0u8; 2 * MAX_CHUNK];
    for (kind, mem_size, regs_len) in [
        (1, 0, 0),
        (1, 1, 1),
        (1, 4096, 64),
        (2, 4096, 0),
        (1, 4095, 256),
        (2, 12288, 17),
        (1, 65536, 64),
    ] {
        let mem = bytes(mem_size, mem_size as u64 + 7);
        let regs = bytes(regs_len, regs_len as u64 + 3);
        let Some(len) = harness::encode(kind, &mem, &regs, &mut out) else {
            continue;
        };
        let ctl = MEM_FROM_HEADER | if kind == 2 { IVSHMEM } else { 0 };
        let name = format!("stopcopy-k{kind}-m{mem_size}-r{regs_len}");
        emit(&name, &raw_input(ctl, &[], &out[..len]));
        // The same in small pieces, through the in-place API.
        emit(
            &format!("{name}-pieces"),
            &raw_input(ctl | IN_PLACE, &[0, 6, 30, 0x80], &out[..len]),
        );
    }

    // A pre-copy style stream: many small MEMORY records out of order, overlapping, one empty,
    // DEVICE_REGS in the middle, an unknown optional record.
    let regs = bytes(40, 11);
    let body = Stream::default()
        .header(1, 4096, 40)
        .memory(0, &bytes(1000, 1))
        .memory(3000, &bytes(1096, 2))
        .record(REGS, 0, 0, &regs)
        .memory(500, &bytes(800, 3))
        .record(0x1234, FLAG_OPTIONAL, 0, b"skip me")
        .memory(4096, &[])
        .memory(1000, &bytes(2000, 4));
    let good = body.clone().end();
    emit("precopy", &raw_input(0, &[], &good.bytes));
    emit("precopy-bytes", &raw_input(0, &[0], &good.bytes));

    // Malformed variants, each stopping the decoder at another check.
    let base = || Stream::default().header(1, 4096, 8);
    let regs8 = bytes(8, 5);
    let mem = bytes(4096, 6);
    let valid = || base().record(REGS, 0, 0, &regs8).memory(0, &mem);
    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, s: &[u8]| bad.push((String::from(name), s.to_vec()));

    let full = valid().end().bytes;
    for cut in [0, 1, 23, 24, 59, 60, 100, full.len() - 45, full.len() - 1] {
        add(&format!("truncated-{cut}"), &full[..cut]);
    }
    let mut trailing = full.clone();
    trailing.push(0);
    add("trailing-byte", &trailing);
    let mut twice = full.clone();
    twice.extend_from_slice(&full);
    add("stream-twice", &twice);
    let mut crc = full.clone();
    crc[200] ^= 0x20;
    add("crc-payload", &crc);
    let mut crc = full.clone();
    crc[59] ^= 1;
    add("crc-field", &crc);
    let mut tag = full.clone();
    tag[0] = b'X';
    add("tag", &tag);
    add("no-end", &valid().bytes);
    add("no-regs", &base().memory(0, &mem).end().bytes);
    add("no-memory", &base().record(REGS, 0, 0, &regs8).end().bytes);
    add("second-header", &valid().header(1, 4096, 8).end().bytes);
    add(
        "second-regs",
        &valid().record(REGS, 0, 0, &regs8).end().bytes,
    );
    add(
        "memory-first",
        &Stream::default().memory(0, &mem).end().bytes,
    );
    add(
        "regs-first",
        &Stream::default().record(REGS, 0, 0, &regs8).end().bytes,
    );
    add(
        "end-before-regs",
        &base()
            .memory(0, &mem)
            .end()
            .record(REGS, 0, 0, &regs8)
            .bytes,
    );
    for (name, p) in [
        ("wrong-kind", header_payload(VERSION, 2, 4096, 8)),
        ("unknown-kind", header_payload(VERSION, 9, 4096, 8)),
        ("wrong-mem-size", header_payload(VERSION, 1, 8192, 8)),
        ("version-2", header_payload(2, 1, 4096, 8)),
        ("version-0", header_payload(0, 1, 4096, 8)),
        ("regs-len-257", header_payload(VERSION, 1, 4096, 257)),
    ] {
        add(
            name,
            &Stream::default()
                .record(HEADER, 0, 0, &p)
                .record(REGS, 0, 0, &regs8)
                .memory(0, &mem)
                .end()
                .bytes,
        );
    }
    let p = header_payload(VERSION, 1, 4096, 8);
    let mut magic = p.clone();
    magic[0] ^= 1;
    let mut reserved = p.clone();
    reserved[28] = 1;
    let mut longer = p.clone();
    longer.extend_from_slice(&[0; 8]);
    for (name, p) in [
        ("magic", magic),
        ("header-reserved", reserved),
        ("header-40", longer),
        ("header-12", p[..12].to_vec()),
        ("header-11", p[..11].to_vec()),
    ] {
        add(
            name,
            &Stream::default()
                .record(HEADER, 0, 0, &p)
                .record(REGS, 0, 0, &regs8)
                .end()
                .bytes,
        );
    }
    add(
        "regs-len-mismatch",
        &base().record(REGS, 0, 0, &regs8[..7]).end().bytes,
    );
    add(
        "memory-out-of-range",
        &valid().memory(4000, &mem[..97]).end().bytes,
    );
    add(
        "memory-offset-overflow",
        &valid().memory(u64::MAX - 3, &mem[..8]).end().bytes,
    );
    add(
        "memory-no-offset",
        &valid().record(MEMORY, 0, 0, &[0; 7]).end().bytes,
    );
    add(
        "unknown-mandatory",
        &valid().record(7, 0, 0, b"data").end().bytes,
    );
    add(
        "unknown-optional",
        &valid().record(7, FLAG_OPTIONAL, 0, b"data").end().bytes,
    );
    add(
        "optional-known-type",
        &valid()
            .record(MEMORY, FLAG_OPTIONAL, 0, &[0; 9])
            .end()
            .bytes,
    );
    add(
        "unknown-flag",
        &valid().record(7, 2 | FLAG_OPTIONAL, 0, b"").end().bytes,
    );
    add(
        "record-reserved",
        &valid().record(MEMORY, 0, 1, &[0; 9]).end().bytes,
    );
    let v = valid();
    let (records, bytes_before) = (v.records, v.bytes.len() as u64);
    add(
        "end-records-high",
        &valid().end_with(records + 1, bytes_before).bytes,
    );
    add(
        "end-bytes-low",
        &valid().end_with(records, bytes_before - 1).bytes,
    );
    add("end-17", &valid().record(END, 0, 0, &[0; 17]).bytes);
    // Payload lengths over the bounds, in a record header with nothing after it.
    for (name, ty, len) in [
        ("memory-oversized", MEMORY, (8 + MAX_CHUNK + 1) as u64),
        ("optional-oversized", 7, (8 + MAX_CHUNK + 1) as u64),
        ("regs-oversized", REGS, 257),
        ("payload-2-63", MEMORY, 1 << 63),
    ] {
        let mut s = if ty == REGS { base() } else { valid() }.bytes;
        s.extend_from_slice(&RECORD_TAG);
        s.extend_from_slice(&ty.to_le_bytes());
        let flags = if ty == 7 { FLAG_OPTIONAL } else { 0 };
        s.extend_from_slice(&flags.to_le_bytes());
        s.extend_from_slice(&0u32.to_le_bytes());
        s.extend_from_slice(&len.to_le_bytes());
        s.extend_from_slice(&[0; 64]);
        add(name, &s);
    }

    for (name, s) in &bad {
        emit(&format!("bad-{name}"), &raw_input(0, &[], s));
    }
    // Mode 1 (CRCs fixed by the target) for the one that only differs in a payload byte.
    let (_, crc) = &bad[bad
        .iter()
        .position(|(n, _)| n == "crc-payload")
        .unwrap_or(0)];
    emit("fixcrc-crc-payload", &raw_input(1, &[3, 0x81], crc));

    // Mode 2: streams the target encodes and mutates. Parameters: le16 memory size (mod 4096),
    // a byte whose high nibble 0xF adds MAX_CHUNK, regs_len, le16 seed; then mutations.
    for (name, ctl, params) in [
        ("gen-small", 2u8, vec![0x00, 0x01, 0, 16, 1, 0]),
        ("gen-4095", 2 | IN_PLACE, vec![0xFF, 0x0F, 0, 255, 2, 0]),
        ("gen-chunk-plus", 2, vec![0x10, 0x00, 0xF0, 64, 3, 0]),
        (
            "gen-flip",
            2 | 0x20,
            vec![0x00, 0x02, 0, 8, 4, 0, 100, 0, 0x40, 30, 0, 0x01],
        ),
        ("gen-truncate", 2, vec![0x00, 0x02, 0, 8, 5, 0, 90, 0, 0]),
    ] {
        let mut v = vec![ctl, 0, 1, 0x83];
        v.extend_from_slice(&params);
        emit(name, &v);
    }
}

/// Calls `emit` with the name and contents of every seed input of the `roundtrip` target: one
/// per memory size class, with and without cuts and truncation.
pub fn roundtrip(mut emit: impl FnMut(&str, &[u8])) {
    for (name, ctl, mem, regs, cuts) in [
        ("empty", 0u8, 0u16, 0u16, &[][..]),
        ("small", 0, 100, 1, &[1, 0, 7, 0, 0, 0][..]),
        ("page-ivshmem", 1 | 2 | 4, 4096, 256, &[24, 0, 4, 0][..]),
        ("64k", 12 << 3 | 4, 65535, 64, &[0xFF, 0x0F, 3, 0][..]),
        ("chunk", 15 << 3 | 4, 300, 32, &[0, 0x10, 1, 0][..]),
        ("chunks", 15 << 3 | 2 | 4, 301, 16, &[0xFF, 0xFF][..]),
    ] {
        let mut v = vec![ctl];
        v.extend_from_slice(&mem.to_le_bytes());
        v.extend_from_slice(&regs.to_le_bytes());
        v.extend_from_slice(&[0x35, 0x12]);
        v.push((cuts.len() / 2) as u8);
        v.extend_from_slice(cuts);
        v.extend_from_slice(b"QVPR\x03\0\0\0");
        emit(name, &v);
    }
}
