// SPDX-License-Identifier: GPL-2.0

//! Host build of the kernel module's pure-Rust logic: the migration stream (`src/stream.rs`,
//! `src/stream/*.rs`) and the migration state machine's arc planner (`src/migration/state.rs`).
//!
//! The files are the ones the kernel module compiles, included unchanged, with the same module
//! tree below the crate root (`crate::stream::...`). The kernel module only makes `pub(crate)`
//! items, so the crate's own unit tests (`unit/`) test them, and [`harness`] gives the fuzzer
//! in `fuzz/` a small `pub` interface, and [`seeds`] its seed inputs.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

/// The kernel module's source directory.
#[path = "../../src"]
mod src {
    // The migration stream, exactly as the kernel module compiles it. (No outer doc comment here:
    // rustdoc would resolve the links of the module's own documentation from this scope.)
    //
    // The kernel module uses all of it; outside tests, this crate only uses what the fuzzer
    // needs. The `clippy` lints check the promises of the code: no panics, no unchecked
    // arithmetic, everything documented.
    #[cfg_attr(not(test), allow(dead_code, unused_imports))]
    #[deny(
        clippy::arithmetic_side_effects,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::missing_docs_in_private_items,
        clippy::panic,
        clippy::todo,
        clippy::unimplemented,
        clippy::unreachable,
        clippy::unwrap_used
    )]
    pub(crate) mod stream;

    /// The migration state machine's pure part: states, single-step arcs and the arc planner.
    pub(crate) mod migration {
        #[cfg_attr(not(test), allow(dead_code))]
        #[path = "state.rs"]
        pub(crate) mod state;
    }
}

use src::stream;

pub mod harness;
pub mod seeds;

#[cfg(test)]
#[path = "unit/mod.rs"]
mod unit;
