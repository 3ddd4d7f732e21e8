// SPDX-License-Identifier: GPL-2.0

//! The qemu-vfio-pci driver: the devices it binds and the module that registers it.
//!
//! The driver binds only through `driver_override`:
//!
//! ```text
//! echo qemu-vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override
//! echo 0000:01:00.0 > /sys/bus/pci/drivers_probe
//! ```
//!
//! QEMU's std VGA shares the bochs-display's ID 1234:1111, so a normal ID match would grab the
//! host's display; the override-only entry makes that impossible.

use kernel::prelude::*;

use crate::vfio::{
    device::{
        Device,
        VariantDriver, //
    },
    pci_driver::{
        DeviceId,
        IdTable,
        Registration, //
    },
};

/// PCI vendor and device ID of QEMU's `bochs-display`.
const BOCHS_DISPLAY: (u16, u16) = (0x1234, 0x1111);

/// The driver's PCI ID table, exported under the name modpost expects for the module's aliases.
#[used]
#[export_name = "__mod_device_table__kmod_qemu_vfio_pci__pci__qvp_pci_ids"]
static QVP_PCI_IDS: IdTable<2> = IdTable::new([
    DeviceId::vfio_override(BOCHS_DISPLAY.0, BOCHS_DISPLAY.1),
    DeviceId::terminator(),
]);

/// The variant driver.
pub(crate) struct QemuVfioPci;

impl VariantDriver for QemuVfioPci {
    const NAME: &'static CStr = c"qemu-vfio-pci";

    type Data = ();

    fn init_data() -> impl PinInit<Self::Data, Error> {
        Ok(())
    }

    fn open(dev: &Device<Self>) -> Result {
        dev_dbg!(dev.as_dev(), "opened\n");
        Ok(())
    }

    fn close(dev: &Device<Self>) {
        dev_dbg!(dev.as_dev(), "closed\n");
    }
}

/// The module: it holds the PCI driver registration.
#[pin_data]
pub(crate) struct QemuVfioPciModule {
    #[pin]
    driver: Registration<QemuVfioPci>,
}

impl kernel::InPlaceModule for QemuVfioPciModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            driver <- Registration::new(QemuVfioPci::NAME, &QVP_PCI_IDS, module),
        })
    }
}
