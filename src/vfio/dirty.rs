// SPDX-License-Identifier: GPL-2.0

//! Write tracking of one BAR of a vfio-pci-core device: one dirty bit per page, set when a
//! writer changes the page while tracking is armed.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/wait.h`](srctree/include/linux/wait.h),
//! [`include/linux/poll.h`](srctree/include/linux/poll.h)
//!
//! [`DirtyTracker`] holds the state: the bits, whether tracking is armed, the address space of the
//! device's files (whose mappings of the BAR are zapped when a page is taken) and a wait queue
//! for `poll()` on a migration data file. The mechanism that sets the bits lives with the device
//! ([`super::device`]): write faults on a user mapping of the BAR (write-notify: the mapping's
//! PTEs are read-only unless their page's bit is set) and region writes through the device fd.
//!
//! # Ordering
//!
//! The invariant that makes the bits exact:
//!
//! > While tracking is armed, a writable user PTE of page `p` of the BAR exists only if bit `p` is
//! > set.
//!
//! - Arming sets every bit, then `armed`, with vfio-pci-core's `memory_lock` held for writing.
//! - A fault installs a writable PTE for a write access only after it set the page's bit, and for
//!   a read access only if the bit is set; it holds `memory_lock` for reading throughout, so it
//!   cannot interleave with a take.
//! - `pfn_mkwrite` (a write to a read-only PTE) sets the bit before the mm makes the PTE writable;
//!   the mm re-checks the PTE under its page table lock afterwards, so a PTE zapped meanwhile is
//!   never made writable (the access faults again).
//! - A region write sets the bits of the pages it wrote *after* it wrote them.
//! - A take ([`DirtyTracker::take`], then [`DirtyTracker::zap`], then reading the pages) runs
//!   with `memory_lock` held for writing: the bits are cleared, every user PTE of the pages is
//!   removed (and the TLBs flushed) and only then are the pages read. A store that happened before
//!   the zap is in what is read; a store after it faults and sets the bit again. (A take that
//!   need not see later writes, in STOP_COPY, skips the zap.)
//!
//! So a write is never lost; a page may at most be counted once more than it was written, when a
//! write's bit is set just before a take that already reads the written data.

use core::marker::PhantomPinned;

use kernel::{
    prelude::*,
    sync::atomic::{
        Acquire,
        Atomic,
        Full,
        Relaxed,
        Release, //
    },
    types::Opaque,
};

use super::bindings;

/// The page size of the tracking: that of the CPU page tables.
pub(crate) const PAGE_SIZE: usize = kernel::page::PAGE_SIZE;

/// Bits of the bitmap per word.
const WORD_BITS: usize = u64::BITS as usize;

/// The most pages one [`DirtyTracker::take`] takes: two words of the bitmap.
pub(crate) const MAX_TAKE_PAGES: usize = WORD_BITS;

/// The words of a bitmap of `npages` bits.
fn words(npages: usize) -> usize {
    npages.div_ceil(WORD_BITS)
}

/// A poll table of a `poll()` call on a file, to register the file's wait queues with.
///
/// # Invariants
///
/// `file` is the file being polled and `table` its poll table (or null), valid for `'a`.
pub(crate) struct PollTable<'a> {
    file: *mut kernel::bindings::file,
    table: *mut kernel::bindings::poll_table_struct,
    _p: core::marker::PhantomData<&'a ()>,
}

impl PollTable<'_> {
    /// Wraps the arguments of a `file_operations.poll` call.
    ///
    /// # Safety
    ///
    /// `file` and `table` are the arguments of a `poll` call in progress, which outlives the
    /// result.
    pub(super) unsafe fn from_raw(
        file: *mut kernel::bindings::file,
        table: *mut kernel::bindings::poll_table_struct,
    ) -> Self {
        // INVARIANT: By the safety requirement.
        Self {
            file,
            table,
            _p: core::marker::PhantomData,
        }
    }
}

/// A wait queue that `poll()` callers wait on.
///
/// # Invariants
///
/// `wq` is an initialised `wait_queue_head`.
#[pin_data]
pub(crate) struct PollQueue {
    #[pin]
    wq: Opaque<kernel::bindings::wait_queue_head>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: A wait queue head has its own spin lock and is used from any thread.
unsafe impl Send for PollQueue {}
// SAFETY: See `Send`.
unsafe impl Sync for PollQueue {}

impl PollQueue {
    /// An empty wait queue.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `init_waitqueue_head()` initialises the pinned slot it is given.
            wq <- Opaque::ffi_init(|slot| unsafe { bindings::qvp_init_waitqueue_head(slot) }),
            _pin: PhantomPinned,
        })
    }

    /// Adds the polling file to the queue (`poll_wait()`).
    ///
    /// The queue must outlive the file: the caller keeps it alive for as long as the file exists
    /// (the data files hold a reference to the device, which holds the queue).
    pub(crate) fn register(&self, table: &PollTable<'_>) {
        // SAFETY: `wq` is initialised (type invariant); `file` and `table` are those of a poll in
        // progress (type invariant of `PollTable`); the queue outlives the file (see above), and
        // epoll removes its entry before the file is released.
        unsafe { bindings::qvp_poll_wait(table.file, self.wq.get(), table.table) };
    }

    /// Wakes the pollers, if any, for `mask`. Takes only the queue's spin lock.
    pub(crate) fn wake(&self, mask: u32) {
        // SAFETY: `wq` is initialised (type invariant).
        unsafe { bindings::qvp_wake_up_poll(self.wq.get(), mask) };
    }
}

/// The dirty bits of one BAR and whether they are being tracked.
///
/// # Invariants
///
/// `bits` has [`words`]`(npages)` words; bits at and above `npages` are never set.
#[pin_data]
pub(crate) struct DirtyTracker {
    bits: KVec<Atomic<u64>>,
    npages: usize,
    armed: Atomic<bool>,
    /// The address space of the device's files (`file->f_mapping`, the vfio device's inode's,
    /// shared by every file of the device), captured at the first mmap of the BAR; null before.
    mapping: Atomic<*mut kernel::bindings::address_space>,
    #[pin]
    pollers: PollQueue,
}

impl DirtyTracker {
    /// A tracker of `len` bytes (rounded up to pages), not armed.
    pub(crate) fn new(len: usize) -> impl PinInit<Self, Error> {
        let npages = len.div_ceil(PAGE_SIZE);
        try_pin_init!(Self {
            bits: {
                let n = words(npages);
                let mut bits = KVec::with_capacity(n, GFP_KERNEL)?;
                for _ in 0..n {
                    bits.push(Atomic::new(0u64), GFP_KERNEL)?;
                }
                bits
            },
            npages,
            armed: Atomic::new(false),
            mapping: Atomic::new(core::ptr::null_mut()),
            pollers <- PollQueue::new(),
        }? Error)
    }

    /// The number of pages tracked.
    pub(crate) fn npages(&self) -> usize {
        self.npages
    }

    /// Whether tracking is armed.
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.load(Acquire)
    }

    /// Sets every bit, then arms tracking. The caller holds `memory_lock` for writing (see the
    /// module docs).
    pub(crate) fn arm(&self) {
        for (i, w) in self.bits.iter().enumerate() {
            w.store(self.valid_mask(i), Relaxed);
        }
        self.armed.store(true, Release);
    }

    /// Stops tracking. Atomics only: the reset path calls it under `memory_lock`.
    pub(crate) fn disarm(&self) {
        self.armed.store(false, Release);
    }

    /// The bits of word `i` that stand for pages of the BAR.
    fn valid_mask(&self, i: usize) -> u64 {
        let first = i * WORD_BITS;
        let n = self.npages.saturating_sub(first).min(WORD_BITS);
        if n == WORD_BITS {
            u64::MAX
        } else {
            (1u64 << n) - 1
        }
    }

    /// Sets bits `mask` of word `i`, returning those that were clear.
    fn set_bits(&self, i: usize, mask: u64) -> u64 {
        let Some(w) = self.bits.get(i) else {
            return 0;
        };
        let mut old = w.load(Relaxed);
        while old & mask != mask {
            match w.cmpxchg(old, old | mask, Full) {
                Ok(_) => return mask & !old,
                Err(cur) => old = cur,
            }
        }
        0
    }

    /// Clears bits `mask` of word `i`, returning those that were set.
    fn clear_bits(&self, i: usize, mask: u64) -> u64 {
        let Some(w) = self.bits.get(i) else {
            return 0;
        };
        let mut old = w.load(Relaxed);
        while old & mask != 0 {
            match w.cmpxchg(old, old & !mask, Full) {
                Ok(_) => return old & mask,
                Err(cur) => old = cur,
            }
        }
        0
    }

    /// Whether page `page`'s bit is set.
    pub(crate) fn is_dirty(&self, page: usize) -> bool {
        self.bits
            .get(page / WORD_BITS)
            .is_some_and(|w| w.load(Acquire) & (1u64 << (page % WORD_BITS)) != 0)
    }

    /// Sets page `page`'s bit if tracking is armed, and wakes the pollers if it was clear.
    pub(crate) fn mark_page(&self, page: usize) {
        if page >= self.npages || !self.is_armed() {
            return;
        }
        if self.set_bits(page / WORD_BITS, 1u64 << (page % WORD_BITS)) != 0 {
            self.wake_pollers();
        }
    }

    /// Sets the bits of the pages that bytes `offset..offset + len` of the BAR touch, if tracking
    /// is armed; wakes the pollers if one was clear.
    pub(crate) fn mark_bytes(&self, offset: u64, len: u64) {
        if len == 0 || !self.is_armed() {
            return;
        }
        // CAST: `PAGE_SIZE` fits in 64 bits.
        let page_size = PAGE_SIZE as u64;
        let first = offset / page_size;
        let end = offset.saturating_add(len).div_ceil(page_size);
        // CAST: `npages` fits in 64 bits.
        let end = end.min(self.npages as u64);
        let mut woke = false;
        let mut page = first;
        while page < end {
            // CAST: `page < npages`, a `usize`.
            let p = page as usize;
            let (i, bit) = (p / WORD_BITS, p % WORD_BITS);
            // CAST: `end - page` is positive here.
            let n = ((end - page) as usize).min(WORD_BITS - bit);
            let mask = if n == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            if self.set_bits(i, mask) != 0 {
                woke = true;
            }
            // CAST: `n <= 64`.
            page += n as u64;
        }
        if woke {
            self.wake_pollers();
        }
    }

    /// Copies the bitmap into `out` (page 0 in bit 0 of `out[0]`); words of `out` past the
    /// bitmap are cleared.
    pub(crate) fn snapshot(&self, out: &mut [u64]) {
        out.fill(0);
        for (o, w) in out.iter_mut().zip(self.bits.iter()) {
            *o = w.load(Acquire);
        }
    }

    /// Clears the bits of the `pages` pages from `first` on and returns what they were, to give
    /// back with [`Self::untake`] if the pages cannot be read after all. The caller holds
    /// `memory_lock` for writing and zaps the pages' mappings ([`Self::zap`]) before it reads
    /// them. `EINVAL` for a range outside the BAR or over [`MAX_TAKE_PAGES`] pages.
    pub(crate) fn take(&self, first: usize, pages: usize) -> Result<Taken> {
        let end = first.checked_add(pages).ok_or(EINVAL)?;
        if end > self.npages || pages > MAX_TAKE_PAGES {
            return Err(EINVAL);
        }
        let mut taken = Taken { words: [(0, 0); 2] };
        let mut page = first;
        let mut slot = 0;
        while page < end {
            let (i, bit) = (page / WORD_BITS, page % WORD_BITS);
            let n = (end - page).min(WORD_BITS - bit);
            let mask = if n == WORD_BITS {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            let old = self.clear_bits(i, mask);
            // At most two words: `pages <= 64`.
            if let Some(s) = taken.words.get_mut(slot) {
                *s = (i, old);
            }
            slot += 1;
            page += n;
        }
        Ok(taken)
    }

    /// Sets again the bits a [`Self::take`] cleared.
    pub(crate) fn untake(&self, taken: Taken) {
        let mut woke = false;
        for (i, mask) in taken.words {
            if mask != 0 && self.set_bits(i, mask) != 0 {
                woke = true;
            }
        }
        if woke {
            self.wake_pollers();
        }
    }

    /// Records the address space of the device's files, from a mapping of the BAR.
    pub(crate) fn set_mapping(&self, mapping: *mut kernel::bindings::address_space) {
        self.mapping.store(mapping, Release);
    }

    /// Removes every user mapping of the `pages` pages from `first` on of the BAR, whose file
    /// offset is `bar_offset`, and flushes the TLBs, so that the next access to them faults.
    /// May sleep; the caller holds `memory_lock` for writing, as vfio-pci-core does when it zaps
    /// the BARs.
    pub(crate) fn zap(&self, bar_offset: u64, first: usize, pages: usize) -> Result {
        let mapping = self.mapping.load(Acquire);
        if mapping.is_null() {
            // Never mapped: there is nothing to zap.
            return Ok(());
        }
        // CAST: Page indices and counts of a BAR fit in 64 bits.
        let start = bar_offset
            .checked_add((first as u64) * (PAGE_SIZE as u64))
            .ok_or(EINVAL)?;
        let len = (pages as u64) * (PAGE_SIZE as u64);
        let (start, len) = (
            i64::try_from(start).map_err(|_| EINVAL)?,
            i64::try_from(len).map_err(|_| EINVAL)?,
        );
        // SAFETY: `mapping` is the address space of the vfio device's inode (`set_mapping`),
        // which lives until the vfio device is released, and the tracker lives inside the vfio
        // device. `unmap_mapping_range()` takes its own locks.
        unsafe { kernel::bindings::unmap_mapping_range(mapping, start, len, 1) };
        Ok(())
    }

    /// Adds a `poll()` caller to the pollers.
    pub(crate) fn poll_wait(&self, table: &PollTable<'_>) {
        self.pollers.register(table);
    }

    /// Wakes the pollers: a page became dirty, or a data file changed state.
    pub(crate) fn wake_pollers(&self) {
        self.pollers
            .wake(super::data_file::poll_mask::READABLE | kernel::bindings::POLLERR);
    }
}

/// The bits a [`DirtyTracker::take`] cleared: (word, mask) pairs.
pub(crate) struct Taken {
    words: [(usize, u64); 2],
}
