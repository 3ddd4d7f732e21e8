// SPDX-License-Identifier: GPL-2.0

//! The plan of a pre-copy stream: which record comes next, and exactly how many bytes are left.
//!
//! In `PRE_COPY` the source sends the device memory while the device runs, then again every page
//! written since it was sent (a *dirty* page: one bit per page of [`PAGE_SIZE`] bytes in a
//! bitmap that the write tracker sets and the sender clears). In `STOP_COPY` it sends what is
//! left, then the registers. The stream is format version 1, unchanged
//! (`Documentation/stream-format.rst`, section "PRE_COPY"):
//!
//! ```text
//! PRE_COPY:  HEADER  MEMORY(0) MEMORY(MAX_CHUNK) ... MEMORY(last chunk)   the initial pass
//!            MEMORY(dirty run) ...                                        any number
//! STOP_COPY: MEMORY(rest of the initial pass)                             if any
//!            MEMORY(dirty run) ...                                        one lap
//!            DEVICE_REGS  END
//! ```
//!
//! A *dirty run* ([`next_run`]) is a maximal range of consecutive dirty pages, of at most
//! [`MAX_RUN_PAGES`] pages (one MEMORY record of [`MAX_CHUNK`] bytes), with no alignment: it
//! may start at any page and may cross a `MAX_CHUNK` boundary of the memory. A run that ends the
//! memory carries the last page only up to `mem_size`, which need not be a multiple of
//! [`PAGE_SIZE`]. Every record covers whole pages, as the destination's coverage check needs
//! ([`coverage`](super::coverage)).
//!
//! In `PRE_COPY` the dirty runs are searched from a cursor that rotates: from where the last run
//! ended to the end of the memory, then from the start. In `STOP_COPY` they are searched in one
//! [`Lap`] from a start fixed when `STOP_COPY` begins: from it to the end of the memory, then
//! from the start of the memory up to it; a page set behind the sweep is not sent, so that the
//! stream ends.
//!
//! [`PreCopyPlan`] is the state of such a stream. [`PreCopyPlan::next`] says which record comes
//! next for the bitmap as it is now, and [`PreCopyPlan::advance`] moves past it once it has
//! been written; [`PreCopyPlan::initial_bytes`], [`PreCopyPlan::dirty_bytes`] and
//! [`PreCopyPlan::stop_copy_bytes`] count the bytes of the records still to come if the bitmap
//! does not change any more. Both sides search the bitmap with [`next_run`], so that the counts
//! are exact: they are what the VFIO `PRECOPY_INFO` ioctl and `MIG_DATA_SIZE` report.
//!
//! The caller protocol, with the bitmap frozen against writers (in the kernel: under the lock
//! that the tracker's write faults take):
//!
//! 1. `step = plan.next(bits)?`; in `PRE_COPY`, `None` means that there is nothing to send now.
//! 2. For [`Step::Memory`], clear the bits of [`Step::pages`] and read those pages, atomically
//!    with respect to writers of the memory, so that a later write sets its bit again.
//! 3. Write the record with [`Step::encode`] (through the stream's [`Encoder`]).
//! 4. `plan.advance(step)?`.
//!
//! If step 3 fails after step 2, the bits of the pages must be set again (or the stream given
//! up): the plan does not remember them.
//!
//! The counts are in stream bytes. A caller that stages a record in a buffer and hands it out in
//! pieces advances the plan when it stages the record, and adds the unread part of the staged
//! record to the counts itself.
//!
//! All arithmetic is checked: a count that does not fit in 64 bits is
//! [`EncodeError::Oversized`]. Nothing here panics.

use super::{
    coverage::GRANULE,
    crc::Crc32c,
    encoder::{
        EncodeError,
        Encoder,
        Source, //
    },
    format::{
        END_PAYLOAD_LEN,
        HEADER_PAYLOAD_LEN,
        MAX_CHUNK,
        MAX_REGS_LEN,
        MEMORY_OFFSET_LEN,
        RECORD_OVERHEAD, //
    },
};

/// The unit of dirty tracking: one bit of the bitmap, the same page as the destination's
/// coverage ([`GRANULE`]).
pub(crate) const PAGE_SIZE: u64 = GRANULE;

/// The most pages in one dirty run: the data of one MEMORY record of [`MAX_CHUNK`] bytes.
// CAST: `MAX_CHUNK` (256 KiB) fits in 64 bits.
pub(crate) const MAX_RUN_PAGES: u64 = MAX_CHUNK as u64 / PAGE_SIZE;

// A run of `MAX_RUN_PAGES` whole pages is exactly one MEMORY record of `MAX_CHUNK` bytes, and
// initial chunks start at page boundaries.
const _: () = assert!(MAX_CHUNK as u64 % PAGE_SIZE == 0);
const _: () = assert!(MAX_RUN_PAGES > 0);

/// Bytes of the version 1 HEADER record: 60.
// CAST: A record length (at most `MAX_RECORD_LEN`) fits in 64 bits.
pub(crate) const HEADER_BYTES: u64 = (RECORD_OVERHEAD + HEADER_PAYLOAD_LEN) as u64;

/// Bytes of the END record: 44.
// CAST: As for `HEADER_BYTES`.
pub(crate) const END_BYTES: u64 = (RECORD_OVERHEAD + END_PAYLOAD_LEN) as u64;

/// Bytes a MEMORY record adds to its data: record header, offset and CRC, 36.
// CAST: As for `HEADER_BYTES`.
pub(crate) const MEMORY_OVERHEAD: u64 = (RECORD_OVERHEAD + MEMORY_OFFSET_LEN) as u64;

/// Bytes of the DEVICE_REGS record without the blob: 28.
// CAST: As for `HEADER_BYTES`.
pub(crate) const REGS_OVERHEAD: u64 = RECORD_OVERHEAD as u64;

/// [`MAX_CHUNK`] as a `u64`.
// CAST: `MAX_CHUNK` fits in 64 bits.
const CHUNK: u64 = MAX_CHUNK as u64;

/// Returns the bytes of a MEMORY record with `len` bytes of data: `36 + len`.
pub(crate) fn memory_bytes(len: u64) -> Result<u64, EncodeError> {
    MEMORY_OVERHEAD
        .checked_add(len)
        .ok_or(EncodeError::Oversized)
}

/// Returns the bytes of the DEVICE_REGS record for a blob of `regs_len` bytes: `28 + regs_len`.
///
/// A `regs_len` over [`MAX_REGS_LEN`] is [`EncodeError::Oversized`], as in the encoder.
pub(crate) fn regs_bytes(regs_len: u32) -> Result<u64, EncodeError> {
    match usize::try_from(regs_len) {
        Ok(len) if len <= MAX_REGS_LEN => REGS_OVERHEAD
            .checked_add(u64::from(regs_len))
            .ok_or(EncodeError::Oversized),
        _ => Err(EncodeError::Oversized),
    }
}

/// Returns the number of pages, and of bits in the dirty bitmap, of a memory of `mem_size`
/// bytes: the last page may be partial.
pub(crate) fn pages(mem_size: u64) -> u64 {
    mem_size.div_ceil(PAGE_SIZE)
}

/// Returns the number of `u64` words of the dirty bitmap of a memory of `mem_size` bytes.
pub(crate) fn words(mem_size: u64) -> usize {
    usize::try_from(pages(mem_size).div_ceil(64)).unwrap_or(usize::MAX)
}

/// Returns the bytes of the initial pass from `offset` on: the MEMORY records of the pieces of
/// [`MAX_CHUNK`] bytes (the last one shorter) of `[offset, mem_size)`, `36 + len` each.
///
/// That is 0 if `offset >= mem_size`. `offset` need not be a multiple of `MAX_CHUNK`; the plan's
/// always is.
pub(crate) fn initial_pass_bytes(mem_size: u64, offset: u64) -> Result<u64, EncodeError> {
    let left = mem_size.saturating_sub(offset);
    left.div_ceil(CHUNK)
        .checked_mul(MEMORY_OVERHEAD)
        .and_then(|overhead| overhead.checked_add(left))
        .ok_or(EncodeError::Oversized)
}

/// A dirty run: `pages` consecutive dirty pages from page `first` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// The first page.
    pub(crate) first: u64,
    /// The number of pages; [`next_run`] gives 1 to [`MAX_RUN_PAGES`].
    pub(crate) pages: u64,
}

impl Run {
    /// Returns the page after the run.
    pub(crate) fn end(&self) -> u64 {
        self.first.saturating_add(self.pages)
    }

    /// Returns where the run's data starts in the memory, in bytes.
    pub(crate) fn offset(&self) -> Result<u64, EncodeError> {
        self.first
            .checked_mul(PAGE_SIZE)
            .ok_or(EncodeError::OutOfRange)
    }

    /// Returns the bytes of data of the run in a memory of `mem_size` bytes: whole pages, but the
    /// last page of the memory only up to `mem_size`.
    ///
    /// A run that does not start within the memory is [`EncodeError::OutOfRange`].
    pub(crate) fn data_len(&self, mem_size: u64) -> Result<u64, EncodeError> {
        let start = self.offset()?;
        if start >= mem_size {
            return Err(EncodeError::OutOfRange);
        }
        let end = self
            .end()
            .checked_mul(PAGE_SIZE)
            .map_or(mem_size, |end| end.min(mem_size));
        end.checked_sub(start).ok_or(EncodeError::OutOfRange)
    }

    /// Returns the MEMORY step that sends the run in a memory of `mem_size` bytes.
    fn step(&self, mem_size: u64) -> Result<Step, EncodeError> {
        let len = usize::try_from(self.data_len(mem_size)?).map_err(|_| EncodeError::Oversized)?;
        Ok(Step::Memory {
            offset: self.offset()?,
            len,
        })
    }
}

/// Returns word `index` of the bitmap `bits`; a word beyond the slice is 0.
fn word(bits: &[u64], index: u64) -> u64 {
    usize::try_from(index)
        .ok()
        .and_then(|i| bits.get(i))
        .copied()
        .unwrap_or(0)
}

/// Returns the bits of `bits` from page `page` on, up to the end of its word, in the low bits.
fn bits_from(bits: &[u64], page: u64) -> u64 {
    // `page % 64` is below 64, so the shift is in range.
    let shift = u32::try_from(page % 64).unwrap_or(0);
    word(bits, page / 64).checked_shr(shift).unwrap_or(0)
}

/// Returns the first page after the word that holds page `page`.
fn next_word(page: u64) -> u64 {
    (page | 63).saturating_add(1)
}

/// Returns the first set bit in `[from, end)`, if any.
fn first_set(bits: &[u64], from: u64, end: u64) -> Option<u64> {
    let mut page = from;
    while page < end {
        let w = bits_from(bits, page);
        if w != 0 {
            let found = page.saturating_add(u64::from(w.trailing_zeros()));
            return (found < end).then_some(found);
        }
        page = next_word(page);
    }
    None
}

/// Returns the first clear bit at or after `first` and before `end`, or `end`.
fn first_clear(bits: &[u64], first: u64, end: u64) -> u64 {
    let mut page = first;
    while page < end {
        let word_end = next_word(page);
        // The bits shifted in from the top are 0: the ones end at the end of the word at most.
        let ones = u64::from(bits_from(bits, page).trailing_ones());
        page = page.saturating_add(ones).min(end);
        if page < word_end {
            break;
        }
    }
    page.min(end)
}

/// Returns the first dirty run that starts at or after page `from` and ends at or before page
/// `limit`, in a bitmap of `npages` pages.
///
/// The run starts at the first set bit in `[from, min(limit, npages))` and is maximal: it ends at
/// the next clear bit, at `limit`, at `npages` or after [`MAX_RUN_PAGES`] pages, whichever comes
/// first. Bits at or beyond `npages` are ignored, and words beyond the end of `bits` count as
/// all clear.
pub(crate) fn next_run(bits: &[u64], npages: u64, from: u64, limit: u64) -> Option<Run> {
    let end = limit.min(npages);
    let first = first_set(bits, from, end)?;
    let last = first_clear(bits, first, end.min(first.saturating_add(MAX_RUN_PAGES)));
    Some(Run {
        first,
        pages: last.saturating_sub(first),
    })
}

/// Returns the bytes of the MEMORY records of the dirty runs in `[from, limit)`, searched one
/// after the other with [`next_run`], in a memory of `mem_size` bytes and `npages` pages.
///
/// This is what sending them produces, for a bitmap that does not change but for the bits of
/// the sent pages, which the sender clears.
pub(crate) fn run_bytes(
    bits: &[u64],
    npages: u64,
    mem_size: u64,
    from: u64,
    limit: u64,
) -> Result<u64, EncodeError> {
    let mut total = 0u64;
    let mut from = from;
    while let Some(run) = next_run(bits, npages, from, limit) {
        total = memory_bytes(run.data_len(mem_size)?)?
            .checked_add(total)
            .ok_or(EncodeError::Oversized)?;
        // A run has at least one page: `from` grows.
        from = run.end();
    }
    Ok(total)
}

/// Returns the bytes of the MEMORY records of one lap of dirty runs from page `cursor` on, in a
/// memory of `mem_size` bytes and `npages` pages: the runs in `[cursor, npages)`, then the runs
/// in `[0, cursor)`; no run crosses `cursor`.
///
/// This is the `dirty_bytes` of a pre-copy stream whose dirty cursor is `cursor`, and the dirty
/// part of a `STOP_COPY` lap that starts there.
pub(crate) fn lap_bytes(
    bits: &[u64],
    npages: u64,
    mem_size: u64,
    cursor: u64,
) -> Result<u64, EncodeError> {
    Lap::new(cursor).bytes(bits, npages, mem_size)
}

/// One sweep over the dirty bitmap: from page `start` to the end, then from page 0 up to
/// `start`.
///
/// # Invariants
///
/// `cursor` is where the search goes on: in `[start, npages]` before the sweep wrapped around,
/// in `[0, start]` after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lap {
    /// Where the lap started, and where it ends.
    start: u64,
    /// Where the search for the next run starts.
    cursor: u64,
    /// Whether the lap has wrapped around to page 0.
    wrapped: bool,
}

impl Lap {
    /// A lap from page `start` on.
    pub(crate) fn new(start: u64) -> Self {
        // INVARIANT: `cursor == start`, before the wrap.
        Self {
            start,
            cursor: start,
            wrapped: false,
        }
    }

    /// Returns the page the lap started at, and ends at.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Returns where the search for the next run starts.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Returns whether the lap has wrapped around to page 0.
    pub(crate) fn wrapped(&self) -> bool {
        self.wrapped
    }

    /// Returns the next run of the lap in a bitmap of `npages` pages, or `None` at the end of the
    /// lap.
    pub(crate) fn next_run(&self, bits: &[u64], npages: u64) -> Option<Run> {
        if self.wrapped {
            next_run(bits, npages, self.cursor, self.start)
        } else {
            next_run(bits, npages, self.cursor, npages)
                .or_else(|| next_run(bits, npages, 0, self.start))
        }
    }

    /// Moves past `run`, a run that [`Lap::next_run`] gave for a bitmap of `npages` pages.
    ///
    /// A run that cannot be the next one of the lap (one behind the cursor, or crossing the
    /// lap's start or end) is [`EncodeError::UnexpectedRecord`], and changes nothing.
    pub(crate) fn advance(&mut self, run: Run, npages: u64) -> Result<(), EncodeError> {
        let end = run.end();
        if run.pages == 0 {
            return Err(EncodeError::UnexpectedRecord);
        }
        // Where a run after the wrap may start.
        let wrapped_from = if self.wrapped { self.cursor } else { 0 };
        if !self.wrapped && run.first >= self.cursor && end <= npages {
            // INVARIANT: `start <= cursor <= end <= npages`.
            self.cursor = end;
        } else if run.first >= wrapped_from && end <= self.start {
            // INVARIANT: `end <= start`, after the wrap.
            self.cursor = end;
            self.wrapped = true;
        } else {
            return Err(EncodeError::UnexpectedRecord);
        }
        Ok(())
    }

    /// Returns the bytes of the MEMORY records of the rest of the lap, in a memory of `mem_size`
    /// bytes and `npages` pages.
    pub(crate) fn bytes(
        &self,
        bits: &[u64],
        npages: u64,
        mem_size: u64,
    ) -> Result<u64, EncodeError> {
        if self.wrapped {
            run_bytes(bits, npages, mem_size, self.cursor, self.start)
        } else {
            run_bytes(bits, npages, mem_size, self.cursor, npages)?
                .checked_add(run_bytes(bits, npages, mem_size, 0, self.start)?)
                .ok_or(EncodeError::Oversized)
        }
    }
}

/// A record of a pre-copy stream, as [`PreCopyPlan::next`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The HEADER record.
    Header,
    /// A MEMORY record with the `len` bytes of memory at `offset`: a piece of the initial pass
    /// or a dirty run.
    Memory {
        /// Where the data starts, in bytes: a multiple of [`PAGE_SIZE`].
        offset: u64,
        /// The bytes of data: whole pages but for the memory's last, at most [`MAX_CHUNK`].
        len: usize,
    },
    /// The DEVICE_REGS record.
    Regs,
    /// The END record.
    End,
}

impl Step {
    /// Returns the pages a MEMORY step sends, whose dirty bits its sender clears; `None` for the
    /// other steps.
    pub(crate) fn pages(&self) -> Option<Run> {
        let Self::Memory { offset, len } = *self else {
            return None;
        };
        let first = offset / PAGE_SIZE;
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .map_or(u64::MAX / PAGE_SIZE, |end| end.div_ceil(PAGE_SIZE));
        Some(Run {
            first,
            pages: end.saturating_sub(first),
        })
    }

    /// Returns the bytes of the step's record, for a register blob of `regs_len` bytes.
    pub(crate) fn record_bytes(&self, regs_len: u32) -> Result<u64, EncodeError> {
        match *self {
            Self::Header => Ok(HEADER_BYTES),
            Self::Memory { len, .. } => {
                memory_bytes(u64::try_from(len).map_err(|_| EncodeError::Oversized)?)
            }
            Self::Regs => regs_bytes(regs_len),
            Self::End => Ok(END_BYTES),
        }
    }

    /// Writes the step's record into the start of `out` with `encoder`, which counts it, and
    /// returns its length.
    ///
    /// [`Step::Memory`] reads the memory from `source` ([`Encoder::encode_memory`]),
    /// [`Step::Regs`] the register blob ([`Encoder::encode_regs`]). The encoder refuses a record
    /// out of its place ([`EncodeError::UnexpectedRecord`]): the steps of one plan, in order,
    /// make a valid stream. On error nothing was counted.
    pub(crate) fn encode<S: Source, C: Crc32c>(
        &self,
        encoder: &mut Encoder,
        source: &mut S,
        crc: &C,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        match *self {
            Self::Header => encoder.encode_header(crc, out),
            Self::Memory { offset, len } => encoder.encode_memory(offset, len, source, crc, out),
            Self::Regs => encoder.encode_regs(source, crc, out),
            Self::End => encoder.encode_end(crc, out),
        }
    }
}

/// Where a [`PreCopyPlan`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The HEADER record is next.
    Header,
    /// The initial pass: the piece of [`MAX_CHUNK`] bytes (or the rest of the memory) at
    /// `offset` is next. In `STOP_COPY` this is the rest of the initial pass.
    Initial {
        /// Where the next piece starts: a multiple of [`MAX_CHUNK`], below `mem_size`.
        offset: u64,
    },
    /// `PRE_COPY` after the initial pass: dirty runs from page `cursor` on, wrapping around.
    Dirty {
        /// Where the search for the next run starts: a page below the number of pages, or 0.
        cursor: u64,
    },
    /// `STOP_COPY` after the initial pass: the rest of the lap of dirty runs, then DEVICE_REGS.
    Lap(Lap),
    /// `STOP_COPY`: END is next.
    End,
    /// `STOP_COPY`: the stream is complete.
    Done,
}

/// The state of a pre-copy stream: what comes next, and how many bytes are left.
///
/// A plan starts in `PRE_COPY`: [`Phase::Header`], then [`Phase::Initial`], then
/// [`Phase::Dirty`]. [`PreCopyPlan::enter_stop_copy`] switches it to `STOP_COPY`, from any
/// phase: the rest of the HEADER and initial pass (with the dirty runs behind the initial pass
/// from page 0 on), or else the lap of dirty runs from the dirty cursor on ([`Phase::Lap`]),
/// then DEVICE_REGS, [`Phase::End`] and [`Phase::Done`].
///
/// A plain stop-copy stream, without pre-copy, is not a plan's: [`Encoder::next_record`]
/// writes it (HEADER, DEVICE_REGS, MEMORY..., END).
///
/// # Invariants
///
/// `npages` is `mem_size` in pages, rounded up. [`Phase::Dirty`] only in `PRE_COPY`;
/// [`Phase::Lap`], [`Phase::End`] and [`Phase::Done`] only in `STOP_COPY`. The lap of
/// [`Phase::Lap`] starts at a page no greater than `npages`. The offset of [`Phase::Initial`]
/// is a multiple of [`MAX_CHUNK`] below `mem_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PreCopyPlan {
    /// Size of the device memory in bytes.
    mem_size: u64,
    /// Pages of the device memory, bits of the bitmap (the last page may be partial).
    npages: u64,
    /// Whether the stream is in `STOP_COPY`.
    stop_copy: bool,
    /// Where the stream is.
    phase: Phase,
}

impl PreCopyPlan {
    /// A plan for a device memory of `mem_size` bytes, in `PRE_COPY`, before the HEADER.
    pub(crate) fn new(mem_size: u64) -> Self {
        // INVARIANT: `PRE_COPY` and the HEADER first.
        Self {
            mem_size,
            npages: pages(mem_size),
            stop_copy: false,
            phase: Phase::Header,
        }
    }

    /// Returns the number of pages, bits of the dirty bitmap.
    pub(crate) fn npages(&self) -> u64 {
        self.npages
    }

    /// Returns the number of `u64` words of the dirty bitmap.
    pub(crate) fn words(&self) -> usize {
        words(self.mem_size)
    }

    /// Returns where the stream is.
    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    /// Returns whether the stream is in `STOP_COPY`.
    pub(crate) fn is_stop_copy(&self) -> bool {
        self.stop_copy
    }

    /// Returns whether the END record has been written.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Switches the stream to `STOP_COPY`: the records still to come are the rest of the HEADER
    /// and initial pass, one lap of dirty runs from the dirty cursor on, DEVICE_REGS and END.
    ///
    /// The lap starts where `PRE_COPY` would have searched for the next dirty run (page 0 if the
    /// initial pass is not over). Calling it again changes nothing.
    pub(crate) fn enter_stop_copy(&mut self) {
        if self.stop_copy {
            return;
        }
        self.stop_copy = true;
        if let Phase::Dirty { cursor } = self.phase {
            // INVARIANT: `cursor < npages`, or 0.
            self.phase = Phase::Lap(Lap::new(cursor));
        }
    }

    /// Returns the phase after the initial pass.
    fn after_initial(&self) -> Phase {
        // INVARIANT: The dirty phase of the mode; the lap starts at 0.
        if self.stop_copy {
            Phase::Lap(Lap::new(0))
        } else {
            Phase::Dirty { cursor: 0 }
        }
    }

    /// Returns the phase of the initial pass from byte `offset` on.
    fn initial_from(&self, offset: u64) -> Phase {
        // INVARIANT: An offset below `mem_size`; the caller's offsets are multiples of
        // `MAX_CHUNK`.
        if offset < self.mem_size {
            Phase::Initial { offset }
        } else {
            self.after_initial()
        }
    }

    /// Returns the length of the piece of the initial pass at `offset`.
    fn chunk_len(&self, offset: u64) -> usize {
        let left = self.mem_size.saturating_sub(offset);
        usize::try_from(left).map_or(MAX_CHUNK, |left| left.min(MAX_CHUNK))
    }

    /// Returns the bytes of the initial records still to come: the HEADER if it is, and the
    /// MEMORY records of the rest of the initial pass; 0 once the initial pass is over.
    ///
    /// A caller that has staged a record adds the unread part of it.
    pub(crate) fn initial_bytes(&self) -> Result<u64, EncodeError> {
        match self.phase {
            Phase::Header => initial_pass_bytes(self.mem_size, 0)?
                .checked_add(HEADER_BYTES)
                .ok_or(EncodeError::Oversized),
            Phase::Initial { offset } => initial_pass_bytes(self.mem_size, offset),
            _ => Ok(0),
        }
    }

    /// Returns the bytes of the MEMORY records of the dirty runs still to come for the bitmap
    /// `bits` as it is now.
    ///
    /// During the initial pass, these are the runs behind it, from page 0 on (the pages ahead of
    /// it are part of it); after it, in `PRE_COPY` one lap from the dirty cursor ([`lap_bytes`]),
    /// and in `STOP_COPY` the rest of the lap. A caller that has staged a record adds the unread
    /// part of it.
    pub(crate) fn dirty_bytes(&self, bits: &[u64]) -> Result<u64, EncodeError> {
        let (npages, mem_size) = (self.npages, self.mem_size);
        match self.phase {
            Phase::Header => Ok(0),
            // `offset` is a multiple of `MAX_CHUNK`, hence of pages.
            Phase::Initial { offset } => run_bytes(bits, npages, mem_size, 0, offset / PAGE_SIZE),
            Phase::Dirty { cursor } => lap_bytes(bits, npages, mem_size, cursor),
            Phase::Lap(lap) => lap.bytes(bits, npages, mem_size),
            Phase::End | Phase::Done => Ok(0),
        }
    }

    /// Returns the bytes the stream still has to come in `STOP_COPY`, entered now if it is not
    /// yet, for the bitmap `bits` as it is now and a register blob of `regs_len` bytes: the
    /// initial and dirty bytes, DEVICE_REGS and END, those of them still to come.
    ///
    /// In `PRE_COPY` this is the `MIG_DATA_SIZE` to report. A caller that has staged a record
    /// adds the unread part of it. A `regs_len` over [`MAX_REGS_LEN`] is
    /// [`EncodeError::Oversized`].
    pub(crate) fn stop_copy_bytes(&self, bits: &[u64], regs_len: u32) -> Result<u64, EncodeError> {
        let regs = regs_bytes(regs_len)?;
        let tail = match self.phase {
            Phase::Done => 0,
            Phase::End => END_BYTES,
            _ => regs.checked_add(END_BYTES).ok_or(EncodeError::Oversized)?,
        };
        self.initial_bytes()?
            .checked_add(self.dirty_bytes(bits)?)
            .and_then(|n| n.checked_add(tail))
            .ok_or(EncodeError::Oversized)
    }

    /// Returns the next record of the stream for the bitmap `bits` as it is now.
    ///
    /// `None` in `PRE_COPY` means that nothing is to be sent now (no dirty run after the initial
    /// pass; the temporary end of the stream), and in `STOP_COPY` that the stream is complete.
    /// In `STOP_COPY` the lap ends, and [`Step::Regs`] comes, once the lap has no dirty run
    /// left. The plan does not change: [`PreCopyPlan::advance`] moves past the step once its
    /// record was written.
    ///
    /// An error would mean a run outside the memory, which the plan's invariants rule out.
    pub(crate) fn next(&self, bits: &[u64]) -> Result<Option<Step>, EncodeError> {
        let step = match self.phase {
            Phase::Header => Step::Header,
            Phase::Initial { offset } => Step::Memory {
                offset,
                len: self.chunk_len(offset),
            },
            Phase::Dirty { cursor } => match Lap::new(cursor).next_run(bits, self.npages) {
                Some(run) => run.step(self.mem_size)?,
                None => return Ok(None),
            },
            Phase::Lap(lap) => match lap.next_run(bits, self.npages) {
                Some(run) => run.step(self.mem_size)?,
                None => Step::Regs,
            },
            Phase::End => Step::End,
            Phase::Done => return Ok(None),
        };
        Ok(Some(step))
    }

    /// Returns the run a MEMORY `step` sends, if it is a dirty run of this memory: whole pages
    /// (the last of the memory up to its end), 1 to [`MAX_RUN_PAGES`] of them.
    fn dirty_run(&self, step: Step) -> Result<Run, EncodeError> {
        let (Step::Memory { offset, len }, Some(run)) = (step, step.pages()) else {
            return Err(EncodeError::UnexpectedRecord);
        };
        let whole = offset % PAGE_SIZE == 0
            && run.pages > 0
            && run.pages <= MAX_RUN_PAGES
            && run.end() <= self.npages
            && u64::try_from(len).ok() == run.data_len(self.mem_size).ok();
        if whole {
            Ok(run)
        } else {
            Err(EncodeError::UnexpectedRecord)
        }
    }

    /// Moves past `step`, which [`PreCopyPlan::next`] gave and whose record was written.
    ///
    /// A step that cannot be the next one is [`EncodeError::UnexpectedRecord`] and changes
    /// nothing. The plan trusts that a dirty run was the next one for the bitmap of the time:
    /// it only checks that it is one.
    pub(crate) fn advance(&mut self, step: Step) -> Result<(), EncodeError> {
        let next = match (self.phase, step) {
            (Phase::Header, Step::Header) => self.initial_from(0),
            (Phase::Initial { offset }, Step::Memory { offset: at, len })
                if at == offset && len == self.chunk_len(offset) =>
            {
                let len = u64::try_from(len).map_err(|_| EncodeError::Oversized)?;
                // `offset + len <= mem_size`.
                self.initial_from(offset.saturating_add(len))
            }
            (Phase::Dirty { .. }, Step::Memory { .. }) => {
                let end = self.dirty_run(step)?.end();
                // INVARIANT: The run ends at or before `npages`; the cursor wraps to 0 there.
                Phase::Dirty {
                    cursor: if end >= self.npages { 0 } else { end },
                }
            }
            (Phase::Lap(mut lap), Step::Memory { .. }) => {
                lap.advance(self.dirty_run(step)?, self.npages)?;
                Phase::Lap(lap)
            }
            (Phase::Lap(_), Step::Regs) => Phase::End,
            (Phase::End, Step::End) => Phase::Done,
            _ => return Err(EncodeError::UnexpectedRecord),
        };
        self.phase = next;
        Ok(())
    }
}
