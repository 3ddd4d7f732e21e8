// SPDX-License-Identifier: GPL-2.0

//! The backend of QEMU's `bochs-display` (PCI 1234:1111, `hw/display/bochs-display.c`).
//!
//! # Device state
//!
//! - **Video memory**: all of BAR0 (prefetchable RAM, `vgamem`, a power of two from 4 to
//!   256 MiB). It is the device memory of the stream, read and written with
//!   [`DeviceIo::read_bar`] and [`DeviceIo::write_bar`].
//! - **Registers**: the DISPI registers 1 to 9 (XRES, YRES, BPP, ENABLE, BANK, VIRT_WIDTH,
//!   VIRT_HEIGHT, X_OFFSET, Y_OFFSET) and the QEXT byte-order register, all in BAR2 (see
//!   [`regs`]). They are the whole register state QEMU itself migrates
//!   (`vmstate_bochs_display`: `vbe_regs[]` and `big_endian_fb`).
//!
//! Not saved:
//!
//! - DISPI index 0 (ID) always reads `0xb0c5`. A write is stored in QEMU's `vbe_regs[0]`, but it
//!   can never be read back and nothing uses it: a write-only latch without function. Restoring
//!   it is neither possible to verify nor needed.
//! - DISPI index 0xa (`VIDEO_MEMORY_64K`) is read-only, `vgamem` / 64 KiB. [`Bochs::mem_size`]
//!   checks that it agrees with the length of BAR0.
//! - The QEXT size register is a read-only constant and the EDID blob at BAR2 offset 0 is
//!   read-only configuration (a property of the QEMU command line).
//!
//! The device has no DMA, no interrupt and no reset handler, so there is nothing else to save.
//!
//! # Register blob
//!
//! [`Bochs::REGS_LEN`] (24) bytes, all integers little-endian. DISPI index `i` sits at
//! offset `2 * i`, with the layout version in the slot of the (unsaved) ID register:
//!
//! ```text
//! offset  size  field
//!      0     2  version      le16: 1 (LAYOUT_VERSION)
//!      2     2  XRES         le16: DISPI index 1
//!      4     2  YRES         le16: DISPI index 2
//!      6     2  BPP          le16: DISPI index 3
//!      8     2  ENABLE       le16: DISPI index 4
//!     10     2  BANK         le16: DISPI index 5
//!     12     2  VIRT_WIDTH   le16: DISPI index 6
//!     14     2  VIRT_HEIGHT  le16: DISPI index 7
//!     16     2  X_OFFSET     le16: DISPI index 8
//!     18     2  Y_OFFSET     le16: DISPI index 9
//!     20     4  byte order   le32: 0x1e1e1e1e little-endian or 0xbebebebe big-endian
//! ```
//!
//! A new layout gets a new version (and may have another length).
//!
//! # Validation
//!
//! [`Bochs::check_regs`] rejects, with `EINVAL`, a blob whose length is not
//! [`Bochs::REGS_LEN`], whose version is not [`LAYOUT_VERSION`], or whose byte order is
//! neither of the two values the QEXT register accepts (the device ignores any other write, so
//! no source can produce one).
//!
//! It accepts every value of the DISPI registers: `bochs-display` stores any 16-bit value in them
//! without validation or side effect (`bochs_display_vbe_write()`), and a guest may have written
//! any, so rejecting a BPP outside 0/4/8/15/16/24/32 or an XRES or YRES above
//! `VBE_DISPI_MAX_XRES`/`VBE_DISPI_MAX_YRES` (16000/12000) would fail the migration of a state the
//! device really holds. Such a mode is simply not displayed (`bochs_display_get_mode()`), on the
//! destination exactly as on the source. The undefined bits of ENABLE are stored as well, and
//! restored as they were.
//!
//! # Restore order
//!
//! [`Bochs::restore_regs`] programs the device as the VGA dispi interface expects a mode
//! set:
//!
//! 1. ENABLE = 0, which disables the mode while it is being programmed;
//! 2. BPP, XRES, YRES, VIRT_WIDTH, VIRT_HEIGHT, BANK, X_OFFSET, Y_OFFSET;
//! 3. the byte order;
//! 4. if the saved ENABLE has ENABLED set, ENABLE = saved value | NOCLEARMEM: the dispi interface
//!    clears the video memory when a mode is enabled without NOCLEARMEM, which would wipe the
//!    restored (or still to be restored) video memory;
//! 5. ENABLE = the saved value, if it differs from what step 4 wrote, so that the register reads
//!    back exactly as on the source. The mode is already enabled then, so this write is no enable
//!    transition and clears nothing.
//!
//! `bochs-display` itself treats every one of these writes as plain storage, so the order only
//! matters for the dispi semantics it shares with the VGA device; it never hurts.

mod regs;

use kernel::{
    io::Io,
    prelude::*,
    sizes::SZ_64K, //
};

use crate::{
    backend::Backend,
    stream::{
        format::{
            get_array,
            put, //
        },
        DeviceKind,
    },
    vfio::device::DeviceIo,
};

use regs::{
    ByteOrder,
    BAR2_SIZE,
    DISPI_BANK,
    DISPI_BPP,
    DISPI_ENABLE,
    DISPI_VIDEO_MEMORY_64K,
    DISPI_VIRT_HEIGHT,
    DISPI_VIRT_WIDTH,
    DISPI_XRES,
    DISPI_X_OFFSET,
    DISPI_YRES,
    DISPI_Y_OFFSET,
    QEXT_BYTEORDER, //
};

/// The BAR that holds the video memory.
const VRAM_BAR: u32 = 0;

/// The BAR that holds the registers.
const MMIO_BAR: u32 = 2;

/// Version of the register blob layout this code writes and reads.
const LAYOUT_VERSION: u16 = 1;

/// Byte offsets of the fields of the register blob (see the module documentation).
mod blob {
    /// Layout version.
    pub(super) const VERSION: usize = 0;
    /// DISPI XRES.
    pub(super) const XRES: usize = 2;
    /// DISPI YRES.
    pub(super) const YRES: usize = 4;
    /// DISPI BPP.
    pub(super) const BPP: usize = 6;
    /// DISPI ENABLE.
    pub(super) const ENABLE: usize = 8;
    /// DISPI BANK.
    pub(super) const BANK: usize = 10;
    /// DISPI VIRT_WIDTH.
    pub(super) const VIRT_WIDTH: usize = 12;
    /// DISPI VIRT_HEIGHT.
    pub(super) const VIRT_HEIGHT: usize = 14;
    /// DISPI X_OFFSET.
    pub(super) const X_OFFSET: usize = 16;
    /// DISPI Y_OFFSET.
    pub(super) const Y_OFFSET: usize = 18;
    /// QEXT byte order.
    pub(super) const BYTEORDER: usize = 20;
    /// Length of the blob.
    pub(super) const LEN: usize = 24;
}

// The blob fits in a DEVICE_REGS record.
const _: () = assert!(blob::LEN <= crate::stream::MAX_REGS_LEN);

/// QEMU's `bochs-display`.
pub(crate) struct Bochs;

/// The register state of a `bochs-display`: the contents of the register blob.
#[derive(Clone, Copy)]
struct Regs {
    /// Horizontal resolution.
    xres: DISPI_XRES,
    /// Vertical resolution.
    yres: DISPI_YRES,
    /// Colour depth.
    bpp: DISPI_BPP,
    /// Enable and mode flags.
    enable: DISPI_ENABLE,
    /// Legacy window bank.
    bank: DISPI_BANK,
    /// Virtual width.
    virt_width: DISPI_VIRT_WIDTH,
    /// Virtual height.
    virt_height: DISPI_VIRT_HEIGHT,
    /// Horizontal panning offset.
    x_offset: DISPI_X_OFFSET,
    /// Vertical panning offset.
    y_offset: DISPI_Y_OFFSET,
    /// Framebuffer byte order.
    byte_order: ByteOrder,
}

impl Regs {
    /// Reads the register state from the device.
    fn read(io: &DeviceIo<'_>) -> Result<Self> {
        let bar = io.mmio::<BAR2_SIZE>(MMIO_BAR)?;
        Ok(Self {
            xres: bar.read(DISPI_XRES),
            yres: bar.read(DISPI_YRES),
            bpp: bar.read(DISPI_BPP),
            enable: bar.read(DISPI_ENABLE),
            bank: bar.read(DISPI_BANK),
            virt_width: bar.read(DISPI_VIRT_WIDTH),
            virt_height: bar.read(DISPI_VIRT_HEIGHT),
            x_offset: bar.read(DISPI_X_OFFSET),
            y_offset: bar.read(DISPI_Y_OFFSET),
            // The device always reads one of the two values; anything else means that the BAR
            // does not answer as a `bochs-display`.
            byte_order: bar.read(QEXT_BYTEORDER).order().map_err(|_| EIO)?,
        })
    }

    /// Programs the register state into the device, in the order described in the module
    /// documentation.
    fn write(&self, io: &DeviceIo<'_>) -> Result {
        let bar = io.mmio::<BAR2_SIZE>(MMIO_BAR)?;
        bar.write_reg(DISPI_ENABLE::zeroed());
        bar.write_reg(self.bpp);
        bar.write_reg(self.xres);
        bar.write_reg(self.yres);
        bar.write_reg(self.virt_width);
        bar.write_reg(self.virt_height);
        bar.write_reg(self.bank);
        bar.write_reg(self.x_offset);
        bar.write_reg(self.y_offset);
        bar.write_reg(QEXT_BYTEORDER::zeroed().with_order(self.byte_order));
        let mut last = DISPI_ENABLE::zeroed();
        if self.enable.enabled() {
            // Enable the mode without clearing the video memory.
            last = self.enable.with_noclearmem(true);
            bar.write_reg(last);
        }
        if last != self.enable {
            bar.write_reg(self.enable);
        }
        Ok(())
    }

    /// Encodes the register state into `out`, which must be [`blob::LEN`] bytes.
    fn encode(&self, out: &mut [u8]) -> Result {
        if out.len() != blob::LEN {
            return Err(EINVAL);
        }
        let fields = [
            (blob::VERSION, LAYOUT_VERSION),
            (blob::XRES, self.xres.into_raw()),
            (blob::YRES, self.yres.into_raw()),
            (blob::BPP, self.bpp.into_raw()),
            (blob::ENABLE, self.enable.into_raw()),
            (blob::BANK, self.bank.into_raw()),
            (blob::VIRT_WIDTH, self.virt_width.into_raw()),
            (blob::VIRT_HEIGHT, self.virt_height.into_raw()),
            (blob::X_OFFSET, self.x_offset.into_raw()),
            (blob::Y_OFFSET, self.y_offset.into_raw()),
        ];
        for (at, value) in fields {
            put(out, at, &value.to_le_bytes()).ok_or(EINVAL)?;
        }
        put(out, blob::BYTEORDER, &self.byte_order.raw().to_le_bytes()).ok_or(EINVAL)
    }

    /// Decodes and validates a register blob (see "Validation" in the module documentation).
    fn decode(regs: &[u8]) -> Result<Self> {
        if regs.len() != blob::LEN || le16(regs, blob::VERSION)? != LAYOUT_VERSION {
            return Err(EINVAL);
        }
        Ok(Self {
            xres: DISPI_XRES::from_raw(le16(regs, blob::XRES)?),
            yres: DISPI_YRES::from_raw(le16(regs, blob::YRES)?),
            bpp: DISPI_BPP::from_raw(le16(regs, blob::BPP)?),
            enable: DISPI_ENABLE::from_raw(le16(regs, blob::ENABLE)?),
            bank: DISPI_BANK::from_raw(le16(regs, blob::BANK)?),
            virt_width: DISPI_VIRT_WIDTH::from_raw(le16(regs, blob::VIRT_WIDTH)?),
            virt_height: DISPI_VIRT_HEIGHT::from_raw(le16(regs, blob::VIRT_HEIGHT)?),
            x_offset: DISPI_X_OFFSET::from_raw(le16(regs, blob::X_OFFSET)?),
            y_offset: DISPI_Y_OFFSET::from_raw(le16(regs, blob::Y_OFFSET)?),
            byte_order: ByteOrder::from_raw(le32(regs, blob::BYTEORDER)?)?,
        })
    }
}

/// Reads the `le16` at `at` in `blob`; `EINVAL` if `blob` is too short.
fn le16(blob: &[u8], at: usize) -> Result<u16> {
    get_array(blob, at).map(u16::from_le_bytes).ok_or(EINVAL)
}

/// Reads the `le32` at `at` in `blob`; `EINVAL` if `blob` is too short.
fn le32(blob: &[u8], at: usize) -> Result<u32> {
    get_array(blob, at).map(u32::from_le_bytes).ok_or(EINVAL)
}

/// Checks that the `len` bytes at `offset` lie within the video memory and returns `offset` as a
/// `usize`; `EINVAL` otherwise.
fn vram_offset(io: &DeviceIo<'_>, offset: u64, len: usize) -> Result<usize> {
    let offset = usize::try_from(offset).map_err(|_| EINVAL)?;
    let end = offset.checked_add(len).ok_or(EINVAL)?;
    if end > io.bar_len(VRAM_BAR)? {
        return Err(EINVAL);
    }
    Ok(offset)
}

impl Backend for Bochs {
    const KIND: DeviceKind = DeviceKind::BochsDisplay;

    /// VRAM is BAR0, byte for byte ([`Bochs::read_memory`]).
    const MEMORY_BAR: u32 = VRAM_BAR;

    /// No DMA: QEMU's `hw/display/bochs-display.c` (and the EDID region it maps,
    /// `hw/display/edid-region.c`) makes no `pci_dma_*()` or `address_space_*()` access and never
    /// uses the device's bus-master address space, so nothing the guest programs makes the device
    /// write memory, bus master enabled or not; its frame buffer is VRAM, which the guest (and
    /// the display) reach through BAR0.
    const CAN_DMA: bool = false;

    const REGS_LEN: usize = blob::LEN;

    /// Returns the length of BAR0, after checking that `VIDEO_MEMORY_64K` agrees with it
    /// (`ENODEV` otherwise: the device is not a `bochs-display` as this backend knows it).
    fn mem_size(io: &DeviceIo<'_>) -> Result<u64> {
        let len = io.bar_len(VRAM_BAR)?;
        let blocks = io
            .mmio::<BAR2_SIZE>(MMIO_BAR)?
            .read(DISPI_VIDEO_MEMORY_64K)
            .blocks()
            .get();
        if len % SZ_64K != 0 || len / SZ_64K != usize::from(blocks) {
            return Err(ENODEV);
        }
        u64::try_from(len).map_err(|_| EINVAL)
    }

    fn save_regs(io: &DeviceIo<'_>, out: &mut [u8]) -> Result {
        if out.len() != Self::REGS_LEN {
            return Err(EINVAL);
        }
        Regs::read(io)?.encode(out)
    }

    fn check_regs(regs: &[u8]) -> Result {
        Regs::decode(regs).map(|_| ())
    }

    fn restore_regs(io: &DeviceIo<'_>, regs: &[u8]) -> Result {
        // Decoding validates again, so a blob that skipped `check_regs` never reaches the device.
        Regs::decode(regs)?.write(io)
    }

    fn read_memory(io: &DeviceIo<'_>, offset: u64, out: &mut [u8]) -> Result {
        let offset = vram_offset(io, offset, out.len())?;
        io.read_bar(VRAM_BAR, offset, out)
    }

    fn write_memory(io: &DeviceIo<'_>, offset: u64, data: &[u8]) -> Result {
        let offset = vram_offset(io, offset, data.len())?;
        io.write_bar(VRAM_BAR, offset, data)
    }
}
