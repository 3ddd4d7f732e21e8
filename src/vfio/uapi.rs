// SPDX-License-Identifier: GPL-2.0

//! Numbers of the VFIO uAPI that bindgen cannot give: function-like macros of
//! [`include/uapi/linux/vfio.h`](srctree/include/uapi/linux/vfio.h) and
//! [`include/linux/vfio_pci_core.h`](srctree/include/linux/vfio_pci_core.h).

use kernel::ioctl::_IO;

/// `VFIO_TYPE`: the ioctl type of VFIO, `';'`.
const VFIO_TYPE: u32 = b';' as u32;
/// `VFIO_BASE`: the first ioctl number of VFIO.
const VFIO_BASE: u32 = 100;

/// `VFIO_DEVICE_IOEVENTFD`: `_IO(VFIO_TYPE, VFIO_BASE + 16)`.
pub(crate) const DEVICE_IOEVENTFD: u32 = _IO(VFIO_TYPE, VFIO_BASE + 16);

/// `VFIO_MIG_GET_PRECOPY_INFO`: `_IO(VFIO_TYPE, VFIO_BASE + 21)`, on a saving data file.
pub(crate) const MIG_GET_PRECOPY_INFO: u32 = _IO(VFIO_TYPE, VFIO_BASE + 21);

/// `VFIO_PCI_OFFSET_SHIFT`: a region's index sits above this bit of a device fd offset.
pub(crate) const OFFSET_SHIFT: u32 = 40;

/// `VFIO_PCI_OFFSET_MASK`: the offset inside a region.
pub(crate) const OFFSET_MASK: u64 = (1u64 << OFFSET_SHIFT) - 1;

/// `VFIO_PCI_INDEX_TO_OFFSET(index)`: the device fd offset of region `index`.
pub(crate) const fn index_to_offset(index: u32) -> u64 {
    (index as u64) << OFFSET_SHIFT
}
