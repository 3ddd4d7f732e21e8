// SPDX-License-Identifier: GPL-2.0

//! CRC-32C: check values and the slicing-by-8 implementation against a bitwise one.

use super::util::XorShift;
use crate::stream::{
    crc::{
        checksum,
        SoftCrc32c, //
    },
    Crc32c, //
};

/// Bit-at-a-time CRC-32C update, the definition.
fn bitwise(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[test]
fn check_value() {
    assert_eq!(checksum(&SoftCrc32c, b"123456789"), 0xE306_9283);
    assert_eq!(!SoftCrc32c.update(!0, b"123456789"), 0xE306_9283);
    assert_eq!(checksum(&SoftCrc32c, b""), 0);
}

/// The test vectors of RFC 3720, B.4.
#[test]
fn rfc3720_vectors() {
    assert_eq!(checksum(&SoftCrc32c, &[0u8; 32]), 0x8A91_36AA);
    assert_eq!(checksum(&SoftCrc32c, &[0xFFu8; 32]), 0x62A8_AB43);
    let inc: [u8; 32] = core::array::from_fn(|i| i as u8);
    assert_eq!(checksum(&SoftCrc32c, &inc), 0x46DD_794E);
    let dec: [u8; 32] = core::array::from_fn(|i| 31 - i as u8);
    assert_eq!(checksum(&SoftCrc32c, &dec), 0x113F_DB5C);
}

/// Slicing-by-8 equals the definition for every length and alignment, raw (no inversion).
#[test]
fn matches_bitwise() {
    let mut rng = XorShift(7);
    let data = rng.bytes(300);
    for start in 0..9 {
        for end in start..data.len() {
            let seed = rng.next() as u32;
            let part = &data[start..end];
            assert_eq!(SoftCrc32c.update(seed, part), bitwise(seed, part));
        }
    }
}

/// Continuing a CRC over a split equals computing it in one go.
#[test]
fn incremental() {
    let data = XorShift(99).bytes(100);
    let whole = SoftCrc32c.update(!0, &data);
    for split in 0..=data.len() {
        let (a, b) = data.split_at(split);
        assert_eq!(SoftCrc32c.update(SoftCrc32c.update(!0, a), b), whole);
    }
}
