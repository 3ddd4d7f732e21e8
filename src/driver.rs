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

use kernel::{
    fs::File,
    prelude::*,
    sync::aref::ARef, //
};

use crate::{
    backend::{
        bochs::Bochs,
        Backend, //
    },
    migration::{
        live_objects,
        state::{
            MigState,
            FLAG_P2P,
            FLAG_PRE_COPY,
            FLAG_STOP_COPY, //
        },
        MigDevice,
        Migration, //
    },
    stream::{
        precopy::PAGE_SIZE,
        DeviceIdentity, //
    },
    vfio::{
        device::{
            migration_flags,
            Device,
            VariantDriver, //
        },
        dirty::{
            self,
            PollTable, //
        },
        pci_driver::{
            DeviceId,
            IdTable,
            Registration, //
        },
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

// The protocol code spells the uAPI's migration flags itself, without kernel types; the driver,
// which sits above both, checks that they agree with the abstraction layer's.
const _: () = {
    assert!(FLAG_STOP_COPY == migration_flags::STOP_COPY);
    assert!(FLAG_P2P == migration_flags::P2P);
    assert!(FLAG_PRE_COPY == migration_flags::PRE_COPY);
    // The stream's pages are the tracker's: a dirty bit stands for one stream page.
    assert!(PAGE_SIZE == dirty::PAGE_SIZE as u64);
};

/// The variant driver.
pub(crate) struct QemuVfioPci;

/// The backend of the device the driver binds.
type DeviceBackend = Bochs;

/// A device bound to the driver.
type QvpDevice = Device<QemuVfioPci>;

impl VariantDriver for QemuVfioPci {
    const NAME: &'static CStr = c"qemu-vfio-pci";

    type Data = Migration<QvpDevice>;

    fn init_data() -> impl PinInit<Self::Data, Error> {
        Migration::new()
    }

    fn open(dev: &QvpDevice) -> Result {
        Migration::open(dev)?;
        dev_dbg!(dev.as_dev(), "opened: migration state RUNNING\n");
        Ok(())
    }

    fn close(dev: &QvpDevice) {
        dev.data().close();
        dev_dbg!(dev.as_dev(), "closed: data files disabled\n");
    }

    // The device has no DMA, so peer-to-peer quiescence is trivially real. PRE_COPY tracks the
    // writes to the device memory's BAR per page (`crate::vfio::dirty`); the `pre_copy` module
    // parameter can leave it out, to compare a STOP_COPY-only migration with the same build.
    fn migration_flags() -> u32 {
        let flags = migration_flags::STOP_COPY | migration_flags::P2P;
        if crate::module_parameters::pre_copy.value() {
            flags | migration_flags::PRE_COPY
        } else {
            flags
        }
    }

    const TRACKED_BAR: Option<u32> = Some(DeviceBackend::MEMORY_BAR);

    fn set_state(dev: &QvpDevice, new: u32) -> Result<Option<ARef<File>>> {
        Migration::<QvpDevice>::set_state(&ARef::from(dev), new)
    }

    fn get_state(dev: &QvpDevice) -> Result<u32> {
        dev.data().get_state()
    }

    fn data_size(dev: &QvpDevice) -> Result<usize> {
        Migration::data_size(dev)
    }

    fn reset_done(dev: &QvpDevice) {
        dev.data().reset_done();
    }

    // DMA logging only for a device that cannot write memory: its log is empty, and the report
    // says so (`crate::migration::dma_log`). A backend that can DMA gets no log ops: the empty
    // report would be a lie, so it needs real logging first.
    const DMA_LOGGING: bool = !DeviceBackend::CAN_DMA;

    fn log_start(dev: &QvpDevice, nranges: u32, page_size: &mut u64) -> Result {
        let size = *page_size;
        dev.data().dma_log().start(size)?;
        dev_dbg!(
            dev.as_dev(),
            "DMA logging started: {nranges} ranges, page size {size}\n"
        );
        Ok(())
    }

    fn log_stop(dev: &QvpDevice) -> Result {
        dev.data().dma_log().stop();
        Ok(())
    }

    fn log_report(dev: &QvpDevice, _iova: u64, _length: u64) -> Result {
        dev.data().dma_log().report()
    }
}

impl MigDevice for QvpDevice {
    type Ref = ARef<Self>;

    fn migration(&self) -> &Migration<Self> {
        self.data().get_ref()
    }

    fn identity(&self) -> Result<DeviceIdentity> {
        Ok(DeviceIdentity {
            kind: DeviceBackend::KIND,
            mem_size: self.with_io(|| Ok(()), DeviceBackend::mem_size)?,
        })
    }

    fn regs_len(&self) -> usize {
        DeviceBackend::REGS_LEN
    }

    fn save_regs(&self, valid: impl FnOnce() -> Result, out: &mut [u8]) -> Result {
        self.with_io(valid, |io| DeviceBackend::save_regs(io, out))
    }

    fn check_regs(&self, regs: &[u8]) -> Result {
        DeviceBackend::check_regs(regs)
    }

    fn restore_regs(&self, valid: impl FnOnce() -> Result, regs: &[u8]) -> Result {
        self.with_io(valid, |io| DeviceBackend::restore_regs(io, regs))
    }

    fn read_memory(&self, valid: impl FnOnce() -> Result, offset: u64, out: &mut [u8]) -> Result {
        self.with_io(valid, |io| DeviceBackend::read_memory(io, offset, out))
    }

    fn write_memory(&self, valid: impl FnOnce() -> Result, offset: u64, data: &[u8]) -> Result {
        self.with_io(valid, |io| DeviceBackend::write_memory(io, offset, data))
    }

    fn next_step(&self, cur: MigState, new: u32) -> Result<MigState> {
        MigState::from_raw(self.next_state(cur.raw(), new)?).ok_or(EINVAL)
    }

    // PRE_COPY's dirty tracker: write faults on the mapped BAR and region writes mark its pages
    // (`crate::vfio::dirty`); device memory offsets are BAR offsets (`Backend::MEMORY_BAR`).

    fn arm_tracking(&self, valid: impl FnOnce() -> Result) -> Result {
        self.arm_write_tracking(valid)
    }

    fn disarm_tracking(&self) {
        self.disarm_write_tracking();
    }

    fn dirty_snapshot(&self, out: &mut [u64]) -> Result {
        self.copy_dirty_bits(out);
        Ok(())
    }

    fn take_and_read(
        &self,
        valid: impl FnOnce() -> Result,
        first_page: u64,
        pages: u64,
        rearm: bool,
        out: &mut [u8],
    ) -> Result {
        let offset = first_page.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        let first = usize::try_from(first_page).map_err(|_| EINVAL)?;
        let pages = usize::try_from(pages).map_err(|_| EINVAL)?;
        self.take_dirty(valid, first, pages, rearm, |io| {
            DeviceBackend::read_memory(io, offset, out)
        })
    }

    fn poll_wait(&self, table: &PollTable<'_>) {
        self.register_poller(table);
    }

    fn wake_pollers(&self) {
        self.wake_file_pollers();
    }

    fn precopy_info_v2(&self) -> bool {
        Device::precopy_info_v2(self)
    }
}

/// The module: it holds the PCI driver registration.
#[pin_data]
pub(crate) struct QemuVfioPciModule {
    // Fields are dropped in declaration order: the driver is unregistered (every device removed)
    // before the leak check runs.
    #[pin]
    driver: Registration<QemuVfioPci>,
    _leak_check: LeakCheck,
}

/// Reports, at module exit, migration states or data files that outlived their devices.
///
/// Nothing may remain then: every device was removed, and an open data file pins the module.
struct LeakCheck;

impl Drop for LeakCheck {
    fn drop(&mut self) {
        let (states, files) = live_objects();
        if states != 0 || files != 0 {
            pr_err!("BUG: {states} migration states and {files} data files leaked\n");
        }
    }
}

impl kernel::InPlaceModule for QemuVfioPciModule {
    fn init(module: &'static kernel::ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            driver <- Registration::new(QemuVfioPci::NAME, &QVP_PCI_IDS, module),
            _leak_check: LeakCheck,
        })
    }
}
