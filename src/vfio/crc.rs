// SPDX-License-Identifier: GPL-2.0

//! The kernel's CRC-32C.
//!
//! C header: [`include/linux/crc32.h`](srctree/include/linux/crc32.h)

use super::bindings;

/// The kernel's `crc32c()`, which uses the CPU's CRC32 instruction where it has one. (The
/// migration layer makes it the stream's CRC; this layer knows nothing of the stream.)
pub(crate) struct KernelCrc32c;

impl KernelCrc32c {
    /// Continues the CRC-32C `crc` over `data`, as `crc32c(crc, data, data.len())` does: neither
    /// `crc` on entry nor the result is inverted.
    pub(crate) fn extend(&self, crc: u32, data: &[u8]) -> u32 {
        // SAFETY: `data` is valid for reads of `data.len()` bytes.
        unsafe { bindings::crc32c(crc, data.as_ptr().cast(), data.len()) }
    }
}
