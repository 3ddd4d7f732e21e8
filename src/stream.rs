// SPDX-License-Identifier: GPL-2.0

//! The migration stream: the bytes a source device's migration file yields and a destination
//! device's migration file accepts.
//!
//! The stream is a sequence of self-describing, CRC-protected records (see [`format`] for the
//! layout, byte by byte, and `Documentation/stream-format.rst`):
//!
//! - [`encoder`] produces a stream one record at a time, pulling device state from a
//!   [`Source`].
//! - [`decoder`] consumes a stream in arbitrary pieces, validates each record completely (CRC,
//!   bounds, order, device identity) and only then hands it to a [`Sink`].
//! - [`crc`] defines the CRC-32C interface both use, and a portable implementation of it.
//! - [`coverage`] tracks which pages of the device memory a stream wrote, so that a destination
//!   accepts the end of a stream only once all of its memory came from the source.
//! - [`precopy`] plans a pre-copy stream over a dirty page bitmap: which record comes next, and
//!   exactly how many bytes are still to come.
//!
//! This module only uses `core`: it does not allocate, has no `unsafe` code and never panics on
//! any input. All buffers are provided by the caller. It is compiled both into the kernel module
//! and, unchanged, into the host crate in `tests/host` for unit tests and fuzzing.

pub(crate) mod coverage;
pub(crate) mod crc;
pub(crate) mod decoder;
pub(crate) mod encoder;
pub(crate) mod format;
pub(crate) mod precopy;

// The names the users of the stream need, so that they need not know the submodules. Not every
// user needs every name.
#[allow(unused_imports)]
pub(crate) use self::{
    coverage::Coverage,
    crc::Crc32c,
    decoder::{
        DecodeError,
        Decoder,
        Sink,
        SinkError,
        SCRATCH_LEN, //
    },
    encoder::{
        stream_len,
        EncodeError,
        Encoder,
        Source,
        SourceError, //
    },
    format::{
        DeviceIdentity,
        DeviceKind,
        Header,
        MAX_CHUNK,
        MAX_REGS_LEN, //
    },
    precopy::{
        PreCopyPlan,
        Step as PreCopyStep, //
    },
};
