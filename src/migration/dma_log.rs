// SPDX-License-Identifier: GPL-2.0

//! DMA logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) of a device that cannot write memory.
//!
//! uAPI: [`include/uapi/linux/vfio.h`](srctree/include/uapi/linux/vfio.h)
//! (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`, `_STOP`, `_REPORT`), and the kernel-doc of
//! `struct vfio_log_ops` in [`include/linux/vfio.h`](srctree/include/linux/vfio.h).
//!
//! The log records the pages of guest memory the device wrote by DMA. A device without a DMA
//! engine (no bus mastering, no DMA in its QEMU model) writes none, so its log is empty for every
//! range and page size: a report sets no bit of the user's bitmap, and that is the whole truth. The
//! protocol around it remains, as the uAPI and the core's kernel-doc require it of the driver (the
//! core keeps no logging state):
//!
//! - START while logging is active fails with `EINVAL` ("another start is not allowed in the
//!   meantime"); so does a page size that is not a power of two or below 4096 (the core only
//!   checks the ranges' alignment against it). The page size is kept as given: any granule is
//!   exact when nothing is ever dirty.
//! - STOP makes logging idle, from any state.
//! - REPORT while idle fails with `EINVAL` ("if DMA logging is not enabled, an error will be
//!   returned"); while active it succeeds without touching the bitmap (a report "will never clear
//!   or perform any initialization of the user provided bitmap"), for any range: QEMU asks per
//!   memory section, not per START range.
//!
//! The driver ends logging when the device is closed; a reset keeps it (QEMU never starts logging
//! again after a reset, so a reset during a migration must not turn its next REPORT into an
//! error).
//!
//! The state is one atomic word, so it takes no lock: the callbacks come from ioctls of the
//! device fd, a close only after its last fd is gone, and nothing here waits for anything.

use kernel::{
    prelude::*,
    sync::atomic::{
        Acquire,
        Atomic,
        Full,
        Release, //
    }, //
};

/// The smallest page size of a DMA log (the uAPI's, and the core's check of REPORT).
pub(crate) const MIN_PAGE_SIZE: u64 = 4096;

/// What the page size word holds while logging is idle.
const IDLE: u64 = 0;

/// The DMA logging state of a device that cannot write memory: idle, or active with the page
/// size of the START that began it.
///
/// # Invariants
///
/// `page_size` is [`IDLE`] or a power of two of at least [`MIN_PAGE_SIZE`] (so never [`IDLE`]).
pub(crate) struct DmaLog {
    page_size: Atomic<u64>,
}

impl DmaLog {
    /// Idle logging.
    pub(crate) fn new() -> Self {
        // INVARIANT: Idle.
        Self {
            page_size: Atomic::new(IDLE),
        }
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_START` with a granule of `page_size` bytes.
    ///
    /// Fails with `EINVAL` if logging is already active or `page_size` is not a power of two of
    /// at least [`MIN_PAGE_SIZE`]; the state is then unchanged.
    pub(crate) fn start(&self, page_size: u64) -> Result {
        if page_size < MIN_PAGE_SIZE || !page_size.is_power_of_two() {
            return Err(EINVAL);
        }
        // INVARIANT: `page_size` was checked above; only an idle log becomes active.
        self.page_size
            .cmpxchg(IDLE, page_size, Full)
            .map(|_| ())
            .map_err(|_| EINVAL)
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`, and the end of logging at close: idle, from any
    /// state.
    pub(crate) fn stop(&self) {
        // INVARIANT: Idle.
        self.page_size.store(IDLE, Release);
    }

    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT` of any range: `Ok` means that the device wrote
    /// no page of it since logging started or since the previous report, which is always true of
    /// a device that cannot write memory; the user's bitmap is left as it is. Fails with `EINVAL`
    /// while logging is idle.
    pub(crate) fn report(&self) -> Result {
        match self.page_size() {
            Some(_) => Ok(()),
            None => Err(EINVAL),
        }
    }

    /// The page size of the active log, `None` while idle.
    pub(crate) fn page_size(&self) -> Option<u64> {
        match self.page_size.load(Acquire) {
            IDLE => None,
            size => Some(size),
        }
    }
}
