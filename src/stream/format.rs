// SPDX-License-Identifier: GPL-2.0

//! The wire format of the migration stream, byte by byte.
//!
//! `Documentation/stream-format.rst` describes the same format for readers of the C side.
//! All multi-byte integers are little-endian (`le32`, `le64`). Offsets are in bytes.
//!
//! # Stream
//!
//! A stream is a sequence of records:
//!
//! ```text
//! HEADER  { DEVICE_REGS | MEMORY | unknown optional record }  END
//! ```
//!
//! - The first record is a `HEADER`, and there is exactly one.
//! - There is exactly one `DEVICE_REGS` record, anywhere between `HEADER` and `END`.
//! - There may be any number of `MEMORY` records, in any order, for any ranges, also overlapping
//!   ones: they are applied in stream order, so a later record for a range overwrites an earlier
//!   one (pre-copy resends dirty pages this way). A stop-copy stream written by the
//!   [`Encoder`](super::encoder::Encoder) covers `[0, mem_size)` exactly once, in order, in
//!   pieces of [`MAX_CHUNK`] bytes.
//! - The last record is an `END`. Nothing may follow it, not even one byte.
//!
//! # Record
//!
//! Every record is a 24-byte record header, the payload and a 4-byte CRC:
//!
//! ```text
//! offset  size  field
//!      0     4  tag          the bytes "QVPR" (RECORD_TAG)
//!      4     4  type         le32: 1 HEADER, 2 DEVICE_REGS, 3 MEMORY, 0xFFFF END
//!      8     4  flags        le32: bit 0 OPTIONAL; bits 1-31 must be 0
//!     12     4  reserved     le32: must be 0
//!     16     8  payload_len  le64: number of payload bytes (n)
//!     24     n  payload      depends on type
//!   24+n     4  crc          le32: CRC-32C of bytes [0, 24+n), i.e. header and payload
//! ```
//!
//! The CRC is the standard CRC-32C, `~crc32c(~0, record, 24 + n)` in kernel C (see
//! [`crc`](super::crc)).
//!
//! Each type has a maximum payload length (table below); the decoder rejects a larger
//! `payload_len` as soon as it has the 24 header bytes, before it buffers any payload. No record
//! is longer than [`MAX_RECORD_LEN`].
//!
//! The `OPTIONAL` flag is only valid on record types this version does not know. A decoder
//! checks the CRC of an unknown optional record and skips it; it rejects an unknown record
//! without the flag. The types defined here are all mandatory and must not carry the flag.
//!
//! ```text
//! type         name         payload_len        payload
//! 1            HEADER       12..=256           see below (32 bytes in version 1)
//! 2            DEVICE_REGS  0..=256            the register blob, regs_len bytes
//! 3            MEMORY       8..=8+MAX_CHUNK    le64 offset, then data
//! 0xFFFF       END          16                 le64 records, le64 bytes
//! other, opt.  (skipped)    0..=8+MAX_CHUNK    anything
//! ```
//!
//! # HEADER payload
//!
//! ```text
//! offset  size  field
//!      0     8  magic        the bytes "QVFIOMIG" (MAGIC)
//!      8     4  version      le32: 1 (VERSION)
//!     12     4  device kind  le32: 1 bochs-display, 2 ivshmem-plain
//!     16     8  mem_size     le64: size of the device memory in bytes
//!     24     4  regs_len     le32: length of the DEVICE_REGS blob, at most MAX_REGS_LEN
//!     28     4  reserved     le32: must be 0
//! ```
//!
//! The first 12 bytes (magic and version) keep their meaning in every version. The HEADER
//! payload may grow in later versions, up to [`MAX_HEADER_PAYLOAD`] bytes, so that a decoder of
//! this version reports an unsupported version rather than a malformed record. A version 1
//! HEADER payload is exactly [`HEADER_PAYLOAD_LEN`] bytes.
//!
//! The destination checks the device kind and `mem_size` against its own device.
//!
//! # DEVICE_REGS payload
//!
//! The device's register state, an opaque blob whose layout the device backend defines.
//! `payload_len` must equal `regs_len` of the HEADER.
//!
//! # MEMORY payload
//!
//! ```text
//! offset  size  field
//!      0     8  offset       le64: where the data goes in the device memory
//!      8     n  data         n = payload_len - 8 bytes, 0 <= n <= MAX_CHUNK
//! ```
//!
//! `offset + n` must not exceed `mem_size` (nor overflow).
//!
//! # END payload
//!
//! ```text
//! offset  size  field
//!      0     8  records      le64: number of records before END, HEADER and skipped ones included
//!      8     8  bytes        le64: number of stream bytes before END (END's offset in the stream)
//! ```
//!
//! Together with the per-record CRC these detect dropped, repeated or truncated records.

/// The 4 bytes every record starts with.
pub(crate) const RECORD_TAG: [u8; 4] = *b"QVPR";

/// The 8 bytes the HEADER payload starts with.
pub(crate) const MAGIC: [u8; 8] = *b"QVFIOMIG";

/// The format version this code writes and reads.
pub(crate) const VERSION: u32 = 1;

/// Length of the record header: tag, type, flags, reserved and payload length.
pub(crate) const RECORD_HEADER_LEN: usize = 24;

/// Length of the CRC that follows the payload of every record.
pub(crate) const CRC_LEN: usize = 4;

/// Bytes a record adds to its payload: the record header and the CRC.
pub(crate) const RECORD_OVERHEAD: usize = RECORD_HEADER_LEN + CRC_LEN;

/// Record flag: a decoder that does not know the record type skips the record instead of
/// rejecting the stream.
pub(crate) const FLAG_OPTIONAL: u32 = 1;

/// All record flags this version defines. The others must be 0.
pub(crate) const FLAGS_KNOWN: u32 = FLAG_OPTIONAL;

/// Length of a version 1 HEADER payload.
pub(crate) const HEADER_PAYLOAD_LEN: usize = 32;

/// Smallest HEADER payload a decoder accepts before it looks at the version: magic and version.
pub(crate) const MIN_HEADER_PAYLOAD: usize = 12;

/// Largest HEADER payload of any version.
pub(crate) const MAX_HEADER_PAYLOAD: usize = 256;

/// Largest device register blob.
pub(crate) const MAX_REGS_LEN: usize = 256;

/// Largest amount of device memory in one MEMORY record.
///
/// 256 KiB keeps the per-record overhead (36 bytes) below 0.014 % while keeping the one-record
/// buffer both sides need ([`MAX_RECORD_LEN`], a little over 256 KiB) small enough to allocate
/// per open migration file. The decoder buffers a whole record before it checks its CRC and
/// applies it, so this is also the largest amount of data that is held back from the device.
pub(crate) const MAX_CHUNK: usize = 256 * 1024;

/// Length of the offset field that starts a MEMORY payload.
pub(crate) const MEMORY_OFFSET_LEN: usize = 8;

/// Largest MEMORY payload: offset and [`MAX_CHUNK`] bytes of data.
pub(crate) const MAX_MEMORY_PAYLOAD: usize = MEMORY_OFFSET_LEN + MAX_CHUNK;

/// Length of the END payload.
pub(crate) const END_PAYLOAD_LEN: usize = 16;

/// Largest payload of any record, unknown optional records included.
pub(crate) const MAX_PAYLOAD: usize = MAX_MEMORY_PAYLOAD;

/// Largest record of any type.
pub(crate) const MAX_RECORD_LEN: usize = RECORD_OVERHEAD + MAX_PAYLOAD;

// `MAX_PAYLOAD` bounds the payload of every record type.
const _: () = assert!(MAX_HEADER_PAYLOAD <= MAX_PAYLOAD);
const _: () = assert!(MAX_REGS_LEN <= MAX_PAYLOAD);
const _: () = assert!(END_PAYLOAD_LEN <= MAX_PAYLOAD);
const _: () = assert!(HEADER_PAYLOAD_LEN <= MAX_HEADER_PAYLOAD);
const _: () = assert!(MIN_HEADER_PAYLOAD <= HEADER_PAYLOAD_LEN);

/// The record types this version knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum RecordType {
    /// Stream header: format version and device identity. Always the first record.
    Header = 1,
    /// The device register blob.
    DeviceRegs = 2,
    /// A range of device memory.
    Memory = 3,
    /// End of stream, with counters over everything before it. Always the last record.
    End = 0xFFFF,
}

impl RecordType {
    /// Returns the record type with the wire value `raw`, if this version knows it.
    pub(crate) const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Header),
            2 => Some(Self::DeviceRegs),
            3 => Some(Self::Memory),
            0xFFFF => Some(Self::End),
            _ => None,
        }
    }

    /// Returns the wire value of the record type.
    pub(crate) const fn raw(self) -> u32 {
        self as u32
    }

    /// Returns the smallest and largest payload length of a record of this type.
    pub(crate) const fn payload_bounds(self) -> (usize, usize) {
        match self {
            Self::Header => (MIN_HEADER_PAYLOAD, MAX_HEADER_PAYLOAD),
            Self::DeviceRegs => (0, MAX_REGS_LEN),
            Self::Memory => (MEMORY_OFFSET_LEN, MAX_MEMORY_PAYLOAD),
            Self::End => (END_PAYLOAD_LEN, END_PAYLOAD_LEN),
        }
    }
}

/// The kinds of device the stream can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum DeviceKind {
    /// QEMU's `bochs-display`.
    BochsDisplay = 1,
    /// QEMU's `ivshmem-plain`.
    IvshmemPlain = 2,
}

impl DeviceKind {
    /// Returns the device kind with the wire value `raw`, if there is one.
    pub(crate) const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::BochsDisplay),
            2 => Some(Self::IvshmemPlain),
            _ => None,
        }
    }

    /// Returns the wire value of the device kind.
    pub(crate) const fn raw(self) -> u32 {
        self as u32
    }
}

/// What identifies a device for migration: the source's and the destination's must be equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceIdentity {
    /// The kind of device.
    pub(crate) kind: DeviceKind,
    /// Size of the device memory in bytes, all of which the stream carries.
    pub(crate) mem_size: u64,
}

/// The contents of a HEADER record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// The format version; [`VERSION`] in every header the decoder accepts.
    pub(crate) version: u32,
    /// The device the stream was taken from.
    pub(crate) identity: DeviceIdentity,
    /// Length of the device register blob; at most [`MAX_REGS_LEN`].
    pub(crate) regs_len: u32,
}

/// Field offsets in the record header.
pub(crate) mod rec {
    /// Offset of the tag.
    pub(crate) const TAG: usize = 0;
    /// Offset of the type.
    pub(crate) const TYPE: usize = 4;
    /// Offset of the flags.
    pub(crate) const FLAGS: usize = 8;
    /// Offset of the reserved field.
    pub(crate) const RESERVED: usize = 12;
    /// Offset of the payload length.
    pub(crate) const PAYLOAD_LEN: usize = 16;
}

/// Field offsets in the HEADER payload.
pub(crate) mod hdr {
    /// Offset of the magic.
    pub(crate) const MAGIC: usize = 0;
    /// Offset of the version.
    pub(crate) const VERSION: usize = 8;
    /// Offset of the device kind.
    pub(crate) const KIND: usize = 12;
    /// Offset of the device memory size.
    pub(crate) const MEM_SIZE: usize = 16;
    /// Offset of the register blob length.
    pub(crate) const REGS_LEN: usize = 24;
    /// Offset of the reserved field.
    pub(crate) const RESERVED: usize = 28;
}

/// Field offsets in the END payload.
pub(crate) mod end {
    /// Offset of the record count.
    pub(crate) const RECORDS: usize = 0;
    /// Offset of the byte count.
    pub(crate) const BYTES: usize = 8;
}

/// Returns the `N` bytes at `at` in `buf`, or `None` if `buf` is too short.
pub(crate) fn get_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    buf.get(at..end)?.try_into().ok()
}

/// Reads the `le32` at `at` in `buf`, or returns `None` if `buf` is too short.
pub(crate) fn get_le32(buf: &[u8], at: usize) -> Option<u32> {
    get_array(buf, at).map(u32::from_le_bytes)
}

/// Reads the `le64` at `at` in `buf`, or returns `None` if `buf` is too short.
pub(crate) fn get_le64(buf: &[u8], at: usize) -> Option<u64> {
    get_array(buf, at).map(u64::from_le_bytes)
}

/// Copies `bytes` to `at` in `buf`, or returns `None` (writing nothing) if `buf` is too short.
pub(crate) fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Option<()> {
    let end = at.checked_add(bytes.len())?;
    buf.get_mut(at..end)?.copy_from_slice(bytes);
    Some(())
}

/// Writes the `le32` `v` at `at` in `buf`, or returns `None` if `buf` is too short.
pub(crate) fn put_le32(buf: &mut [u8], at: usize, v: u32) -> Option<()> {
    put(buf, at, &v.to_le_bytes())
}

/// Writes the `le64` `v` at `at` in `buf`, or returns `None` if `buf` is too short.
pub(crate) fn put_le64(buf: &mut [u8], at: usize, v: u64) -> Option<()> {
    put(buf, at, &v.to_le_bytes())
}

/// Linux errno numbers, positive, as the stream code reports them.
///
/// The values are the ones of `include/uapi/asm-generic/errno-base.h` and `errno.h`, which x86,
/// arm64, riscv and most other architectures use (alpha, mips, parisc and sparc differ).
pub(crate) mod errno {
    /// I/O error.
    pub(crate) const EIO: i32 = 5;
    /// No such device.
    pub(crate) const ENODEV: i32 = 19;
    /// Invalid argument.
    pub(crate) const EINVAL: i32 = 22;
    /// Math result not representable.
    pub(crate) const ERANGE: i32 = 34;
    /// No data available.
    pub(crate) const ENODATA: i32 = 61;
    /// Protocol error.
    pub(crate) const EPROTO: i32 = 71;
    /// Not a data message.
    pub(crate) const EBADMSG: i32 = 74;
    /// Message too long.
    pub(crate) const EMSGSIZE: i32 = 90;
    /// Protocol not supported.
    pub(crate) const EPROTONOSUPPORT: i32 = 93;
    /// Operation not supported.
    pub(crate) const EOPNOTSUPP: i32 = 95;
    /// No buffer space available.
    pub(crate) const ENOBUFS: i32 = 105;
}
