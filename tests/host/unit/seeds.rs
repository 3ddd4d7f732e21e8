// SPDX-License-Identifier: GPL-2.0

//! The fuzzers' seed inputs are what their names say: the valid streams decode, and each
//! malformed one stops the decoder at the check it was made for.

use std::{
    string::String,
    vec,
    vec::Vec, //
};

use crate::{
    harness::{
        self,
        DecodeParams,
        MAX_REGS_LEN,
        SCRATCH_LEN, //
    },
    seeds,
};

/// The error each `bad-` seed must end with ("" for none).
const EXPECTED: &[(&str, &str)] = &[
    ("truncated-0", "Truncated"),
    ("truncated-1", "Truncated"),
    ("truncated-23", "Truncated"),
    ("truncated-24", "Truncated"),
    ("truncated-59", "Truncated"),
    ("truncated-60", "Truncated"),
    ("truncated-100", "Truncated"),
    ("truncated-4227", "Truncated"),
    ("truncated-4271", "Truncated"),
    ("trailing-byte", "TrailingData"),
    ("stream-twice", "TrailingData"),
    ("crc-payload", "BadChecksum"),
    ("crc-field", "BadChecksum"),
    ("tag", "BadMagic"),
    ("no-end", "Truncated"),
    ("no-regs", "UnexpectedRecord"),
    // The decoder takes it; the resuming file refuses it at END (stream/coverage.rs).
    ("no-memory", ""),
    ("second-header", "Duplicate"),
    ("second-regs", "Duplicate"),
    ("memory-first", "UnexpectedRecord"),
    ("regs-first", "UnexpectedRecord"),
    ("end-before-regs", "UnexpectedRecord"),
    ("wrong-kind", "WrongDeviceKind"),
    ("unknown-kind", "WrongDeviceKind"),
    ("wrong-mem-size", "MemSizeMismatch"),
    ("version-2", "UnsupportedVersion"),
    ("version-0", "UnsupportedVersion"),
    ("regs-len-257", "Oversized"),
    ("magic", "BadMagic"),
    ("header-reserved", "Malformed"),
    ("header-40", "Malformed"),
    ("header-12", "Malformed"),
    ("header-11", "Malformed"),
    ("regs-len-mismatch", "RegsLenMismatch"),
    ("memory-out-of-range", "OutOfRange"),
    ("memory-offset-overflow", "OutOfRange"),
    ("memory-no-offset", "Malformed"),
    ("unknown-mandatory", "UnknownMandatoryRecord"),
    ("unknown-optional", ""),
    ("optional-known-type", "BadFlags"),
    ("unknown-flag", "BadFlags"),
    ("record-reserved", "BadFlags"),
    ("end-records-high", "CountMismatch"),
    ("end-bytes-low", "CountMismatch"),
    ("end-17", "Oversized"),
    ("memory-oversized", "Oversized"),
    ("optional-oversized", "Oversized"),
    ("regs-oversized", "Oversized"),
    ("payload-2-63", "Oversized"),
];

/// Decodes a mode 0 or 1 input of the decode target as the target does and returns the error
/// name, or "" for success.
fn run(input: &[u8]) -> &'static str {
    let [ctl, _, n, rest @ ..] = input else {
        panic!("input too short");
    };
    assert!(ctl & 3 < 2 && ctl & 0x08 == 0, "not a plain decode input");
    let (pieces, body) = rest.split_at(usize::from(*n));
    let mut body = body.to_vec();
    if ctl & 3 == 1 {
        harness::fix_crcs(&mut body);
    }
    let mem_size = if ctl & 0x40 != 0 {
        u64::from_le_bytes(body[40..48].try_into().unwrap()) as usize
    } else {
        4096
    };
    let params = DecodeParams {
        kind: if ctl & 0x10 != 0 { 2 } else { 1 },
        pieces,
        in_place: ctl & 0x04 != 0,
        fail_at: None,
    };
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut mem = vec![0u8; mem_size];
    let mut regs = [0u8; MAX_REGS_LEN];
    let outcome = harness::decode(&body, params, &mut scratch, &mut mem, &mut regs);
    outcome.error.unwrap_or("")
}

#[test]
fn decode_seeds() {
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    seeds::decode(|name, bytes| all.push((name.into(), bytes.to_vec())));
    let mut checked = 0;
    for (name, input) in &all {
        if input[0] & 3 == 2 {
            continue;
        }
        let got = run(input);
        let want = match name.strip_prefix("bad-") {
            Some(bad) => {
                EXPECTED
                    .iter()
                    .find(|(n, _)| *n == bad)
                    .unwrap_or_else(|| panic!("no expected error for seed {name}"))
                    .1
            }
            None => "",
        };
        assert_eq!(got, want, "seed {name}");
        checked += 1;
    }
    assert_eq!(
        all.iter().filter(|(n, _)| n.starts_with("bad-")).count(),
        EXPECTED.len(),
        "every malformed seed is checked"
    );
    assert!(checked > EXPECTED.len() + 10, "{checked} seeds checked");
}

#[test]
fn roundtrip_seeds() {
    let mut n = 0;
    seeds::roundtrip(|_, bytes| {
        assert!(bytes.len() >= 8);
        n += 1;
    });
    assert!(n >= 6);
}
