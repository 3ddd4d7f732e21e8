// SPDX-License-Identifier: GPL-2.0

//! CRC-32C (Castagnoli) for the migration stream.
//!
//! # Convention
//!
//! [`Crc32c::update`] has exactly the semantics of the Linux kernel's
//! `u32 crc32c(u32 crc, const void *p, size_t len)`: reflected CRC with the Castagnoli polynomial
//! (`0x1EDC6F41`, `0x82F63B78` reflected), continuing from `crc`, with no inversion of its own on
//! either side. The stream's checksum of some bytes `data` is therefore
//!
//! ```text
//! !crc.update(!0, data)      /* C: ~crc32c(~0, data, len) */
//! ```
//!
//! which is the standard CRC-32C (iSCSI, ext4, btrfs): for the nine ASCII bytes `"123456789"` it
//! is `0xE3069283`. [`checksum`] computes it.
//!
//! The kernel module implements [`Crc32c`] with the kernel's `crc32c()` (which uses the CPU's
//! CRC instructions where there are any). [`SoftCrc32c`] is a portable table-driven
//! implementation for the host crate and as a fallback.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// An implementation of the CRC-32C update function.
pub(crate) trait Crc32c {
    /// Continues the CRC `crc` over `data`, like the kernel's `crc32c(crc, data, data.len())`.
    ///
    /// It neither inverts `crc` on entry nor the result on exit; see the [module
    /// documentation](self) for the convention the stream uses on top of it.
    fn update(&self, crc: u32, data: &[u8]) -> u32;
}

/// Returns the stream's CRC-32C of `data`: `!crc.update(!0, data)`.
pub(crate) fn checksum<C: Crc32c>(crc: &C, data: &[u8]) -> u32 {
    !crc.update(!0, data)
}

/// Portable CRC-32C, slicing-by-8 with tables computed at compile time.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SoftCrc32c;

/// The slicing-by-8 tables.
///
/// `TABLES[0][b]` is the CRC of the byte `b`; `TABLES[k][b]` is the CRC of `b` followed by `k`
/// zero bytes.
static TABLES: [[u32; 256]; 8] = make_tables();

/// Builds [`TABLES`].
///
/// It only runs at compile time, where an index out of bounds or an overflow would fail the
/// build; it cannot panic at run time.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const fn make_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut b = 0usize;
    while b < 256 {
        // `b < 256`, so the cast is lossless.
        let mut crc = b as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][b] = crc;
        b += 1;
    }
    let mut k = 1usize;
    while k < 8 {
        let mut b = 0usize;
        while b < 256 {
            let prev = tables[k - 1][b];
            tables[k][b] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            b += 1;
        }
        k += 1;
    }
    tables
}

/// Looks up `TABLES[k][index]`.
///
/// `index` is a byte and every table has 256 entries, so the lookup always succeeds (and the
/// compiler removes the check); the fallback only exists to keep this code free of panics.
#[inline(always)]
fn lookup(k: usize, index: u8) -> u32 {
    TABLES
        .get(k)
        .and_then(|table| table.get(usize::from(index)))
        .copied()
        .unwrap_or(0)
}

/// Returns the low byte of `v`.
#[inline(always)]
fn low_byte(v: u32) -> u8 {
    v.to_le_bytes()[0]
}

impl Crc32c for SoftCrc32c {
    fn update(&self, mut crc: u32, data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(8);
        for chunk in chunks.by_ref() {
            if let &[b0, b1, b2, b3, b4, b5, b6, b7] = chunk {
                let lo = crc ^ u32::from_le_bytes([b0, b1, b2, b3]);
                let [l0, l1, l2, l3] = lo.to_le_bytes();
                crc = lookup(7, l0)
                    ^ lookup(6, l1)
                    ^ lookup(5, l2)
                    ^ lookup(4, l3)
                    ^ lookup(3, b4)
                    ^ lookup(2, b5)
                    ^ lookup(1, b6)
                    ^ lookup(0, b7);
            }
        }
        for &byte in chunks.remainder() {
            crc = (crc >> 8) ^ lookup(0, low_byte(crc) ^ byte);
        }
        crc
    }
}
