// SPDX-License-Identifier: GPL-2.0

//! qemu-vfio-pci: a vfio-pci variant driver that makes QEMU's emulated PCI devices
//! live-migratable through the VFIO v2 migration uAPI.
//!
//! Layers, from the bottom:
//!
//! - [`vfio`]: the only `unsafe` code, abstractions over the VFIO and vfio-pci-core C API;
//! - [`driver`]: the variant driver and the module, in safe Rust.
//!
//! See `Documentation/architecture.rst`.

mod driver;
mod vfio;

use kernel::prelude::*;

use driver::QemuVfioPciModule;

module! {
    type: QemuVfioPciModule,
    name: "qemu_vfio_pci",
    authors: ["qemu-vfio-pci developers"],
    description: "VFIO live-migration variant driver for QEMU's emulated PCI devices",
    license: "GPL",
}
