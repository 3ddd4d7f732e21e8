// SPDX-License-Identifier: GPL-2.0

//! Device backends: what the migration code needs to know about each kind of device.
//!
//! A backend saves and restores the complete state of one kind of QEMU device through its BARs:
//! a small register blob (the `DEVICE_REGS` record of the stream) and the device memory (the
//! `MEMORY` records). It touches the device only through a [`DeviceIo`], so vfio-pci-core's
//! `memory_lock` is held and memory decode is on for every access.
//!
//! - [`bochs`]: QEMU's `bochs-display`.

use kernel::prelude::*;

use crate::{
    stream::DeviceKind,
    vfio::device::DeviceIo, //
};

pub(crate) mod bochs;

/// A device whose complete state can be saved and restored through its BARs.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The device kind recorded in the stream header.
    const KIND: DeviceKind;

    /// The BAR that holds the device memory, byte for byte: memory offset `o` is offset `o` of
    /// the BAR. Userspace writes it through a mapping or the device fd while the device runs, so
    /// PRE_COPY tracks its writes per page.
    const MEMORY_BAR: u32;

    /// Whether the device can write memory by itself (bus-master DMA).
    ///
    /// A device that cannot has an empty DMA-write log for every range, so the driver offers DMA
    /// logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) and truthfully reports no page dirty. A
    /// device that can must not get that empty report: the driver then offers no DMA logging (and
    /// QEMU blocks or warns about a migration without it) until real logging of its writes
    /// exists.
    const CAN_DMA: bool;

    /// Length of the register blob this backend saves (<= crate::stream::MAX_REGS_LEN, 256).
    const REGS_LEN: usize;

    /// Size in bytes of the device memory (bochs: VRAM = BAR0 length); must match on the
    /// destination.
    fn mem_size(io: &DeviceIo<'_>) -> Result<u64>;

    /// Reads the device's registers into `out` (exactly REGS_LEN bytes, little-endian, a
    /// documented layout).
    fn save_regs(io: &DeviceIo<'_>, out: &mut [u8]) -> Result;

    /// Validates a register blob from a stream without touching the device.
    ///
    /// It checks the length, reserved bits, values the device would reject and the layout
    /// version if the layout has one, and fails with `EINVAL`.
    fn check_regs(regs: &[u8]) -> Result;

    /// Programs the registers from a blob that passed check_regs, in the order the device needs.
    fn restore_regs(io: &DeviceIo<'_>, regs: &[u8]) -> Result;

    /// Reads device memory at `offset` into `out` (bounds-checked; EINVAL out of range).
    fn read_memory(io: &DeviceIo<'_>, offset: u64, out: &mut [u8]) -> Result;

    /// Writes `data` to device memory at `offset`.
    fn write_memory(io: &DeviceIo<'_>, offset: u64, data: &[u8]) -> Result;
}
