// SPDX-License-Identifier: GPL-2.0

//! qemu-vfio-pci: a vfio-pci variant driver that makes QEMU's emulated PCI devices
//! live-migratable through the VFIO v2 migration uAPI.
//!
//! Layers, from the bottom:
//!
//! - [`vfio`]: the only `unsafe` code, abstractions over the VFIO and vfio-pci-core C API;
//! - [`backend`]: device backends, which reach a device's state through its BARs;
//! - [`stream`]: the migration stream format, pure Rust (also built for the host);
//! - [`migration`]: the VFIO v2 migration state machine and its data files;
//! - [`driver`]: the variant driver and the module.
//!
//! See `Documentation/architecture.rst`.

mod backend;
mod driver;
mod migration;
// The stream module is shared with the host crate (tests/host): parts of it serve only the host
// tests, the fuzzer and PRE_COPY, which comes next.
#[allow(dead_code)]
mod stream;
mod vfio;

#[path = "../tests/kunit/migration.rs"]
mod kunit_migration;
#[path = "../tests/kunit/stream.rs"]
mod kunit_stream;

use kernel::prelude::*;

use driver::QemuVfioPciModule;

module! {
    type: QemuVfioPciModule,
    name: "qemu_vfio_pci",
    authors: ["qemu-vfio-pci developers"],
    description: "VFIO live-migration variant driver for QEMU's emulated PCI devices",
    license: "GPL",
    params: {
        pre_copy: bool {
            default: true,
            description: "Offer PRE_COPY (default 1); 0: a STOP_COPY-only driver, for comparisons",
        },
    },
}
