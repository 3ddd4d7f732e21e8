// SPDX-License-Identifier: GPL-2.0

//! The registers of QEMU's `bochs-display` in its MMIO BAR (BAR2).
//!
//! QEMU header: `include/hw/display/bochs-vbe.h`; device model: `hw/display/bochs-display.c`.
//!
//! BAR2 is [`BAR2_SIZE`] bytes:
//!
//! ```text
//! offset        size   contents
//! 0x000-0x0ff   256    EDID blob, read-only (configuration, not state; not declared here)
//! 0x500-0x515   11x2   DISPI registers, 16-bit, index i at 0x500 + 2 * i, little-endian
//! 0x600-0x607   2x4    QEMU extension (QEXT) registers, 32-bit, little-endian
//! ```
//!
//! In `bochs-display` the DISPI registers 1 to 9 are plain storage: a write stores the value
//! as is, with no side effect and no validation (`bochs_display_vbe_write()`), and a read returns
//! it. The display only interprets them when it draws a frame. Index 0 (ID) and index 0xa
//! (`VIDEO_MEMORY_64K`) read constants.

// Not every register and field is used, but it is useful to have the whole register file
// defined, as the C headers do.
#![expect(dead_code)]

use kernel::{
    io::register,
    num::Bounded,
    prelude::*, //
};

/// Size of BAR2, the MMIO BAR (`PCI_VGA_MMIO_SIZE`).
pub(crate) const BAR2_SIZE: usize = 0x1000;

// DISPI registers (`PCI_VGA_BOCHS_OFFSET` + 2 * `VBE_DISPI_INDEX_*`).

register! {
    /// Interface ID (index 0): reads the constant [`DISPI_ID::ID5`].
    ///
    /// A write is stored in the device's `vbe_regs[0]`, but no read can return it and nothing
    /// uses it: it is a write-only latch with no function, so it is not part of the saved state.
    pub(crate) DISPI_ID(u16) @ 0x500 {
        /// Interface version, `0xb0c0` + version.
        15:0    id;
    }

    /// Horizontal resolution in pixels (index 1).
    pub(crate) DISPI_XRES(u16) @ 0x502 {
        /// Width of the visible screen in pixels.
        15:0    xres;
    }

    /// Vertical resolution in pixels (index 2).
    pub(crate) DISPI_YRES(u16) @ 0x504 {
        /// Height of the visible screen in pixels.
        15:0    yres;
    }

    /// Colour depth (index 3).
    pub(crate) DISPI_BPP(u16) @ 0x506 {
        /// Bits per pixel; the display draws 16 and 32, guests use 0, 4, 8, 15, 16, 24 or 32.
        15:0    bpp;
    }

    /// Display enable and mode flags (index 4).
    ///
    /// The undefined bits are stored too.
    pub(crate) DISPI_ENABLE(u16) @ 0x508 {
        /// The mode is enabled (`VBE_DISPI_ENABLED`).
        0:0     enabled => bool;
        /// Reads of XRES, YRES and BPP return the maximum values (`VBE_DISPI_GETCAPS`); not
        /// implemented by `bochs-display`.
        1:1     getcaps => bool;
        /// The DAC is 8 bits wide (`VBE_DISPI_8BIT_DAC`).
        5:5     dac_8bit => bool;
        /// The linear framebuffer is enabled (`VBE_DISPI_LFB_ENABLED`).
        6:6     lfb_enabled => bool;
        /// Enabling the mode keeps the video memory (`VBE_DISPI_NOCLEARMEM`); without it, the
        /// VGA dispi interface clears the video memory when the mode is enabled.
        7:7     noclearmem => bool;
    }

    /// Bank of the 64 KiB legacy window (index 5).
    pub(crate) DISPI_BANK(u16) @ 0x50a {
        /// Bank number.
        15:0    bank;
    }

    /// Virtual width in pixels (index 6).
    pub(crate) DISPI_VIRT_WIDTH(u16) @ 0x50c {
        /// Width of the virtual screen (the line pitch) in pixels.
        15:0    virt_width;
    }

    /// Virtual height in pixels (index 7).
    pub(crate) DISPI_VIRT_HEIGHT(u16) @ 0x50e {
        /// Height of the virtual screen in pixels.
        15:0    virt_height;
    }

    /// Horizontal panning offset in pixels (index 8).
    pub(crate) DISPI_X_OFFSET(u16) @ 0x510 {
        /// First visible column of the virtual screen.
        15:0    x_offset;
    }

    /// Vertical panning offset in pixels (index 9).
    pub(crate) DISPI_Y_OFFSET(u16) @ 0x512 {
        /// First visible line of the virtual screen.
        15:0    y_offset;
    }

    /// Size of the video memory in 64 KiB units (index 0xa), read-only.
    pub(crate) DISPI_VIDEO_MEMORY_64K(u16) @ 0x514 {
        /// Video memory size (`vgamem`, the length of BAR0) divided by 64 KiB.
        15:0    blocks;
    }
}

impl DISPI_ID {
    /// The ID `bochs-display` reports (`VBE_DISPI_ID5`).
    pub(crate) const ID5: u16 = 0xb0c5;
}

// QEXT registers (`PCI_VGA_QEXT_OFFSET` + `PCI_VGA_QEXT_REG_*`), 32-bit accesses only.

register! {
    /// Size of the QEXT register region in bytes, read-only (`PCI_VGA_QEXT_REG_SIZE`).
    pub(crate) QEXT_SIZE(u32) @ 0x600 {
        /// Region size, 8 (`PCI_VGA_QEXT_SIZE`).
        31:0    size;
    }

    /// Framebuffer byte order (`PCI_VGA_QEXT_REG_BYTEORDER`).
    ///
    /// It always reads one of the two [`ByteOrder`] values; a write of any other value is
    /// ignored.
    pub(crate) QEXT_BYTEORDER(u32) @ 0x604 {
        /// Byte order of 32-bit pixels in the framebuffer.
        31:0    order ?=> ByteOrder;
    }
}

/// The [`QEXT_BYTEORDER`] value for a little-endian framebuffer (`PCI_VGA_QEXT_LITTLE_ENDIAN`).
pub(crate) const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

/// The [`QEXT_BYTEORDER`] value for a big-endian framebuffer (`PCI_VGA_QEXT_BIG_ENDIAN`).
pub(crate) const QEXT_BIG_ENDIAN: u32 = 0xbebe_bebe;

/// Byte order of the framebuffer, as the [`QEXT_BYTEORDER`] register encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    /// Little-endian pixels ([`QEXT_LITTLE_ENDIAN`]), the default.
    Little,
    /// Big-endian pixels ([`QEXT_BIG_ENDIAN`]).
    Big,
}

impl ByteOrder {
    /// Returns the register encoding of the byte order.
    pub(crate) const fn raw(self) -> u32 {
        match self {
            Self::Little => QEXT_LITTLE_ENDIAN,
            Self::Big => QEXT_BIG_ENDIAN,
        }
    }

    /// Returns the byte order a register value encodes; `EINVAL` for any other value.
    pub(crate) const fn from_raw(raw: u32) -> Result<Self> {
        match raw {
            QEXT_LITTLE_ENDIAN => Ok(Self::Little),
            QEXT_BIG_ENDIAN => Ok(Self::Big),
            _ => Err(EINVAL),
        }
    }
}

impl TryFrom<Bounded<u32, 32>> for ByteOrder {
    type Error = Error;

    fn try_from(value: Bounded<u32, 32>) -> Result<Self> {
        Self::from_raw(value.get())
    }
}

impl From<ByteOrder> for Bounded<u32, 32> {
    fn from(order: ByteOrder) -> Self {
        Bounded::from(order.raw())
    }
}
