// SPDX-License-Identifier: GPL-2.0

//! Which parts of the device memory a stream has written.
//!
//! A destination must not run with memory the stream never wrote: what was there before (the
//! destination's own old contents) is not the source's state. [`Coverage`] counts, at
//! [`GRANULE`] granularity, which pages of the device memory MEMORY records wrote, in a bitmap
//! the caller provides ([`Coverage::words`] `u64`s: 32 KiB per GiB of device memory); the
//! resuming file accepts END only once every page was written.
//!
//! A page counts as written when one MEMORY record wrote all of it (the last page, which may be
//! partial, up to the end of the device memory). The parts of pages that records write only in
//! part do not count: the bookkeeping stays one bit per page, and exact, in that a stream is
//! accepted only if every byte was written. A source therefore sends memory in records that
//! cover whole pages, as the encoder's `MAX_CHUNK` pieces and pre-copy's dirty pages do; a stream
//! that covers a page only through several partial records is refused at its END
//! (`Documentation/stream-format.rst`).

/// The unit of coverage: a page of device memory.
pub(crate) const GRANULE: u64 = 4096;

/// The pages of a device memory that MEMORY records have written.
///
/// # Invariants
///
/// `pages` is `mem_size` in granules, rounded up; `covered` is the number of bits set in the
/// caller's bitmap, and at most `pages`.
#[derive(Clone, Debug)]
pub(crate) struct Coverage {
    /// Size of the device memory in bytes.
    mem_size: u64,
    /// Pages of the device memory (the last one may be partial).
    pages: u64,
    /// Pages written at least once.
    covered: u64,
}

/// A range [`Coverage::mark`] refused: out of bounds, or a bitmap too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CoverageError;

impl Coverage {
    /// Nothing written yet, for a device memory of `mem_size` bytes.
    pub(crate) fn new(mem_size: u64) -> Self {
        Self {
            mem_size,
            pages: mem_size.div_ceil(GRANULE),
            covered: 0,
        }
    }

    /// The number of `u64` words the bitmap needs.
    pub(crate) fn words(&self) -> usize {
        usize::try_from(self.pages.div_ceil(64)).unwrap_or(usize::MAX)
    }

    /// Records that `[offset, offset + len)` was written, which covers the pages that lie
    /// entirely inside it (the last page of the memory ends at `mem_size`). `bits` is the bitmap,
    /// all zero at first, of at least [`Self::words`] words, and the same on every call. Nothing
    /// is marked if the range is out of bounds.
    pub(crate) fn mark(
        &mut self,
        bits: &mut [u64],
        offset: u64,
        len: u64,
    ) -> Result<(), CoverageError> {
        let end = offset.checked_add(len).ok_or(CoverageError)?;
        if end > self.mem_size || bits.len() < self.words() {
            return Err(CoverageError);
        }
        let first = offset.div_ceil(GRANULE);
        // A record that ends the memory also ends its last, partial page.
        let last = if end == self.mem_size {
            self.pages
        } else {
            end / GRANULE
        };
        for page in first..last {
            let word = usize::try_from(page / 64).map_err(|_| CoverageError)?;
            let bit = 1u64.checked_shl(u32::try_from(page % 64).map_err(|_| CoverageError)?);
            let (Some(w), Some(bit)) = (bits.get_mut(word), bit) else {
                return Err(CoverageError);
            };
            if *w & bit == 0 {
                *w |= bit;
                // INVARIANT: A bit newly set, of a page below `pages` (`end <= mem_size`).
                self.covered = self.covered.saturating_add(1);
            }
        }
        Ok(())
    }

    /// Whether every page was written.
    pub(crate) fn complete(&self) -> bool {
        self.covered == self.pages
    }

    /// How many pages were written, and how many there are.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.covered, self.pages)
    }
}
