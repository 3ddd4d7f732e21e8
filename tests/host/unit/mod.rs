// SPDX-License-Identifier: GPL-2.0

//! Unit tests of the migration stream code.

mod corruption;
mod coverage;
mod crc;
mod encoder;
mod malformed;
mod planner;
mod precopy;
mod roundtrip;
mod seeds;
mod segmentation;
mod util;
