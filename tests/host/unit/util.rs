// SPDX-License-Identifier: GPL-2.0

//! Test helpers: pseudo-random data, a vector-backed source and sink, and a stream builder.

use std::{
    vec,
    vec::Vec, //
};

use crate::stream::{
    crc::SoftCrc32c,
    encoder::{
        encode_end,
        encode_header,
        encode_memory,
        encode_raw_record,
        encode_regs, //
    },
    format::RecordType,
    DecodeError,
    Decoder,
    DeviceIdentity,
    DeviceKind,
    Encoder,
    Header,
    Sink,
    SinkError,
    Source,
    SourceError,
    SCRATCH_LEN, //
};

/// A xorshift64 generator.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    /// Returns the next number.
    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Returns a number in `[0, n)`, for `n > 0`.
    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Returns `len` pseudo-random bytes.
    pub(super) fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A source reading from vectors, which can be told to fail.
pub(super) struct VecSource {
    /// The device memory.
    pub(super) mem: Vec<u8>,
    /// The register blob.
    pub(super) regs: Vec<u8>,
    /// Make every call fail with this errno.
    pub(super) fail: Option<i32>,
}

impl Source for VecSource {
    fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        if let Some(e) = self.fail {
            return Err(SourceError(e));
        }
        out.copy_from_slice(&self.regs);
        Ok(())
    }

    fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError> {
        if let Some(e) = self.fail {
            return Err(SourceError(e));
        }
        let start = offset as usize;
        out.copy_from_slice(&self.mem[start..start + out.len()]);
        Ok(())
    }
}

/// One sink call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Call {
    /// `header()`.
    Header(Header),
    /// `regs()`.
    Regs(Vec<u8>),
    /// `memory()`.
    Memory(u64, Vec<u8>),
    /// `end()`.
    End,
}

/// A sink recording into vectors.
pub(super) struct VecSink {
    /// The device memory.
    pub(super) mem: Vec<u8>,
    /// The register blob, once received.
    pub(super) regs: Option<Vec<u8>>,
    /// Every call, in order.
    pub(super) calls: Vec<Call>,
    /// Make this call (0-based) fail with EIO.
    pub(super) fail_at: Option<usize>,
    /// Device memory and register blob that every write must match, if set.
    pub(super) reference: Option<(Vec<u8>, Vec<u8>)>,
    /// Number of writes that did not match `reference`.
    pub(super) bad_writes: usize,
}

impl VecSink {
    /// Creates a sink for `mem_size` bytes of device memory, initially all 0xAA.
    pub(super) fn new(mem_size: usize) -> Self {
        Self {
            mem: vec![0xAA; mem_size],
            regs: None,
            calls: Vec::new(),
            fail_at: None,
            reference: None,
            bad_writes: 0,
        }
    }

    /// Records `call` and fails it if asked to.
    fn record(&mut self, call: Call) -> Result<(), SinkError> {
        let n = self.calls.len();
        self.calls.push(call);
        if self.fail_at == Some(n) {
            return Err(SinkError(5));
        }
        Ok(())
    }
}

impl Sink for VecSink {
    fn header(&mut self, header: &Header) -> Result<(), SinkError> {
        self.record(Call::Header(*header))
    }

    fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError> {
        if let Some((_, r)) = &self.reference {
            if r.as_slice() != regs {
                self.bad_writes += 1;
            }
        }
        self.regs = Some(regs.to_vec());
        self.record(Call::Regs(regs.to_vec()))
    }

    fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let start = offset as usize;
        if let Some((m, _)) = &self.reference {
            if &m[start..start + data.len()] != data {
                self.bad_writes += 1;
            }
        }
        self.mem[start..start + data.len()].copy_from_slice(data);
        self.record(Call::Memory(offset, data.to_vec()))
    }

    fn end(&mut self) -> Result<(), SinkError> {
        self.record(Call::End)
    }
}

/// The identity of a bochs-display device with `mem_size` bytes of memory.
pub(super) fn bochs(mem_size: usize) -> DeviceIdentity {
    DeviceIdentity {
        kind: DeviceKind::BochsDisplay,
        mem_size: mem_size as u64,
    }
}

/// Encodes the stop-copy stream of `source` with [`Encoder`].
pub(super) fn encode_stream(identity: DeviceIdentity, source: &mut VecSource) -> Vec<u8> {
    let mut encoder = Encoder::new(identity, source.regs.len() as u32);
    let mut out = vec![0u8; SCRATCH_LEN];
    let mut stream = Vec::new();
    while let Some(n) = encoder
        .next_record(source, &SoftCrc32c, &mut out)
        .expect("encoding failed")
    {
        stream.extend_from_slice(&out[..n]);
    }
    assert!(encoder.is_done());
    assert_eq!(encoder.tally().bytes, stream.len() as u64);
    stream
}

/// A decoder with its scratch buffer and sink.
pub(super) struct Run {
    /// The decoder.
    pub(super) decoder: Decoder,
    /// Its scratch buffer.
    pub(super) scratch: Vec<u8>,
    /// Its sink.
    pub(super) sink: VecSink,
}

impl Run {
    /// Creates a decoder for `identity`.
    pub(super) fn new(identity: DeviceIdentity) -> Self {
        Self {
            decoder: Decoder::new(identity),
            scratch: vec![0u8; SCRATCH_LEN],
            sink: VecSink::new(identity.mem_size as usize),
        }
    }

    /// Feeds `input`.
    pub(super) fn feed(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        self.decoder
            .feed(input, &mut self.scratch, &SoftCrc32c, &mut self.sink)
    }

    /// Feeds `input` through `buffer()` and `commit()`.
    pub(super) fn feed_in_place(&mut self, mut input: &[u8]) -> Result<(), DecodeError> {
        while !input.is_empty() {
            let region = self.decoder.buffer(&mut self.scratch)?;
            let take = region.len().min(input.len());
            region[..take].copy_from_slice(&input[..take]);
            input = &input[take..];
            self.decoder
                .commit(take, &self.scratch, &SoftCrc32c, &mut self.sink)?;
        }
        Ok(())
    }

    /// Feeds `pieces` one after the other, stopping at the first error, and returns the result
    /// of `finish()`.
    pub(super) fn feed_pieces<'a>(
        &mut self,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), DecodeError> {
        for piece in pieces {
            if let Err(e) = self.feed(piece) {
                assert_eq!(self.decoder.finish(), Err(e));
                return Err(e);
            }
        }
        self.decoder.finish()
    }
}

/// Decodes `stream` in one piece for `identity`; returns the result of `finish()` and the sink.
pub(super) fn decode(
    identity: DeviceIdentity,
    stream: &[u8],
) -> (Result<(), DecodeError>, VecSink) {
    let mut run = Run::new(identity);
    let result = run.feed_pieces([stream]);
    (result, run.sink)
}

/// Builds streams record by record, valid or not.
pub(super) struct Builder {
    /// The stream so far.
    pub(super) stream: Vec<u8>,
    /// Where each record starts.
    pub(super) starts: Vec<usize>,
    /// Memory size for MEMORY records.
    mem_size: u64,
    /// Record buffer.
    out: Vec<u8>,
}

impl Builder {
    /// Creates an empty stream for a device of `identity`.
    pub(super) fn new(identity: DeviceIdentity) -> Self {
        Self {
            stream: Vec::new(),
            starts: Vec::new(),
            mem_size: identity.mem_size,
            out: vec![0u8; SCRATCH_LEN + 64],
        }
    }

    /// Appends the first `n` bytes of the record buffer.
    fn push(&mut self, n: usize) -> &mut Self {
        self.starts.push(self.stream.len());
        self.stream.extend_from_slice(&self.out[..n]);
        self
    }

    /// Appends a HEADER record.
    pub(super) fn header(&mut self, identity: DeviceIdentity, regs_len: u32) -> &mut Self {
        let n = encode_header(identity, regs_len, &SoftCrc32c, &mut self.out).unwrap();
        self.push(n)
    }

    /// Appends a DEVICE_REGS record.
    pub(super) fn regs(&mut self, regs: &[u8]) -> &mut Self {
        let mut source = VecSource {
            mem: Vec::new(),
            regs: regs.to_vec(),
            fail: None,
        };
        let n = encode_regs(regs.len() as u32, &mut source, &SoftCrc32c, &mut self.out).unwrap();
        self.push(n)
    }

    /// Appends a MEMORY record for `data` at `offset`.
    pub(super) fn memory(&mut self, offset: u64, data: &[u8]) -> &mut Self {
        let mut mem = vec![0u8; offset as usize];
        mem.extend_from_slice(data);
        let mut source = VecSource {
            mem,
            regs: Vec::new(),
            fail: None,
        };
        let mem_size = self.mem_size.max(offset + data.len() as u64);
        let n = encode_memory(
            mem_size,
            offset,
            data.len(),
            &mut source,
            &SoftCrc32c,
            &mut self.out,
        )
        .unwrap();
        self.push(n)
    }

    /// Appends a MEMORY record for `data` at `offset` without checking the range, for offsets
    /// too large to allocate.
    pub(super) fn memory_raw(&mut self, offset: u64, data: &[u8]) -> &mut Self {
        let mut payload = offset.to_le_bytes().to_vec();
        payload.extend_from_slice(data);
        self.raw(RecordType::Memory.raw(), 0, &payload)
    }

    /// Appends a record of any type, flags and payload.
    pub(super) fn raw(&mut self, ty: u32, flags: u32, payload: &[u8]) -> &mut Self {
        let n = encode_raw_record(ty, flags, payload, &SoftCrc32c, &mut self.out).unwrap();
        self.push(n)
    }

    /// Appends an END record with the right counters.
    pub(super) fn end(&mut self) -> &mut Self {
        let (records, bytes) = (self.starts.len() as u64, self.stream.len() as u64);
        self.end_with(records, bytes)
    }

    /// Appends an END record with the given counters.
    pub(super) fn end_with(&mut self, records: u64, bytes: u64) -> &mut Self {
        let n = encode_end(records, bytes, &SoftCrc32c, &mut self.out).unwrap();
        self.push(n)
    }

    /// Returns the stream.
    pub(super) fn build(&self) -> Vec<u8> {
        self.stream.clone()
    }
}

/// A small valid stream with several MEMORY records, an overwrite and an unknown optional
/// record, for a device of [`SMALL_MEM`] bytes, and the memory and register blob it describes.
pub(super) fn small_stream() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    let identity = bochs(SMALL_MEM);
    let regs = rng.bytes(20);
    let a = rng.bytes(100);
    let b = rng.bytes(150);
    let c = rng.bytes(30);
    let d = rng.bytes(50);
    let stream = Builder::new(identity)
        .header(identity, regs.len() as u32)
        .memory(0, &a)
        .regs(&regs)
        .memory(100, &b)
        .raw(0x1234, 1, b"skip me")
        .memory(40, &c)
        .memory(250, &d)
        .end()
        .build();
    let mut mem = [a, b, d].concat();
    mem[40..70].copy_from_slice(&c);
    (stream, mem, regs)
}

/// Device memory size of [`small_stream`].
pub(super) const SMALL_MEM: usize = 300;
