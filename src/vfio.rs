// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over the VFIO and vfio-pci-core C API.
//!
//! C headers: [`include/linux/vfio.h`](srctree/include/linux/vfio.h),
//! [`include/linux/vfio_pci_core.h`](srctree/include/linux/vfio_pci_core.h).
//!
//! The kernel crate does not wrap VFIO yet, so this module plays the role of the subsystem
//! abstraction: it is the only place in the driver that contains `unsafe` code or touches raw
//! bindings. It provides:
//!
//! - [`pci_driver`]: the registration of a raw `struct pci_driver` with the fields every vfio-pci
//!   variant driver needs (`driver_managed_dma`, the vfio-pci-core error handlers, an
//!   override-only ID table), which `kernel::pci::Driver` cannot express;
//! - [`device`]: a vfio-pci-core device that embeds driver data next to the C
//!   `struct vfio_pci_core_device`, and the `struct vfio_device_ops` table built on
//!   `vfio_pci_core_*`, so the device behaves exactly as under plain vfio-pci, with the
//!   migration and DMA logging ops;
//! - [`data_file`]: the anonymous-inode files of migration data;
//! - [`dirty`]: write tracking of a BAR's user mappings and region writes, per page (the dirty
//!   tracker of PRE_COPY), with the `vm_operations_struct` of a tracked BAR in [`device`];
//! - [`crc`]: the kernel's CRC-32C; [`task`]: fatal signals and rescheduling.
//!
//! This layer knows nothing of the layers above it (the protocol, the backends, the driver).
//!
//! The driver proper implements [`device::VariantDriver`] in safe Rust.

mod bindings;
pub(crate) mod crc;
pub(crate) mod data_file;
pub(crate) mod device;
pub(crate) mod dirty;
pub(crate) mod pci_driver;
pub(crate) mod task;
mod uapi;
