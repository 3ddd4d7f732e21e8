// SPDX-License-Identifier: GPL-2.0

//! Reading the migration stream.
//!
//! [`Decoder`] takes the stream in pieces of any size and calls a [`Sink`] once per record. It
//! buffers each record completely in a caller-provided scratch buffer of [`SCRATCH_LEN`] bytes
//! and validates all of it (CRC, bounds, order, device identity) before the sink sees any of it,
//! so corrupt or malicious input never reaches the device. The result does not depend on how the
//! stream is cut into pieces.
//!
//! Input is copied exactly once, into the scratch buffer; the sink gets slices of it. Callers
//! that can write the input straight into the scratch buffer (`copy_from_user()`) use
//! [`Decoder::buffer`] and [`Decoder::commit`] instead of [`Decoder::feed`] and copy nothing.
//!
//! # Errors
//!
//! Every error is final: once a call has failed, every later [`Decoder::feed`],
//! [`Decoder::buffer`], [`Decoder::commit`] and [`Decoder::finish`] returns the same error and
//! the sink is not called again. [`DecodeError::errno_hint`] maps the errors to errno numbers:
//!
//! ```text
//! error                   errno              meaning
//! BadMagic                EINVAL        22   not a record tag or stream magic: not our stream
//! UnsupportedVersion      EPROTONOSUPPORT 93 format version other than VERSION
//! WrongDeviceKind         ENODEV        19   stream is for another kind of device
//! MemSizeMismatch         ENODEV        19   stream is for a device with another memory size
//! RegsLenMismatch         EBADMSG       74   DEVICE_REGS length differs from the HEADER's
//! BadChecksum             EBADMSG       74   record CRC does not match
//! UnknownMandatoryRecord  EOPNOTSUPP    95   unknown record type without the OPTIONAL flag
//! BadFlags                EOPNOTSUPP    95   unknown flag, OPTIONAL on a known type, reserved != 0
//! Malformed               EBADMSG       74   payload too short for its type, or reserved != 0
//! Oversized               EMSGSIZE      90   payload_len or regs_len over its bound
//! OutOfRange              ERANGE        34   MEMORY range beyond the device memory
//! UnexpectedRecord        EPROTO        71   record before HEADER, END before DEVICE_REGS
//! Duplicate               EPROTO        71   second HEADER or DEVICE_REGS
//! CountMismatch           EBADMSG       74   END counters differ: records lost or repeated
//! TrailingData            EINVAL        22   bytes after END
//! Truncated               ENODATA       61   finish() before END was complete
//! ScratchTooSmall         ENOBUFS      105   scratch < SCRATCH_LEN, or commit() over buffer()
//! Sink(e)                 e.0 if > 0, else EIO 5
//! ```

use super::{
    crc::{
        checksum,
        Crc32c, //
    },
    format::{
        end,
        errno,
        get_array,
        get_le32,
        get_le64,
        hdr,
        rec,
        DeviceIdentity,
        Header,
        RecordType,
        CRC_LEN,
        FLAGS_KNOWN,
        FLAG_OPTIONAL,
        HEADER_PAYLOAD_LEN,
        MAGIC,
        MAX_PAYLOAD,
        MAX_RECORD_LEN,
        MAX_REGS_LEN,
        MEMORY_OFFSET_LEN,
        RECORD_HEADER_LEN,
        RECORD_TAG,
        VERSION, //
    },
};

/// Length of the scratch buffer [`Decoder`] needs: the largest record, header and CRC included.
pub(crate) const SCRATCH_LEN: usize = MAX_RECORD_LEN;

/// A failure of a [`Sink`], as a positive Linux errno number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SinkError(pub(crate) i32);

/// Where the decoder puts the device state.
///
/// The decoder calls the sink only with validated records, in stream order: [`Sink::header`]
/// first, then [`Sink::regs`] once and [`Sink::memory`] any number of times in stream order, and
/// [`Sink::end`] last. A later memory range overwrites an earlier one.
pub(crate) trait Sink {
    /// Takes the HEADER record. Its identity equals the one the decoder expects, and
    /// `regs_len <= MAX_REGS_LEN`.
    fn header(&mut self, header: &Header) -> Result<(), SinkError>;

    /// Takes the device register blob; its length is the `regs_len` of the header.
    fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError>;

    /// Takes device memory for `[offset, offset + data.len())`, which lies within the device
    /// memory.
    fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError>;

    /// Is told that the END record arrived and was valid, so the stream is complete.
    ///
    /// Bytes after END can still fail the stream ([`DecodeError::TrailingData`]) in a later
    /// call: the device state is only final once [`Decoder::finish`] says so.
    fn end(&mut self) -> Result<(), SinkError>;
}

/// Why a stream was rejected. The [module documentation](self) lists them with their errnos.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A record does not start with the record tag, or the HEADER magic is wrong.
    BadMagic,
    /// The HEADER has a format version this code does not read.
    UnsupportedVersion,
    /// The HEADER describes another kind of device.
    WrongDeviceKind,
    /// The HEADER describes a device with another memory size.
    MemSizeMismatch,
    /// The DEVICE_REGS payload length differs from the `regs_len` of the HEADER.
    RegsLenMismatch,
    /// A record's CRC does not match its contents.
    BadChecksum,
    /// A record has a type this version does not know and is not optional.
    UnknownMandatoryRecord,
    /// A record has an undefined flag, the OPTIONAL flag on a known type, or a non-zero reserved
    /// field in its record header.
    BadFlags,
    /// A payload is shorter than its type needs, has the wrong length for its version, or has
    /// a non-zero reserved field.
    Malformed,
    /// A `payload_len` is over the bound of its record type, or the HEADER's `regs_len` is over
    /// [`MAX_REGS_LEN`].
    Oversized,
    /// A MEMORY record reaches beyond the device memory.
    OutOfRange,
    /// A record where its type may not be: anything before the HEADER, or END before
    /// DEVICE_REGS.
    UnexpectedRecord,
    /// A second HEADER or DEVICE_REGS record.
    Duplicate,
    /// The END counters do not match the records and bytes before it.
    CountMismatch,
    /// Bytes follow the END record.
    TrailingData,
    /// The stream ended before its END record was complete.
    Truncated,
    /// The scratch buffer is shorter than [`SCRATCH_LEN`], or [`Decoder::commit`] was given more
    /// bytes than [`Decoder::buffer`] offered.
    ScratchTooSmall,
    /// The sink failed.
    Sink(SinkError),
}

impl DecodeError {
    /// Returns a positive Linux errno number for the error, as the [module
    /// documentation](self) lists.
    pub(crate) fn errno_hint(&self) -> i32 {
        match self {
            Self::BadMagic | Self::TrailingData => errno::EINVAL,
            Self::UnsupportedVersion => errno::EPROTONOSUPPORT,
            Self::WrongDeviceKind | Self::MemSizeMismatch => errno::ENODEV,
            Self::RegsLenMismatch | Self::BadChecksum | Self::Malformed | Self::CountMismatch => {
                errno::EBADMSG
            }
            Self::UnknownMandatoryRecord | Self::BadFlags => errno::EOPNOTSUPP,
            Self::Oversized => errno::EMSGSIZE,
            Self::OutOfRange => errno::ERANGE,
            Self::UnexpectedRecord | Self::Duplicate => errno::EPROTO,
            Self::Truncated => errno::ENODATA,
            Self::ScratchTooSmall => errno::ENOBUFS,
            Self::Sink(SinkError(e)) if *e > 0 => *e,
            Self::Sink(_) => errno::EIO,
        }
    }
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the HEADER record.
    Start,
    /// After the HEADER record, before the END record.
    Body {
        /// The validated HEADER.
        header: Header,
        /// Whether the DEVICE_REGS record has been received.
        regs_seen: bool,
    },
    /// After the END record.
    Ended,
    /// Failed; every later call returns this error.
    Failed(DecodeError),
}

/// The record being received, once its record header has been validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    /// The record type, or `None` for an unknown optional record, which is skipped.
    ty: Option<RecordType>,
    /// Length of the whole record: record header, payload and CRC.
    len: usize,
}

/// An incremental migration stream decoder; see the [module documentation](self).
///
/// The caller passes the same scratch buffer, of at least [`SCRATCH_LEN`] bytes, to every call.
///
/// # Invariants
///
/// - Unless `phase` is [`Phase::Failed`], `filled < want`, where `want` is `pending.len` or,
///   without `pending`, [`RECORD_HEADER_LEN`]; the first `filled` bytes of the scratch buffer
///   are the start of the current record.
/// - `pending` is `Some` exactly when `filled >= RECORD_HEADER_LEN`, and then describes the
///   validated record header at the start of the scratch buffer, with
///   `RECORD_HEADER_LEN + CRC_LEN <= len <= SCRATCH_LEN`.
/// - `records` and `bytes` count the complete records before the current one.
#[derive(Clone, Debug)]
pub(crate) struct Decoder {
    /// The destination device, which the HEADER must describe.
    expect: DeviceIdentity,
    /// Where the decoder is in the stream.
    phase: Phase,
    /// Bytes of the current record in the scratch buffer.
    filled: usize,
    /// The current record, once its record header has been validated.
    pending: Option<Pending>,
    /// Number of complete records so far.
    records: u64,
    /// Number of bytes in complete records so far.
    bytes: u64,
}

impl Decoder {
    /// Creates a decoder for a stream that must describe the device `expect`.
    pub(crate) fn new(expect: DeviceIdentity) -> Self {
        Self {
            expect,
            phase: Phase::Start,
            filled: 0,
            pending: None,
            records: 0,
            bytes: 0,
        }
    }

    /// Decodes the bytes of `input`, the next part of the stream, and returns how many it
    /// consumed, which on success is all of them.
    ///
    /// `scratch` keeps the current record between calls: pass the same buffer, of at least
    /// [`SCRATCH_LEN`] bytes, every time. Complete valid records go to `sink`.
    pub(crate) fn feed<S: Sink, C: Crc32c>(
        &mut self,
        input: &[u8],
        scratch: &mut [u8],
        crc: &C,
        sink: &mut S,
    ) -> Result<usize, DecodeError> {
        self.check()?;
        let mut rest = input;
        while !rest.is_empty() {
            let region = self.buffer(scratch)?;
            let take = region.len().min(rest.len());
            match (region.get_mut(..take), rest.split_at_checked(take)) {
                // `take > 0` because of the type invariant, but make sure the loop ends.
                (Some(dst), Some((now, later))) if take > 0 => {
                    dst.copy_from_slice(now);
                    rest = later;
                }
                _ => return Err(self.fail(DecodeError::ScratchTooSmall)),
            }
            self.commit(take, scratch, crc, sink)?;
        }
        Ok(input.len())
    }

    /// Returns the part of `scratch` where the next bytes of the stream go.
    ///
    /// The caller writes up to its length in bytes of the stream to its start and then calls
    /// [`Decoder::commit`] with their number. The part is never empty. The caller asks only when
    /// it has stream bytes to give: after the END record this fails with
    /// [`DecodeError::TrailingData`].
    pub(crate) fn buffer<'a>(
        &mut self,
        scratch: &'a mut [u8],
    ) -> Result<&'a mut [u8], DecodeError> {
        self.check()?;
        let (start, end) = match self.region(scratch.len()) {
            Ok(region) => region,
            Err(e) => return Err(self.fail(e)),
        };
        match scratch.get_mut(start..end) {
            Some(region) => Ok(region),
            None => Err(self.fail(DecodeError::ScratchTooSmall)),
        }
    }

    /// Decodes the `n` bytes the caller has written to the start of the part of `scratch` that
    /// [`Decoder::buffer`] returned.
    ///
    /// Complete valid records go to `sink`.
    pub(crate) fn commit<S: Sink, C: Crc32c>(
        &mut self,
        n: usize,
        scratch: &[u8],
        crc: &C,
        sink: &mut S,
    ) -> Result<(), DecodeError> {
        self.check()?;
        if n == 0 {
            return Ok(());
        }
        let result = self.commit_inner(n, scratch, crc, sink);
        result.map_err(|e| self.fail(e))
    }

    /// Returns `Ok(())` if the whole stream, END record included, has been received and
    /// validated, [`DecodeError::Truncated`] if it has not, or the error that stopped the
    /// decoder.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.phase {
            Phase::Ended => Ok(()),
            Phase::Failed(e) => Err(e),
            Phase::Start | Phase::Body { .. } => Err(DecodeError::Truncated),
        }
    }

    /// Returns the error that stopped the decoder, if any.
    fn check(&self) -> Result<(), DecodeError> {
        match self.phase {
            Phase::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops the decoder with the error `e` and returns it.
    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.phase = Phase::Failed(e);
        self.pending = None;
        self.filled = 0;
        e
    }

    /// Returns the range of a scratch buffer of `scratch_len` bytes where the next bytes of the
    /// stream go.
    fn region(&self, scratch_len: usize) -> Result<(usize, usize), DecodeError> {
        if scratch_len < SCRATCH_LEN {
            return Err(DecodeError::ScratchTooSmall);
        }
        if self.phase == Phase::Ended {
            return Err(DecodeError::TrailingData);
        }
        let want = self.pending.map_or(RECORD_HEADER_LEN, |p| p.len);
        if self.filled >= want || want > scratch_len {
            // Not reached: the type invariants rule it out.
            return Err(DecodeError::ScratchTooSmall);
        }
        Ok((self.filled, want))
    }

    /// Does the work of [`Decoder::commit`] for `n > 0`.
    fn commit_inner<S: Sink, C: Crc32c>(
        &mut self,
        n: usize,
        scratch: &[u8],
        crc: &C,
        sink: &mut S,
    ) -> Result<(), DecodeError> {
        let (start, end) = self.region(scratch.len())?;
        let filled = start
            .checked_add(n)
            .filter(|&filled| filled <= end)
            .ok_or(DecodeError::ScratchTooSmall)?;
        self.filled = filled;
        if self.pending.is_none() && filled == RECORD_HEADER_LEN {
            self.pending = Some(self.begin_record(scratch)?);
        }
        if let Some(pending) = self.pending {
            if filled == pending.len {
                self.end_record(pending, scratch, crc, sink)?;
            }
        }
        Ok(())
    }

    /// Validates the record header at the start of `scratch` and returns what to receive.
    ///
    /// Everything that can be checked without the payload is checked here, before any payload
    /// is buffered: above all the payload length, against the bound of the record type.
    fn begin_record(&self, scratch: &[u8]) -> Result<Pending, DecodeError> {
        let tag: [u8; 4] = get_array(scratch, rec::TAG).ok_or(DecodeError::Truncated)?;
        if tag != RECORD_TAG {
            return Err(DecodeError::BadMagic);
        }
        let raw_ty = get_le32(scratch, rec::TYPE).ok_or(DecodeError::Truncated)?;
        let flags = get_le32(scratch, rec::FLAGS).ok_or(DecodeError::Truncated)?;
        let reserved = get_le32(scratch, rec::RESERVED).ok_or(DecodeError::Truncated)?;
        let payload_len = get_le64(scratch, rec::PAYLOAD_LEN).ok_or(DecodeError::Truncated)?;
        if reserved != 0 || flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::BadFlags);
        }
        let optional = flags & FLAG_OPTIONAL != 0;
        let ty = RecordType::from_raw(raw_ty);
        if ty.is_some() && optional {
            return Err(DecodeError::BadFlags);
        }

        let mut regs_len = None;
        match self.phase {
            Phase::Start if ty != Some(RecordType::Header) => {
                return Err(DecodeError::UnexpectedRecord)
            }
            Phase::Start => {}
            Phase::Body { header, regs_seen } => match ty {
                Some(RecordType::Header) => return Err(DecodeError::Duplicate),
                Some(RecordType::DeviceRegs) if regs_seen => return Err(DecodeError::Duplicate),
                Some(RecordType::DeviceRegs) => regs_len = Some(header.regs_len),
                Some(RecordType::End) if !regs_seen => return Err(DecodeError::UnexpectedRecord),
                Some(RecordType::Memory | RecordType::End) => {}
                None if !optional => return Err(DecodeError::UnknownMandatoryRecord),
                None => {}
            },
            Phase::Ended => return Err(DecodeError::TrailingData),
            Phase::Failed(e) => return Err(e),
        }

        let (min, max) = ty.map_or((0, MAX_PAYLOAD), RecordType::payload_bounds);
        let payload_len = match usize::try_from(payload_len) {
            Ok(len) if len <= max => len,
            _ => return Err(DecodeError::Oversized),
        };
        if payload_len < min {
            return Err(DecodeError::Malformed);
        }
        if let Some(regs_len) = regs_len {
            if u32::try_from(payload_len).ok() != Some(regs_len) {
                return Err(DecodeError::RegsLenMismatch);
            }
        }
        let len = payload_len
            .checked_add(RECORD_HEADER_LEN + CRC_LEN)
            .filter(|&len| len <= SCRATCH_LEN)
            .ok_or(DecodeError::Oversized)?;
        Ok(Pending { ty, len })
    }

    /// Validates the complete record `pending` at the start of `scratch`, hands it to `sink` and
    /// moves on to the next record.
    fn end_record<S: Sink, C: Crc32c>(
        &mut self,
        pending: Pending,
        scratch: &[u8],
        crc: &C,
        sink: &mut S,
    ) -> Result<(), DecodeError> {
        let body_len = pending
            .len
            .checked_sub(CRC_LEN)
            .ok_or(DecodeError::Truncated)?;
        let body = scratch.get(..body_len).ok_or(DecodeError::Truncated)?;
        let stored = get_le32(scratch, body_len).ok_or(DecodeError::Truncated)?;
        if checksum(crc, body) != stored {
            return Err(DecodeError::BadChecksum);
        }
        let payload = body
            .get(RECORD_HEADER_LEN..)
            .ok_or(DecodeError::Truncated)?;

        let records = self.records.checked_add(1).ok_or(DecodeError::Oversized)?;
        let bytes = u64::try_from(pending.len)
            .ok()
            .and_then(|len| self.bytes.checked_add(len))
            .ok_or(DecodeError::Oversized)?;

        match (pending.ty, self.phase) {
            (Some(RecordType::Header), Phase::Start) => {
                let header = self.parse_header(payload)?;
                sink.header(&header).map_err(DecodeError::Sink)?;
                self.phase = Phase::Body {
                    header,
                    regs_seen: false,
                };
            }
            (Some(RecordType::DeviceRegs), Phase::Body { header, .. }) => {
                sink.regs(payload).map_err(DecodeError::Sink)?;
                self.phase = Phase::Body {
                    header,
                    regs_seen: true,
                };
            }
            (Some(RecordType::Memory), Phase::Body { header, .. }) => {
                let offset = get_le64(payload, 0).ok_or(DecodeError::Malformed)?;
                let data = payload
                    .get(MEMORY_OFFSET_LEN..)
                    .ok_or(DecodeError::Malformed)?;
                let in_range = u64::try_from(data.len())
                    .ok()
                    .and_then(|len| offset.checked_add(len))
                    .is_some_and(|end| end <= header.identity.mem_size);
                if !in_range {
                    return Err(DecodeError::OutOfRange);
                }
                sink.memory(offset, data).map_err(DecodeError::Sink)?;
            }
            (Some(RecordType::End), Phase::Body { .. }) => {
                let want_records = get_le64(payload, end::RECORDS).ok_or(DecodeError::Malformed)?;
                let want_bytes = get_le64(payload, end::BYTES).ok_or(DecodeError::Malformed)?;
                if want_records != self.records || want_bytes != self.bytes {
                    return Err(DecodeError::CountMismatch);
                }
                self.phase = Phase::Ended;
                sink.end().map_err(DecodeError::Sink)?;
            }
            (None, Phase::Body { .. }) => {}
            // Not reached: `begin_record` only accepts records where their type may be.
            _ => return Err(DecodeError::UnexpectedRecord),
        }

        self.records = records;
        self.bytes = bytes;
        self.pending = None;
        self.filled = 0;
        Ok(())
    }

    /// Parses and checks the HEADER payload `payload`.
    fn parse_header(&self, payload: &[u8]) -> Result<Header, DecodeError> {
        let magic: [u8; 8] = get_array(payload, hdr::MAGIC).ok_or(DecodeError::Malformed)?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = get_le32(payload, hdr::VERSION).ok_or(DecodeError::Malformed)?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion);
        }
        if payload.len() != HEADER_PAYLOAD_LEN {
            return Err(DecodeError::Malformed);
        }
        let kind = get_le32(payload, hdr::KIND).ok_or(DecodeError::Malformed)?;
        let mem_size = get_le64(payload, hdr::MEM_SIZE).ok_or(DecodeError::Malformed)?;
        let regs_len = get_le32(payload, hdr::REGS_LEN).ok_or(DecodeError::Malformed)?;
        let reserved = get_le32(payload, hdr::RESERVED).ok_or(DecodeError::Malformed)?;
        if reserved != 0 {
            return Err(DecodeError::Malformed);
        }
        if kind != self.expect.kind.raw() {
            return Err(DecodeError::WrongDeviceKind);
        }
        if mem_size != self.expect.mem_size {
            return Err(DecodeError::MemSizeMismatch);
        }
        if usize::try_from(regs_len).map_or(true, |len| len > MAX_REGS_LEN) {
            return Err(DecodeError::Oversized);
        }
        Ok(Header {
            version,
            identity: self.expect,
            regs_len,
        })
    }
}
