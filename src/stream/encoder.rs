// SPDX-License-Identifier: GPL-2.0

//! Writing the migration stream.
//!
//! The record writers ([`encode_header`], [`encode_regs`], [`encode_memory`], [`encode_end`] and
//! [`encode_raw_record`]) each write one complete record into a caller buffer. [`Encoder`] walks
//! them in stop-copy order and keeps the counters the END record needs; pre-copy can interleave
//! its own [`Encoder::encode_memory`] calls through the same counters, or write its whole stream
//! in its own order through [`Encoder::encode_header`], [`Encoder::encode_memory`],
//! [`Encoder::encode_regs`] and [`Encoder::encode_end`] (see [`precopy`](super::precopy)).
//!
//! A buffer of [`SCRATCH_LEN`](super::decoder::SCRATCH_LEN) bytes holds any record.

use super::{
    crc::{
        checksum,
        Crc32c, //
    },
    format::{
        end,
        errno,
        hdr,
        put,
        put_le32,
        put_le64,
        rec,
        DeviceIdentity,
        RecordType,
        CRC_LEN,
        END_PAYLOAD_LEN,
        HEADER_PAYLOAD_LEN,
        MAGIC,
        MAX_CHUNK,
        MAX_PAYLOAD,
        MAX_REGS_LEN,
        MEMORY_OFFSET_LEN,
        RECORD_HEADER_LEN,
        RECORD_OVERHEAD,
        RECORD_TAG,
        VERSION, //
    },
};

/// A failure of a [`Source`], as a positive Linux errno number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SourceError(pub(crate) i32);

/// Where the encoder gets the device state from.
pub(crate) trait Source {
    /// Fills `out` with the device register blob; `out.len()` is the `regs_len` of the stream.
    fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError>;

    /// Fills `out` with the device memory starting at `offset`.
    ///
    /// The encoder only asks for ranges within the device memory.
    fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError>;
}

/// Why a record could not be written.
///
/// A record writer that fails has written nothing the caller may use, and an [`Encoder`] whose
/// [`Encoder::next_record`] fails is unchanged, so the call can be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// The output buffer is too small for the record.
    BufferTooSmall,
    /// A length is over its bound: `regs_len` over [`MAX_REGS_LEN`], memory data over
    /// [`MAX_CHUNK`], a payload over [`MAX_PAYLOAD`], or a counter or stream length that does not
    /// fit in 64 bits.
    Oversized,
    /// A memory range is not within the device memory.
    OutOfRange,
    /// A record where it does not belong: [`Encoder::encode_memory`] before the HEADER or after
    /// the END record, or another of the encoder's single-record writers out of its place; a
    /// pre-copy plan step that is not the plan's next one.
    UnexpectedRecord,
    /// The [`Source`] failed.
    Source(SourceError),
}

impl EncodeError {
    /// Returns a positive Linux errno number for the error.
    ///
    /// ```text
    /// BufferTooSmall    ENOBUFS   105
    /// Oversized         EMSGSIZE   90
    /// OutOfRange        ERANGE     34
    /// UnexpectedRecord  EPROTO     71
    /// Source(e)         e.0 if it is positive, else EIO (5)
    /// ```
    pub(crate) fn errno_hint(&self) -> i32 {
        match self {
            Self::BufferTooSmall => errno::ENOBUFS,
            Self::Oversized => errno::EMSGSIZE,
            Self::OutOfRange => errno::ERANGE,
            Self::UnexpectedRecord => errno::EPROTO,
            Self::Source(SourceError(e)) if *e > 0 => *e,
            Self::Source(_) => errno::EIO,
        }
    }
}

/// Writes one record of type `ty` with `flags` and a payload of `payload_len` bytes into the
/// start of `out`, and returns the record length.
///
/// `fill` writes the payload into the slice it gets, which is exactly `payload_len` bytes long.
fn write_record<C, F>(
    ty: u32,
    flags: u32,
    payload_len: usize,
    crc: &C,
    out: &mut [u8],
    fill: F,
) -> Result<usize, EncodeError>
where
    C: Crc32c,
    F: FnOnce(&mut [u8]) -> Result<(), EncodeError>,
{
    if payload_len > MAX_PAYLOAD {
        return Err(EncodeError::Oversized);
    }
    let body_len = RECORD_HEADER_LEN
        .checked_add(payload_len)
        .ok_or(EncodeError::Oversized)?;
    let total = body_len
        .checked_add(CRC_LEN)
        .ok_or(EncodeError::Oversized)?;
    let record = out.get_mut(..total).ok_or(EncodeError::BufferTooSmall)?;
    let (body, tail) = record
        .split_at_mut_checked(body_len)
        .ok_or(EncodeError::BufferTooSmall)?;
    let (header, payload) = body
        .split_at_mut_checked(RECORD_HEADER_LEN)
        .ok_or(EncodeError::BufferTooSmall)?;

    put(header, rec::TAG, &RECORD_TAG).ok_or(EncodeError::BufferTooSmall)?;
    put_le32(header, rec::TYPE, ty).ok_or(EncodeError::BufferTooSmall)?;
    put_le32(header, rec::FLAGS, flags).ok_or(EncodeError::BufferTooSmall)?;
    put_le32(header, rec::RESERVED, 0).ok_or(EncodeError::BufferTooSmall)?;
    // `payload_len <= MAX_PAYLOAD`, which fits in 64 bits.
    let wire_len = u64::try_from(payload_len).map_err(|_| EncodeError::Oversized)?;
    put_le64(header, rec::PAYLOAD_LEN, wire_len).ok_or(EncodeError::BufferTooSmall)?;

    fill(payload)?;

    let sum = checksum(crc, body);
    put_le32(tail, 0, sum).ok_or(EncodeError::BufferTooSmall)?;
    Ok(total)
}

/// Writes a record of any type with the given `flags` and `payload` into the start of `out`,
/// and returns its length.
///
/// This writes unknown (optional) records for forward compatibility and hand-made records for
/// tests; the stream's own records have their own writers.
pub(crate) fn encode_raw_record<C: Crc32c>(
    ty: u32,
    flags: u32,
    payload: &[u8],
    crc: &C,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    write_record(ty, flags, payload.len(), crc, out, |dst| {
        put(dst, 0, payload).ok_or(EncodeError::BufferTooSmall)
    })
}

/// Writes the HEADER record for `identity` and a register blob of `regs_len` bytes into the
/// start of `out`, and returns its length.
pub(crate) fn encode_header<C: Crc32c>(
    identity: DeviceIdentity,
    regs_len: u32,
    crc: &C,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    check_regs_len(regs_len)?;
    write_record(
        RecordType::Header.raw(),
        0,
        HEADER_PAYLOAD_LEN,
        crc,
        out,
        |p| {
            put(p, hdr::MAGIC, &MAGIC)
                .and_then(|()| put_le32(p, hdr::VERSION, VERSION))
                .and_then(|()| put_le32(p, hdr::KIND, identity.kind.raw()))
                .and_then(|()| put_le64(p, hdr::MEM_SIZE, identity.mem_size))
                .and_then(|()| put_le32(p, hdr::REGS_LEN, regs_len))
                .and_then(|()| put_le32(p, hdr::RESERVED, 0))
                .ok_or(EncodeError::BufferTooSmall)
        },
    )
}

/// Writes the DEVICE_REGS record with the `regs_len` bytes `source` provides into the start of
/// `out`, and returns its length.
pub(crate) fn encode_regs<S: Source, C: Crc32c>(
    regs_len: u32,
    source: &mut S,
    crc: &C,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let len = check_regs_len(regs_len)?;
    write_record(RecordType::DeviceRegs.raw(), 0, len, crc, out, |p| {
        source.regs(p).map_err(EncodeError::Source)
    })
}

/// Writes a MEMORY record with the `len` bytes of device memory at `offset` that `source`
/// provides into the start of `out`, and returns its length.
///
/// `len` is at most [`MAX_CHUNK`], and `[offset, offset + len)` must lie within the device
/// memory of `mem_size` bytes.
pub(crate) fn encode_memory<S: Source, C: Crc32c>(
    mem_size: u64,
    offset: u64,
    len: usize,
    source: &mut S,
    crc: &C,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if len > MAX_CHUNK {
        return Err(EncodeError::Oversized);
    }
    let len64 = u64::try_from(len).map_err(|_| EncodeError::Oversized)?;
    match offset.checked_add(len64) {
        Some(end) if end <= mem_size => {}
        _ => return Err(EncodeError::OutOfRange),
    }
    let payload_len = MEMORY_OFFSET_LEN
        .checked_add(len)
        .ok_or(EncodeError::Oversized)?;
    write_record(RecordType::Memory.raw(), 0, payload_len, crc, out, |p| {
        let (head, data) = p
            .split_at_mut_checked(MEMORY_OFFSET_LEN)
            .ok_or(EncodeError::BufferTooSmall)?;
        put_le64(head, 0, offset).ok_or(EncodeError::BufferTooSmall)?;
        source.memory(offset, data).map_err(EncodeError::Source)
    })
}

/// Writes the END record for a stream with `records` records and `bytes` bytes before it into
/// the start of `out`, and returns its length.
pub(crate) fn encode_end<C: Crc32c>(
    records: u64,
    bytes: u64,
    crc: &C,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let mut payload = [0u8; END_PAYLOAD_LEN];
    put_le64(&mut payload, end::RECORDS, records)
        .and_then(|()| put_le64(&mut payload, end::BYTES, bytes))
        .ok_or(EncodeError::BufferTooSmall)?;
    encode_raw_record(RecordType::End.raw(), 0, &payload, crc, out)
}

/// Checks `regs_len` against [`MAX_REGS_LEN`] and returns it as a `usize`.
fn check_regs_len(regs_len: u32) -> Result<usize, EncodeError> {
    match usize::try_from(regs_len) {
        Ok(len) if len <= MAX_REGS_LEN => Ok(len),
        _ => Err(EncodeError::Oversized),
    }
}

/// Converts a record length to `u64`.
fn len_u64(len: usize) -> Result<u64, EncodeError> {
    u64::try_from(len).map_err(|_| EncodeError::Oversized)
}

/// Returns the exact length in bytes of the stop-copy stream [`Encoder`] writes for `identity`
/// and a register blob of `regs_len` bytes.
pub(crate) fn stream_len(identity: DeviceIdentity, regs_len: u32) -> Result<u64, EncodeError> {
    let overhead = len_u64(RECORD_OVERHEAD)?;
    let regs = len_u64(check_regs_len(regs_len)?)?;
    let chunk = len_u64(MAX_CHUNK)?;
    let mem_size = identity.mem_size;
    let chunks = mem_size.div_ceil(chunk);
    let per_chunk = overhead
        .checked_add(len_u64(MEMORY_OFFSET_LEN)?)
        .ok_or(EncodeError::Oversized)?;

    let header = overhead.checked_add(len_u64(HEADER_PAYLOAD_LEN)?);
    let regs = overhead.checked_add(regs);
    let memory = chunks
        .checked_mul(per_chunk)
        .and_then(|m| m.checked_add(mem_size));
    let end = overhead.checked_add(len_u64(END_PAYLOAD_LEN)?);
    header
        .zip(regs)
        .zip(memory)
        .zip(end)
        .and_then(|(((h, r), m), e)| h.checked_add(r)?.checked_add(m)?.checked_add(e))
        .ok_or(EncodeError::Oversized)
}

/// The counters the END record carries: what has been written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Number of records written.
    pub(crate) records: u64,
    /// Number of bytes written.
    pub(crate) bytes: u64,
}

impl Tally {
    /// Returns the tally after one more record of `len` bytes.
    fn after(self, len: usize) -> Result<Self, EncodeError> {
        Ok(Self {
            records: self.records.checked_add(1).ok_or(EncodeError::Oversized)?,
            bytes: self
                .bytes
                .checked_add(len_u64(len)?)
                .ok_or(EncodeError::Oversized)?,
        })
    }
}

/// The next record the stop-copy walk of an [`Encoder`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The HEADER record.
    Header,
    /// The DEVICE_REGS record.
    Regs,
    /// The MEMORY record for the data at the given offset, or END if the offset is at the end
    /// of the device memory.
    Memory(u64),
    /// Nothing: the stream is complete.
    Done,
}

/// Writes a stop-copy stream, one record at a time.
///
/// The stream is HEADER, DEVICE_REGS, MEMORY records covering `[0, mem_size)` in order in pieces
/// of [`MAX_CHUNK`] bytes (the last one shorter), and END. Its length is [`stream_len`].
///
/// # Invariants
///
/// `tally` counts exactly the records and bytes this encoder has returned so far, and `step` is
/// the next record of the walk.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encoder {
    /// The device the stream describes.
    identity: DeviceIdentity,
    /// Length of the register blob.
    regs_len: u32,
    /// The next record of the walk.
    step: Step,
    /// Everything written so far.
    tally: Tally,
}

impl Encoder {
    /// Creates an encoder for the device `identity` with a register blob of `regs_len` bytes.
    ///
    /// A `regs_len` over [`MAX_REGS_LEN`] makes the first [`Encoder::next_record`] fail.
    pub(crate) fn new(identity: DeviceIdentity, regs_len: u32) -> Self {
        Self {
            identity,
            regs_len,
            step: Step::Header,
            tally: Tally::default(),
        }
    }

    /// Returns the records and bytes written so far.
    pub(crate) fn tally(&self) -> Tally {
        self.tally
    }

    /// Returns whether the END record has been written.
    pub(crate) fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Accounts for a record of `len` bytes that `result` wrote and returns `len`.
    fn account(&mut self, result: Result<usize, EncodeError>) -> Result<usize, EncodeError> {
        let len = result?;
        self.tally = self.tally.after(len)?;
        Ok(len)
    }

    /// Writes a MEMORY record for `len` bytes at `offset` into the start of `out`, counts it and
    /// returns its length; see [`encode_memory`].
    ///
    /// This is for pre-copy, which sends memory ranges of its choice between the HEADER and the
    /// stop-copy part of the stream: it fails before [`Encoder::next_record`] has written the
    /// HEADER and after it has written END.
    pub(crate) fn encode_memory<S: Source, C: Crc32c>(
        &mut self,
        offset: u64,
        len: usize,
        source: &mut S,
        crc: &C,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if matches!(self.step, Step::Header | Step::Done) {
            return Err(EncodeError::UnexpectedRecord);
        }
        let result = encode_memory(self.identity.mem_size, offset, len, source, crc, out);
        self.account(result)
    }

    /// Writes the HEADER record into the start of `out`, counts it and returns its length.
    ///
    /// This is for pre-copy, which writes its records one at a time in an order of its own; it
    /// fails unless the HEADER is the next record, i.e. before any other call wrote a record.
    /// Afterwards [`Encoder::next_record`] would continue with the stop-copy walk from
    /// DEVICE_REGS on, exactly as if it had written the HEADER itself.
    pub(crate) fn encode_header<C: Crc32c>(
        &mut self,
        crc: &C,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if self.step != Step::Header {
            return Err(EncodeError::UnexpectedRecord);
        }
        let result = encode_header(self.identity, self.regs_len, crc, out);
        let len = self.account(result)?;
        self.step = Step::Regs;
        Ok(len)
    }

    /// Writes the DEVICE_REGS record with the register blob `source` provides into the start of
    /// `out`, counts it and returns its length, for a stream whose memory pre-copy sends itself
    /// with [`Encoder::encode_memory`].
    ///
    /// It fails unless DEVICE_REGS is the next record of the stop-copy walk (after the HEADER,
    /// and [`Encoder::next_record`] has not written DEVICE_REGS yet). Afterwards the walk has no
    /// MEMORY records left: its next record is END ([`Encoder::encode_end`]).
    pub(crate) fn encode_regs<S: Source, C: Crc32c>(
        &mut self,
        source: &mut S,
        crc: &C,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        if self.step != Step::Regs {
            return Err(EncodeError::UnexpectedRecord);
        }
        let result = encode_regs(self.regs_len, source, crc, out);
        let len = self.account(result)?;
        self.step = Step::Memory(self.identity.mem_size);
        Ok(len)
    }

    /// Writes the END record into the start of `out`, counts it and returns its length.
    ///
    /// It fails unless END is the next record of the stop-copy walk: after
    /// [`Encoder::encode_regs`], or after the walk's last MEMORY record.
    pub(crate) fn encode_end<C: Crc32c>(
        &mut self,
        crc: &C,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        match self.step {
            Step::Memory(offset) if offset >= self.identity.mem_size => {}
            _ => return Err(EncodeError::UnexpectedRecord),
        }
        let result = encode_end(self.tally.records, self.tally.bytes, crc, out);
        let len = self.account(result)?;
        self.step = Step::Done;
        Ok(len)
    }

    /// Writes the next record of the stop-copy stream into the start of `out` and returns its
    /// length, or `None` once the END record has been written.
    ///
    /// `out` must be long enough for the record; [`SCRATCH_LEN`](super::decoder::SCRATCH_LEN)
    /// bytes always are. On error nothing changes and the call may be retried.
    pub(crate) fn next_record<S: Source, C: Crc32c>(
        &mut self,
        source: &mut S,
        crc: &C,
        out: &mut [u8],
    ) -> Result<Option<usize>, EncodeError> {
        let mem_size = self.identity.mem_size;
        let (result, next) = match self.step {
            Step::Header => (
                encode_header(self.identity, self.regs_len, crc, out),
                Step::Regs,
            ),
            Step::Regs => (
                encode_regs(self.regs_len, source, crc, out),
                Step::Memory(0),
            ),
            Step::Memory(offset) if offset < mem_size => {
                let left = mem_size.saturating_sub(offset);
                let len = usize::try_from(left).map_or(MAX_CHUNK, |left| left.min(MAX_CHUNK));
                let len64 = len_u64(len)?;
                let next = offset.checked_add(len64).ok_or(EncodeError::OutOfRange)?;
                (
                    encode_memory(mem_size, offset, len, source, crc, out),
                    Step::Memory(next),
                )
            }
            Step::Memory(_) => (
                encode_end(self.tally.records, self.tally.bytes, crc, out),
                Step::Done,
            ),
            Step::Done => return Ok(None),
        };
        let len = self.account(result)?;
        self.step = next;
        Ok(Some(len))
    }
}
