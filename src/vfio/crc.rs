// SPDX-License-Identifier: GPL-2.0

//! The kernel's CRC-32C for the migration stream.
//!
//! C header: [`include/linux/crc32.h`](srctree/include/linux/crc32.h)

use crate::stream::Crc32c;

use super::bindings;

/// [`Crc32c`] backed by the kernel's `crc32c()`, which uses the CPU's CRC32 instruction where it
/// has one.
pub(crate) struct KernelCrc32c;

impl Crc32c for KernelCrc32c {
    fn update(&self, crc: u32, data: &[u8]) -> u32 {
        // SAFETY: `data` is valid for reads of `data.len()` bytes.
        unsafe { bindings::crc32c(crc, data.as_ptr().cast(), data.len()) }
    }
}
