// SPDX-License-Identifier: GPL-2.0

//! A `pub` interface to the stream code for the fuzzer, which cannot reach `pub(crate)` items.
//!
//! [`decode`] runs the decoder with a sink that checks the decoder's promises to its sink and
//! panics if one is broken, which is what the fuzzer looks for. [`PreCopyStream`] gives it the
//! pre-copy plan and the encoder that writes its records.

use crate::stream::{
    crc::{
        checksum,
        SoftCrc32c, //
    },
    format::{
        get_le64,
        rec,
        CRC_LEN,
        RECORD_HEADER_LEN, //
    },
    precopy::{
        PreCopyPlan,
        Step, //
    },
    DecodeError,
    Decoder,
    DeviceIdentity,
    DeviceKind,
    Encoder,
    Header,
    Sink,
    SinkError,
    Source,
    SourceError, //
};

/// Length of the scratch buffer the decoder needs.
pub const SCRATCH_LEN: usize = crate::stream::SCRATCH_LEN;

/// Largest amount of device memory in one MEMORY record.
pub const MAX_CHUNK: usize = crate::stream::MAX_CHUNK;

/// Largest device register blob.
pub const MAX_REGS_LEN: usize = crate::stream::MAX_REGS_LEN;

/// What a [`decode`] run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The error `finish()` returned, by name, or `None` if the stream was accepted.
    pub error: Option<&'static str>,
    /// The errno hint of the error, or 0.
    pub errno: i32,
    /// Hash over every sink call and its arguments, in order.
    pub trace: u64,
    /// Number of sink calls.
    pub calls: u32,
}

/// Returns the name of `e`.
fn name(e: DecodeError) -> &'static str {
    match e {
        DecodeError::BadMagic => "BadMagic",
        DecodeError::UnsupportedVersion => "UnsupportedVersion",
        DecodeError::WrongDeviceKind => "WrongDeviceKind",
        DecodeError::MemSizeMismatch => "MemSizeMismatch",
        DecodeError::RegsLenMismatch => "RegsLenMismatch",
        DecodeError::BadChecksum => "BadChecksum",
        DecodeError::UnknownMandatoryRecord => "UnknownMandatoryRecord",
        DecodeError::BadFlags => "BadFlags",
        DecodeError::Malformed => "Malformed",
        DecodeError::Oversized => "Oversized",
        DecodeError::OutOfRange => "OutOfRange",
        DecodeError::UnexpectedRecord => "UnexpectedRecord",
        DecodeError::Duplicate => "Duplicate",
        DecodeError::CountMismatch => "CountMismatch",
        DecodeError::TrailingData => "TrailingData",
        DecodeError::Truncated => "Truncated",
        DecodeError::ScratchTooSmall => "ScratchTooSmall",
        DecodeError::Sink(_) => "Sink",
    }
}

/// A sink that writes into caller buffers and asserts the decoder's promises.
struct CheckingSink<'a> {
    /// The device memory.
    mem: &'a mut [u8],
    /// The register blob.
    regs: &'a mut [u8],
    /// The header, once received.
    header: Option<Header>,
    /// Whether the register blob was received.
    regs_seen: bool,
    /// Whether `end` was called.
    ended: bool,
    /// Whether a call failed.
    failed: bool,
    /// The call that fails (0-based), if any.
    fail_at: Option<u32>,
    /// Number of calls.
    calls: u32,
    /// Hash state.
    trace: u64,
}

impl CheckingSink<'_> {
    /// Mixes `bytes` and their number into the trace, FNV-1a style but eight bytes at a time
    /// (whole device memory goes through here: per byte, it would cost more than decoding).
    fn mix(&mut self, bytes: &[u8]) {
        let mut step = |v: u64| {
            self.trace ^= v;
            self.trace = self.trace.wrapping_mul(0x0000_0100_0000_01B3);
        };
        step(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            step(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        for &b in words.remainder() {
            step(u64::from(b));
        }
    }

    /// Checks the common rules of every call and counts it; fails it if asked to.
    fn call(&mut self, tag: u8) -> Result<(), SinkError> {
        assert!(!self.failed, "sink called after it failed");
        assert!(!self.ended, "sink called after end");
        self.mix(&[tag]);
        let n = self.calls;
        self.calls += 1;
        if self.fail_at == Some(n) {
            self.failed = true;
            return Err(SinkError(5));
        }
        Ok(())
    }
}

impl Sink for CheckingSink<'_> {
    fn header(&mut self, header: &Header) -> Result<(), SinkError> {
        assert!(self.header.is_none(), "second header");
        self.call(1)?;
        assert!(header.regs_len as usize <= MAX_REGS_LEN);
        assert_eq!(header.identity.mem_size, self.mem.len() as u64);
        self.header = Some(*header);
        self.mix(&header.regs_len.to_le_bytes());
        Ok(())
    }

    fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError> {
        let header = self.header.expect("regs before header");
        assert!(!self.regs_seen, "second regs");
        self.call(2)?;
        assert_eq!(regs.len(), header.regs_len as usize);
        self.regs_seen = true;
        self.regs[..regs.len()].copy_from_slice(regs);
        self.mix(regs);
        Ok(())
    }

    fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        assert!(self.header.is_some(), "memory before header");
        self.call(3)?;
        let start = usize::try_from(offset).expect("offset beyond memory");
        let end = start.checked_add(data.len()).expect("range overflows");
        self.mem
            .get_mut(start..end)
            .expect("memory range beyond device memory")
            .copy_from_slice(data);
        self.mix(&offset.to_le_bytes());
        self.mix(data);
        Ok(())
    }

    fn end(&mut self) -> Result<(), SinkError> {
        assert!(self.header.is_some() && self.regs_seen, "end too early");
        self.call(4)?;
        self.ended = true;
        Ok(())
    }
}

/// Parameters of a [`decode`] run.
#[derive(Clone, Copy, Debug)]
pub struct DecodeParams<'p> {
    /// Wire value of the expected device kind (1 or 2; anything else means 1).
    pub kind: u32,
    /// Piece sizes: each byte `b` is a piece of `b + 1` bytes (`(b & 0x7F) * 4096 + 1` if
    /// `b >= 0x80`), used cyclically. Empty means one piece.
    pub pieces: &'p [u8],
    /// Use `buffer()`/`commit()` instead of `feed()`.
    pub in_place: bool,
    /// Make the sink fail this call (0-based).
    pub fail_at: Option<u32>,
}

/// A decoder with the checking sink, fed piece by piece by the caller: what [`decode`] does for
/// callers that cut the stream themselves.
///
/// Panics if the decoder breaks a promise: a sink call out of order or out of range, a call
/// after an error, an error that is not sticky, or a success without `end()`.
pub struct CheckedDecoder<'a> {
    /// The decoder under test.
    decoder: Decoder,
    /// Where the decoded state goes.
    sink: CheckingSink<'a>,
    /// The first error a piece returned.
    first_error: Option<DecodeError>,
}

impl<'a> CheckedDecoder<'a> {
    /// Creates a decoder for a device of wire kind `kind` (1 or 2; anything else means 1) with
    /// `mem.len()` bytes of memory, which decodes into `mem` and `regs` and makes the sink call
    /// `fail_at` (0-based) fail, if given.
    pub fn new(
        kind: u32,
        mem: &'a mut [u8],
        regs: &'a mut [u8; MAX_REGS_LEN],
        fail_at: Option<u32>,
    ) -> Self {
        let kind = DeviceKind::from_raw(kind).unwrap_or(DeviceKind::BochsDisplay);
        let identity = DeviceIdentity {
            kind,
            mem_size: mem.len() as u64,
        };
        Self {
            decoder: Decoder::new(identity),
            sink: CheckingSink {
                mem,
                regs,
                header: None,
                regs_seen: false,
                ended: false,
                failed: false,
                fail_at,
                calls: 0,
                trace: 0xCBF2_9CE4_8422_2325,
            },
            first_error: None,
        }
    }

    /// Feeds the next `piece` of the stream, through `feed()` or, with `in_place`, through
    /// `buffer()` and `commit()` as the driver's resume file does. `scratch` is the same buffer
    /// of [`SCRATCH_LEN`] bytes every time.
    pub fn feed(&mut self, piece: &[u8], scratch: &mut [u8], in_place: bool) {
        let crc = SoftCrc32c;
        let calls = self.sink.calls;
        let result = if in_place {
            feed_in_place(&mut self.decoder, piece, scratch, &crc, &mut self.sink)
        } else {
            self.decoder
                .feed(piece, scratch, &crc, &mut self.sink)
                .map(|n| assert_eq!(n, piece.len()))
        };
        if let Some(e) = self.first_error {
            assert_eq!(result, Err(e), "error not sticky");
            assert_eq!(self.sink.calls, calls, "sink called after an error");
        } else if let Err(e) = result {
            self.first_error = Some(e);
        }
    }

    /// Ends the stream: checks what `finish()` says against what happened and returns the
    /// outcome.
    pub fn finish(self) -> Outcome {
        let Self {
            decoder,
            sink,
            first_error,
        } = self;
        let result = decoder.finish();
        if let Some(e) = first_error {
            assert_eq!(result, Err(e), "finish() forgot the error");
        }
        // `end()` means that the END record was valid; bytes after it still fail the stream.
        match result {
            Ok(()) => assert!(sink.ended, "success without end()"),
            Err(DecodeError::TrailingData) => {}
            Err(_) => assert!(!sink.ended, "end() on a failed stream"),
        }
        if let Err(DecodeError::Sink(_)) = result {
            assert!(sink.failed);
        }
        let error = result.err();
        Outcome {
            error: error.map(name),
            errno: error.map_or(0, |e| {
                let errno = e.errno_hint();
                assert!(errno > 0);
                errno
            }),
            trace: sink.trace,
            calls: sink.calls,
        }
    }
}

/// Decodes `stream` for a device with `mem.len()` bytes of memory into `mem` and `regs`, in the
/// pieces `params` gives.
///
/// Panics if the decoder breaks a promise (see [`CheckedDecoder`]).
pub fn decode(
    stream: &[u8],
    params: DecodeParams<'_>,
    scratch: &mut [u8],
    mem: &mut [u8],
    regs: &mut [u8; MAX_REGS_LEN],
) -> Outcome {
    let mut decoder = CheckedDecoder::new(params.kind, mem, regs, params.fail_at);
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let size = match params.pieces.get(i % params.pieces.len().max(1)) {
            None => rest.len(),
            Some(&b) if b >= 0x80 => usize::from(b & 0x7F) * 4096 + 1,
            Some(&b) => usize::from(b) + 1,
        };
        i += 1;
        let (piece, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        decoder.feed(piece, scratch, params.in_place);
    }
    decoder.finish()
}

/// Feeds `input` to `decoder` through `buffer()` and `commit()`.
fn feed_in_place(
    decoder: &mut Decoder,
    mut input: &[u8],
    scratch: &mut [u8],
    crc: &SoftCrc32c,
    sink: &mut CheckingSink<'_>,
) -> Result<(), DecodeError> {
    if input.is_empty() {
        return decoder.commit(0, scratch, crc, sink);
    }
    while !input.is_empty() {
        let region = decoder.buffer(scratch)?;
        assert!(!region.is_empty());
        let take = region.len().min(input.len());
        region[..take].copy_from_slice(&input[..take]);
        input = &input[take..];
        decoder.commit(take, scratch, crc, sink)?;
    }
    Ok(())
}

/// A source reading from caller buffers.
struct SliceSource<'a> {
    /// The device memory.
    mem: &'a [u8],
    /// The register blob.
    regs: &'a [u8],
}

impl Source for SliceSource<'_> {
    fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        out.copy_from_slice(self.regs.get(..out.len()).ok_or(SourceError(22))?);
        Ok(())
    }

    fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError> {
        let start = usize::try_from(offset).map_err(|_| SourceError(34))?;
        let end = start.checked_add(out.len()).ok_or(SourceError(34))?;
        out.copy_from_slice(self.mem.get(start..end).ok_or(SourceError(34))?);
        Ok(())
    }
}

/// Writes the stop-copy stream of a device one record at a time into a staging buffer, as the
/// driver's save file does (`src/migration/save.rs`), with the crate's [`Encoder`].
pub struct RecordEncoder<'a> {
    /// The encoder under test.
    encoder: Encoder,
    /// Where the device state comes from.
    source: SliceSource<'a>,
    /// What `stream_len()` says the stream's length is.
    stream_len: u64,
    /// Bytes written so far.
    written: u64,
}

impl<'a> RecordEncoder<'a> {
    /// Creates an encoder for a device of wire kind `kind` (1 or 2; anything else means 1) with
    /// memory `mem` and register blob `regs`, or returns `None` if `regs` is too long.
    pub fn new(kind: u32, mem: &'a [u8], regs: &'a [u8]) -> Option<Self> {
        let identity = DeviceIdentity {
            kind: DeviceKind::from_raw(kind).unwrap_or(DeviceKind::BochsDisplay),
            mem_size: mem.len() as u64,
        };
        let regs_len = u32::try_from(regs.len()).ok()?;
        let stream_len = crate::stream::stream_len(identity, regs_len).ok()?;
        Some(Self {
            encoder: Encoder::new(identity, regs_len),
            source: SliceSource { mem, regs },
            stream_len,
            written: 0,
        })
    }

    /// Returns the length of the whole stream, as `stream_len()` computes it.
    pub fn stream_len(&self) -> u64 {
        self.stream_len
    }

    /// Writes the next record into the start of `out` and returns its length, or `Ok(None)`
    /// after the END record, or the errno of the encoder's error. A buffer of [`SCRATCH_LEN`]
    /// bytes holds any record.
    ///
    /// Panics if the encoder writes more than `stream_len()` bytes, or stops short of it.
    pub fn next_record(&mut self, out: &mut [u8]) -> Result<Option<usize>, i32> {
        match self
            .encoder
            .next_record(&mut self.source, &SoftCrc32c, out)
            .map_err(|e| e.errno_hint())?
        {
            Some(n) => {
                self.written += n as u64;
                assert!(self.written <= self.stream_len, "stream_len() is short");
                Ok(Some(n))
            }
            None => {
                assert!(self.encoder.is_done());
                assert_eq!(self.written, self.stream_len, "stream_len() is wrong");
                Ok(None)
            }
        }
    }
}

/// Encodes the stop-copy stream of a device of `kind` with memory `mem` and register blob `regs`
/// into `out` and returns its length, or `None` if `out` is too short or `regs` too long.
///
/// Panics if the length differs from `stream_len()`.
pub fn encode(kind: u32, mem: &[u8], regs: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut encoder = RecordEncoder::new(kind, mem, regs)?;
    let mut len = 0usize;
    while let Some(n) = encoder.next_record(out.get_mut(len..)?).ok()? {
        len += n;
    }
    Some(len)
}

/// Recomputes the CRC of every record of `stream` whose payload length fits, so that mutated
/// streams get past the CRC check.
pub fn fix_crcs(stream: &mut [u8]) {
    let mut pos = 0usize;
    loop {
        let Some(record) = stream.get_mut(pos..) else {
            return;
        };
        let Some(payload_len) = get_le64(record, rec::PAYLOAD_LEN) else {
            return;
        };
        let Some(body_len) = usize::try_from(payload_len)
            .ok()
            .and_then(|n| n.checked_add(RECORD_HEADER_LEN))
            .filter(|&n| n.saturating_add(CRC_LEN) <= record.len())
        else {
            return;
        };
        let sum = checksum(&SoftCrc32c, &record[..body_len]);
        record[body_len..body_len + CRC_LEN].copy_from_slice(&sum.to_le_bytes());
        pos += body_len + CRC_LEN;
    }
}

/// A record of a pre-copy stream (see [`PreCopyStream::next`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreCopyStep {
    /// The HEADER record.
    Header,
    /// A MEMORY record with the `len` bytes at `offset`: a piece of the initial pass or a dirty
    /// run.
    Memory {
        /// Where the data starts.
        offset: u64,
        /// The bytes of data.
        len: usize,
    },
    /// The DEVICE_REGS record.
    Regs,
    /// The END record.
    End,
}

impl PreCopyStep {
    /// The crate's step.
    fn inner(self) -> Step {
        match self {
            Self::Header => Step::Header,
            Self::Memory { offset, len } => Step::Memory { offset, len },
            Self::Regs => Step::Regs,
            Self::End => Step::End,
        }
    }

    /// The step of the crate's `step`.
    fn of(step: Step) -> Self {
        match step {
            Step::Header => Self::Header,
            Step::Memory { offset, len } => Self::Memory { offset, len },
            Step::Regs => Self::Regs,
            Step::End => Self::End,
        }
    }

    /// Returns the first page and the number of pages a MEMORY step sends, whose dirty bits its
    /// sender clears.
    pub fn pages(self) -> Option<(u64, u64)> {
        self.inner().pages().map(|run| (run.first, run.pages))
    }
}

/// A pre-copy stream of a bochs-display device: the plan of `stream::precopy` and the
/// [`Encoder`] that writes its records, with the plan's byte counts.
///
/// Panics if the plan or the encoder fail, which they must not for the steps the plan gives.
#[derive(Clone, Copy, Debug)]
pub struct PreCopyStream {
    /// The plan under test.
    plan: PreCopyPlan,
    /// The encoder of the stream.
    encoder: Encoder,
    /// Length of the register blob.
    regs_len: u32,
}

impl PreCopyStream {
    /// A stream in PRE_COPY, before the HEADER, for `mem_size` bytes of memory and a register
    /// blob of `regs_len` bytes (at most [`MAX_REGS_LEN`]).
    pub fn new(mem_size: u64, regs_len: u32) -> Self {
        let identity = DeviceIdentity {
            kind: DeviceKind::BochsDisplay,
            mem_size,
        };
        Self {
            plan: PreCopyPlan::new(mem_size),
            encoder: Encoder::new(identity, regs_len),
            regs_len,
        }
    }

    /// Returns the number of pages of the memory, bits of the dirty bitmap.
    pub fn npages(&self) -> u64 {
        self.plan.npages()
    }

    /// Returns the number of `u64` words of the dirty bitmap.
    pub fn words(&self) -> usize {
        self.plan.words()
    }

    /// Switches the stream to STOP_COPY.
    pub fn enter_stop_copy(&mut self) {
        self.plan.enter_stop_copy();
    }

    /// Returns whether the stream is in STOP_COPY.
    pub fn is_stop_copy(&self) -> bool {
        self.plan.is_stop_copy()
    }

    /// Returns whether the END record was written (or the plan moved past it).
    pub fn is_done(&self) -> bool {
        self.plan.is_done()
    }

    /// Returns the dirty cursor in PRE_COPY after the initial pass.
    pub fn dirty_cursor(&self) -> Option<u64> {
        match self.plan.phase() {
            crate::stream::precopy::Phase::Dirty { cursor } => Some(cursor),
            _ => None,
        }
    }

    /// Returns the plan's `initial_bytes()`.
    pub fn initial_bytes(&self) -> u64 {
        self.plan.initial_bytes().expect("initial_bytes")
    }

    /// Returns the plan's `dirty_bytes()` for `bits`.
    pub fn dirty_bytes(&self, bits: &[u64]) -> u64 {
        self.plan.dirty_bytes(bits).expect("dirty_bytes")
    }

    /// Returns the plan's `stop_copy_bytes()` for `bits`.
    pub fn stop_copy_bytes(&self, bits: &[u64]) -> u64 {
        self.plan
            .stop_copy_bytes(bits, self.regs_len)
            .expect("stop_copy_bytes")
    }

    /// Returns the plan's next step for `bits`.
    pub fn next(&self, bits: &[u64]) -> Option<PreCopyStep> {
        self.plan.next(bits).expect("next").map(PreCopyStep::of)
    }

    /// Returns the length of the record of `step`, as the plan counts it.
    pub fn record_bytes(&self, step: PreCopyStep) -> u64 {
        step.inner()
            .record_bytes(self.regs_len)
            .expect("record_bytes")
    }

    /// Moves the plan past `step` without writing its record.
    pub fn advance(&mut self, step: PreCopyStep) {
        self.plan.advance(step.inner()).expect("advance");
    }

    /// Writes the record of `step` with the device memory `mem` and register blob `regs` into
    /// `out`, moves the plan past it and returns the record's length.
    pub fn write(&mut self, step: PreCopyStep, mem: &[u8], regs: &[u8], out: &mut [u8]) -> usize {
        let mut source = SliceSource { mem, regs };
        let n = step
            .inner()
            .encode(&mut self.encoder, &mut source, &SoftCrc32c, out)
            .expect("encode");
        assert_eq!(n as u64, self.record_bytes(step), "record length");
        self.advance(step);
        n
    }

    /// Returns the bytes written so far.
    pub fn written(&self) -> u64 {
        self.encoder.tally().bytes
    }
}
