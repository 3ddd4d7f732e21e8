// SPDX-License-Identifier: GPL-2.0

//! A vfio-pci-core device with driver data, and its `struct vfio_device_ops`.
//!
//! C header: [`include/linux/vfio_pci_core.h`](srctree/include/linux/vfio_pci_core.h)
//!
//! vfio-pci-core allocates the device (`vfio_alloc_device()`), so the Rust driver data lives in the
//! same allocation, right after the C `struct vfio_pci_core_device`, which must sit at offset 0. The
//! data is initialised in place in the `init` callback and dropped in `release`, bracketed by
//! `vfio_pci_core_init_dev()` and `vfio_pci_core_release_dev()`. Every other callback goes
//! straight to vfio-pci-core, so the device behaves exactly as under plain vfio-pci.

use core::{
    marker::{
        PhantomData,
        PhantomPinned, //
    },
    ptr::NonNull,
};

use kernel::{
    device,
    ffi::{
        c_int,
        c_ulong,
        c_void, //
    },
    fs::File,
    new_mutex,
    prelude::*,
    str::as_char_ptr_in_const_context,
    sync::{
        aref::{
            ARef,
            AlwaysRefCounted, //
        },
        Mutex,
    },
    types::Opaque, //
};

use super::{
    bindings,
    dirty::{
        DirtyTracker,
        PollTable,
        Taken, //
    },
    uapi::{
        index_to_offset,
        DEVICE_IOEVENTFD,
        OFFSET_MASK,
        OFFSET_SHIFT, //
    },
};

/// The `VFIO_MIGRATION_*` flags of `struct vfio_device.migration_flags`.
pub(crate) mod migration_flags {
    use super::bindings;

    /// `VFIO_MIGRATION_STOP_COPY`.
    pub(crate) const STOP_COPY: u32 = bindings::VFIO_MIGRATION_STOP_COPY;
    /// `VFIO_MIGRATION_P2P`.
    pub(crate) const P2P: u32 = bindings::VFIO_MIGRATION_P2P;
    /// `VFIO_MIGRATION_PRE_COPY`.
    pub(crate) const PRE_COPY: u32 = bindings::VFIO_MIGRATION_PRE_COPY;
}

/// A vfio-pci variant driver: what a driver adds to plain vfio-pci.
pub(crate) trait VariantDriver: Sized + 'static {
    /// Name of the device ops (`struct vfio_device_ops.name`).
    const NAME: &'static CStr;

    /// Per-device driver data, pinned inside the vfio device.
    type Data: Send + Sync;

    /// Returns an initialiser for the driver data of a newly probed device.
    fn init_data() -> impl PinInit<Self::Data, Error>;

    /// Called when userspace opens the device, after vfio-pci-core enabled it (BARs mapped) and
    /// before it finishes enabling it. An error fails the open.
    fn open(_dev: &Device<Self>) -> Result {
        Ok(())
    }

    /// Called when userspace closes its last file of the device, before vfio-pci-core disables it.
    fn close(_dev: &Device<Self>) {}

    /// The `VFIO_MIGRATION_*` flags a newly probed device supports; 0 disables migration.
    ///
    /// Called once per device, before it is registered: the flags cannot change while userspace
    /// can see the device.
    fn migration_flags() -> u32 {
        0
    }

    /// The BAR whose writes are tracked per page ([`Device::arm_tracking`]), if any: user
    /// mappings of it get write-notify `vm_operations_struct`s, region writes to it mark their
    /// pages, and `VFIO_DEVICE_IOEVENTFD` (which would write it from the kernel, behind the
    /// tracker) is refused.
    const TRACKED_BAR: Option<u32> = None;

    /// `migration_set_state`: takes the device to the uAPI state `new`, returning the data file the
    /// transition opened, if any.
    fn set_state(_dev: &Device<Self>, _new: u32) -> Result<Option<ARef<File>>> {
        Err(ENOTTY)
    }

    /// `migration_get_state`: the current uAPI state.
    fn get_state(_dev: &Device<Self>) -> Result<u32> {
        Err(ENOTTY)
    }

    /// `migration_get_data_size`: the number of bytes a STOP_COPY would produce now.
    fn data_size(_dev: &Device<Self>) -> Result<usize> {
        Err(ENOTTY)
    }

    /// Called after a function or bus reset of the device (`pci_error_handlers.reset_done`).
    ///
    /// It runs with vfio-pci-core's `memory_lock` held for writing, so it must not wait for
    /// anything that may in turn wait for that lock.
    fn reset_done(_dev: &Device<Self>) {}

    /// Whether the device has DMA logging (`struct vfio_log_ops`, the
    /// `VFIO_DEVICE_FEATURE_DMA_LOGGING_*` features): if true, `vfio_device.log_ops` is set
    /// before registration and the vfio core calls [`Self::log_start`], [`Self::log_stop`] and
    /// [`Self::log_report`].
    ///
    /// This layer does not give the driver the user's bitmap (`iova_bitmap_set()`): a report can
    /// only say that the device wrote no page of the range. So only a device that cannot write
    /// memory (no DMA) may set it; a device that can needs real logging, and this layer a bitmap
    /// for it, first.
    const DMA_LOGGING: bool = false;

    /// `log_start`: starts DMA logging over `nranges` IOVA ranges (checked by the core: not
    /// empty, aligned to the page size, not overlapping; not passed on) with a granule of
    /// `*page_size` bytes, which the driver may change (the core returns it to userspace).
    ///
    /// The core keeps no logging state: a start while logging is active must fail.
    fn log_start(_dev: &Device<Self>, _nranges: u32, _page_size: &mut u64) -> Result {
        Err(ENOTTY)
    }

    /// `log_stop`: stops DMA logging, from any state.
    fn log_stop(_dev: &Device<Self>) -> Result {
        Err(ENOTTY)
    }

    /// `log_read_and_clear`: reports the DMA writes to `iova..iova + length` since logging
    /// started or since the previous report. `Ok` says the device wrote no page of the range (see
    /// [`Self::DMA_LOGGING`]); the user's bitmap is not touched. Must fail while logging is idle.
    fn log_report(_dev: &Device<Self>, _iova: u64, _length: u64) -> Result {
        Err(ENOTTY)
    }
}

/// Whether the driver may touch the device's BARs: between open and close.
struct IoState {
    open: bool,
}

/// Access to the BARs of an open device, with memory decode on and vfio-pci-core's
/// `memory_lock` held for writing.
///
/// # Invariants
///
/// `core` is an open device (its BARs are mapped) whose `memory_lock` is held for writing, with
/// `PCI_COMMAND_MEMORY` set, for the lifetime `'a`.
pub(crate) struct DeviceIo<'a> {
    core: *mut bindings::vfio_pci_core_device,
    _p: PhantomData<&'a ()>,
}

impl DeviceIo<'_> {
    /// The mapping of `bar` and its length.
    fn bar(&self, bar: u32) -> Result<(*mut c_void, usize)> {
        if bar >= kernel::bindings::PCI_STD_NUM_BARS {
            return Err(EINVAL);
        }
        // CAST: `bar` is below `PCI_STD_NUM_BARS` (6).
        let index = bar as usize;
        // SAFETY: By the type invariant the device is open; `barmap` is only written by
        // `vfio_pci_core_enable()`/`disable()`, which cannot run while the device is open.
        let map = unsafe { (*self.core).barmap[index] };
        // SAFETY: `IS_ERR` only looks at the pointer value.
        if map.is_null() || unsafe { kernel::bindings::IS_ERR(map.cast_const()) } {
            return Err(ENODEV);
        }
        // SAFETY: `pdev` is valid for the life of the vfio device (type invariant of `Device`,
        // which holds a reference on it); `bar` is in range.
        let len = unsafe { kernel::bindings::pci_resource_len((*self.core).pdev, bar as c_int) };
        Ok((map, usize::try_from(len).map_err(|_| EINVAL)?))
    }

    /// The length of `bar` in bytes.
    pub(crate) fn bar_len(&self, bar: u32) -> Result<usize> {
        Ok(self.bar(bar)?.1)
    }

    /// Checks that `offset..offset + len` lies within `bar` and returns its address.
    fn range(&self, bar: u32, offset: usize, len: usize) -> Result<*mut c_void> {
        let (map, bar_len) = self.bar(bar)?;
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > bar_len {
            return Err(EINVAL);
        }
        // `wrapping_byte_add`, not `byte_add`: the mapping is MMIO, not memory of a Rust
        // allocation, so only its address is computed here; `end <= bar_len` keeps it inside.
        Ok(map.wrapping_byte_add(offset))
    }

    /// Copies `out.len()` bytes at `offset` of `bar` into `out`.
    pub(crate) fn read_bar(&self, bar: u32, offset: usize, out: &mut [u8]) -> Result {
        let src = self.range(bar, offset, out.len())?;
        // SAFETY: `src` is mapped MMIO of at least `out.len()` bytes (checked by `range`), the
        // device decodes memory (type invariant), and `out` is valid for writes.
        unsafe { kernel::bindings::memcpy_fromio(out.as_mut_ptr().cast(), src, out.len()) };
        Ok(())
    }

    /// Copies `data` to `offset` of `bar`.
    pub(crate) fn write_bar(&self, bar: u32, offset: usize, data: &[u8]) -> Result {
        let dst = self.range(bar, offset, data.len())?;
        // SAFETY: As in `read_bar`; `data` is valid for reads.
        unsafe { kernel::bindings::memcpy_toio(dst, data.as_ptr().cast(), data.len()) };
        Ok(())
    }

    /// A typed MMIO view of `bar` for registers declared with `kernel::io::register!`.
    pub(crate) fn mmio<const SIZE: usize>(
        &self,
        bar: u32,
    ) -> Result<kernel::io::Mmio<'_, kernel::io::Region<SIZE>>> {
        let (map, len) = self.bar(bar)?;
        let raw = kernel::io::MmioRaw::<kernel::io::Region<SIZE>>::new_region(map.addr(), len)?;
        // SAFETY: `raw` is the whole, mapped, decoded BAR for as long as `self` lives (type
        // invariant), and `new_region` checked its size and alignment.
        Ok(unsafe { kernel::io::Mmio::from_raw(raw) })
    }
}

/// A vfio-pci-core device with the driver data of `T`.
///
/// # Invariants
///
/// - `core` is a `struct vfio_pci_core_device` initialised by `vfio_pci_core_init_dev()` and sits
///   at offset 0 (`#[repr(C)]`, first field), as `vfio_alloc_device()` requires.
/// - `io`, `tracker` and `data` are initialised from the end of `init` until the start of
///   `release`, which covers every moment a `&Device<T>` exists.
/// - `io.open` is true only between a successful `vfio_pci_core_enable()` and the matching
///   `vfio_pci_core_disable()`, so the BAR mappings exist whenever it is true.
/// - `core.pdev` holds a reference (`pci_dev_get()`) from the end of `init` to `release`, so the
///   PCI device outlives the vfio device even when a data file keeps the vfio device alive past
///   the removal of the PCI device.
#[repr(C)]
#[pin_data]
pub(crate) struct Device<T: VariantDriver> {
    core: Opaque<bindings::vfio_pci_core_device>,
    /// Gate for BAR access: taken before `memory_lock`, closed before vfio-pci-core disables
    /// the device.
    #[pin]
    io: Mutex<IoState>,
    /// The dirty bits of `T::TRACKED_BAR` (none if it has none).
    #[pin]
    tracker: DirtyTracker,
    #[pin]
    data: T::Data,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: The C part is protected by vfio-pci-core's own locking and may be used from any thread;
// `T::Data` is `Send + Sync`.
unsafe impl<T: VariantDriver> Sync for Device<T> {}

// SAFETY: See `Sync`.
unsafe impl<T: VariantDriver> Send for Device<T> {}

impl<T: VariantDriver> Device<T> {
    /// The driver data.
    pub(crate) fn data(&self) -> Pin<&T::Data> {
        // SAFETY: `data` is structurally pinned inside the pinned vfio device allocation.
        unsafe { Pin::new_unchecked(&self.data) }
    }

    /// Runs `f` with access to the device's BARs, if `valid` agrees; `ENODEV` if the device is
    /// not open.
    ///
    /// Takes vfio-pci-core's `memory_lock` for writing, so userspace cannot toggle memory decode or
    /// reset the device meanwhile, and turns memory decode on for the duration if userspace left
    /// it off (QEMU does so on a migration destination until it restores the config space).
    ///
    /// `valid` runs with the gate and `memory_lock` held, right before `f`: its error is returned
    /// without touching the device. A caller whose right to the device can end concurrently (a
    /// data file whose session a reset or a close ended) checks it there, under the locks that a
    /// reset (`memory_lock`) and a close (the gate) take, so that no access that passed the check
    /// can reach the device after the reset or after `close_device()` returned.
    ///
    /// Lock order: the driver's own locks, then this gate, then `memory_lock`; neither closure may
    /// copy from or to userspace.
    pub(crate) fn with_io<R>(
        &self,
        valid: impl FnOnce() -> Result,
        f: impl FnOnce(&DeviceIo<'_>) -> Result<R>,
    ) -> Result<R> {
        let gate = self.io.lock();
        if !gate.open {
            return Err(ENODEV);
        }
        let core = self.core.get();
        // SAFETY: `core` is initialised (type invariant).
        let (pdev, lock) = unsafe { ((*core).pdev, &raw mut (*core).memory_lock) };
        // SAFETY: `memory_lock` is an initialised rw_semaphore.
        unsafe { kernel::bindings::down_write(lock) };
        let result = match valid() {
            Ok(()) => Self::with_decode(core, pdev, f),
            Err(e) => Err(e),
        };
        // SAFETY: Taken above.
        unsafe { kernel::bindings::up_write(lock) };
        drop(gate);
        result
    }

    /// Runs `f` with memory decode on, with the gate open and `memory_lock` held for writing.
    fn with_decode<R>(
        core: *mut bindings::vfio_pci_core_device,
        pdev: *mut kernel::bindings::pci_dev,
        f: impl FnOnce(&DeviceIo<'_>) -> Result<R>,
    ) -> Result<R> {
        let mut cmd: u16 = 0;
        // CAST: `PCI_COMMAND` is a config space offset (4).
        let reg = kernel::bindings::PCI_COMMAND as c_int;
        // CAST: `PCI_COMMAND_MEMORY` is a 16-bit register bit.
        let memory = kernel::bindings::PCI_COMMAND_MEMORY as u16;
        // SAFETY: `pdev` is valid for the life of the vfio device (type invariant of `Device`).
        let ret = unsafe { kernel::bindings::pci_read_config_word(pdev, reg, &mut cmd) };
        if ret != 0 {
            return Err(EIO);
        }
        let enable = cmd & memory == 0;
        if enable {
            // SAFETY: As above; `memory_lock` is held, so vfio-pci-core does not race us.
            unsafe { kernel::bindings::pci_write_config_word(pdev, reg, cmd | memory) };
        }
        // INVARIANT: The caller holds the open gate and `memory_lock` for writing; memory decode
        // is on until the restore below.
        let result = f(&DeviceIo {
            core,
            _p: PhantomData,
        });
        if enable {
            // SAFETY: Restores the command register userspace had.
            unsafe { kernel::bindings::pci_write_config_word(pdev, reg, cmd) };
        }
        result
    }

    /// Arms the write tracking of `T::TRACKED_BAR` (see [`super::dirty`]): sets every page's bit,
    /// then starts marking the pages written: until a page is first taken ([`Self::take_dirty`]),
    /// it counts as dirty. `valid` is checked as by [`Self::with_io`], under
    /// the same locks: arming holds `memory_lock` for writing, which orders it before every later
    /// fault and region write. `EOPNOTSUPP` without a tracked BAR.
    pub(crate) fn arm_write_tracking(&self, valid: impl FnOnce() -> Result) -> Result {
        if T::TRACKED_BAR.is_none() {
            return Err(EOPNOTSUPP);
        }
        self.with_io(valid, |_| {
            self.tracker.arm();
            Ok(())
        })
    }

    /// Stops the write tracking. Atomics only: the reset path calls it under `memory_lock`.
    pub(crate) fn disarm_write_tracking(&self) {
        self.tracker.disarm();
    }

    /// Copies the dirty bitmap of the tracked BAR into `out` (page 0 in bit 0 of `out[0]`).
    /// Touches no device.
    pub(crate) fn copy_dirty_bits(&self, out: &mut [u64]) {
        self.tracker.snapshot(out);
    }

    /// Takes the `pages` pages from `first_page` on of the tracked BAR, then runs `f` on the
    /// device, all as one [`Self::with_io`] section (`valid` is checked first): their dirty bits
    /// are cleared, every user mapping of them is zapped, and only then does `f` read them (see
    /// the ordering in [`super::dirty`]). If `f` fails, the bits are set again. At most
    /// [`super::dirty::MAX_TAKE_PAGES`] pages; `EOPNOTSUPP` without a tracked BAR.
    ///
    /// Without `rearm` the mappings are not zapped: the caller does not need a later write to
    /// set the bits again (a stopped device whose stream sends no page twice any more), and a
    /// zap (TLB shootdown, mmu notifiers) is the dearest part of a small take.
    pub(crate) fn take_dirty<R>(
        &self,
        valid: impl FnOnce() -> Result,
        first_page: usize,
        pages: usize,
        rearm: bool,
        f: impl FnOnce(&DeviceIo<'_>) -> Result<R>,
    ) -> Result<R> {
        let bar = T::TRACKED_BAR.ok_or(EOPNOTSUPP)?;
        self.with_io(valid, |io| {
            let taken: Taken = self.tracker.take(first_page, pages)?;
            let zapped = if rearm {
                self.tracker.zap(index_to_offset(bar), first_page, pages)
            } else {
                Ok(())
            };
            let result = zapped.and_then(|()| f(io));
            if result.is_err() {
                self.tracker.untake(taken);
            }
            result
        })
    }

    /// Adds a `poll()` caller of a data file to the tracker's pollers, which are woken when a
    /// page becomes dirty and by [`Self::wake_file_pollers`].
    pub(crate) fn register_poller(&self, table: &PollTable<'_>) {
        self.tracker.poll_wait(table);
    }

    /// Wakes the pollers of the device's data files.
    pub(crate) fn wake_file_pollers(&self) {
        self.tracker.wake_pollers();
    }

    /// Whether userspace opted in to `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (the vfio core
    /// keeps the flag, until the device's last close).
    pub(crate) fn precopy_info_v2(&self) -> bool {
        // SAFETY: `core` is initialised (type invariant). The vfio core sets the byte from another
        // thread (`VFIO_DEVICE_FEATURE`); a racy read yields the old or the new value, as in C.
        unsafe { core::ptr::read_volatile(&raw const (*self.core.get()).vdev.precopy_info_v2) != 0 }
    }

    /// The next single step from `cur` towards `new` (`vfio_mig_get_next_state()`), as uAPI
    /// values. Fails with `EINVAL` if `new` cannot be reached (unsupported, out of range, ERROR).
    pub(crate) fn next_state(&self, cur: u32, new: u32) -> Result<u32> {
        let mut next: bindings::vfio_device_mig_state = 0;
        // SAFETY: `core` is initialised; `next` is valid for writes.
        let ret = unsafe {
            bindings::vfio_mig_get_next_state(&raw mut (*self.core.get()).vdev, cur, new, &mut next)
        };
        kernel::error::to_result(ret)?;
        Ok(next)
    }

    /// The PCI device's generic device, for logging.
    pub(crate) fn as_dev(&self) -> &device::Device {
        // SAFETY: `core` is initialised (type invariant) and its `pdev` stays valid for as long as
        // the vfio device exists, because `init` took a reference on it that only `release` drops
        // (type invariant); a `&Device<T>` cannot outlive the vfio device.
        unsafe { device::Device::from_raw(&raw mut (*(*self.core.get()).pdev).dev) }
    }

    /// The `struct vfio_device_ops` of this driver.
    pub(super) fn ops() -> &'static bindings::vfio_device_ops {
        // `_vfio_alloc_device()` allocates `size_of::<Self>()` bytes with `kvzalloc()` and uses
        // them as a `struct vfio_pci_core_device`: it must sit at offset 0, and the whole struct
        // must need no more alignment than `kvzalloc()` guarantees (`ARCH_KMALLOC_MINALIGN`;
        // vmalloc memory is page aligned).
        const { assert!(core::mem::offset_of!(Self, core) == 0) };
        const { assert!(core::mem::align_of::<Self>() <= kernel::bindings::ARCH_KMALLOC_MINALIGN) };
        &Self::OPS
    }

    /// Converts a `struct vfio_device` of this driver into its core device.
    pub(super) fn core_from_vfio(
        vdev: *mut bindings::vfio_device,
    ) -> *mut bindings::vfio_pci_core_device {
        // `vdev` is the first field of `struct vfio_pci_core_device`, so this is a cast.
        const { assert!(core::mem::offset_of!(bindings::vfio_pci_core_device, vdev) == 0) };
        vdev.cast()
    }

    /// Converts a `struct vfio_device` of this driver into a raw `Device<T>`.
    fn from_vfio(vdev: *mut bindings::vfio_device) -> *mut Self {
        Self::core_from_vfio(vdev).cast()
    }

    /// Borrows the device behind a `struct vfio_device` of this driver.
    ///
    /// # Safety
    ///
    /// `vdev` belongs to a device of this driver, between the end of `init` and the start of
    /// `release`, and stays so for `'a`.
    unsafe fn borrow<'a>(vdev: *mut bindings::vfio_device) -> &'a Self {
        // SAFETY: By the safety requirement the device and its data are initialised for `'a`; all
        // shared access goes through `Opaque` or `Sync` data.
        unsafe { &*Self::from_vfio(vdev) }
    }

    const OPS: bindings::vfio_device_ops = bindings::vfio_device_ops {
        name: as_char_ptr_in_const_context(T::NAME).cast_mut(),
        init: Some(Self::init_callback),
        release: Some(Self::release_callback),
        open_device: Some(Self::open_callback),
        close_device: Some(Self::close_callback),
        ioctl: Some(Self::ioctl_callback),
        get_region_info_caps: Some(bindings::vfio_pci_ioctl_get_region_info),
        device_feature: Some(bindings::vfio_pci_core_ioctl_feature),
        read: Some(bindings::vfio_pci_core_read),
        write: Some(Self::write_callback),
        mmap: Some(Self::mmap_callback),
        request: Some(bindings::vfio_pci_core_request),
        match_: Some(bindings::vfio_pci_core_match),
        match_token_uuid: Some(bindings::vfio_pci_core_match_token_uuid),
        bind_iommufd: Some(bindings::vfio_iommufd_physical_bind),
        unbind_iommufd: Some(bindings::vfio_iommufd_physical_unbind),
        attach_ioas: Some(bindings::vfio_iommufd_physical_attach_ioas),
        detach_ioas: Some(bindings::vfio_iommufd_physical_detach_ioas),
        pasid_attach_ioas: Some(bindings::vfio_iommufd_physical_pasid_attach_ioas),
        pasid_detach_ioas: Some(bindings::vfio_iommufd_physical_pasid_detach_ioas),
        ..pin_init::zeroed()
    };

    /// `vfio_device_ops.init`: initialises vfio-pci-core's part, then the driver data.
    ///
    /// # Safety
    ///
    /// Called by `_vfio_alloc_device()` on a zeroed allocation of `size_of::<Device<T>>()` bytes.
    unsafe extern "C" fn init_callback(vdev: *mut bindings::vfio_device) -> c_int {
        // SAFETY: `vdev` is the freshly allocated device (function safety requirement).
        let ret = unsafe { bindings::vfio_pci_core_init_dev(vdev) };
        if ret != 0 {
            return ret;
        }
        let this = Self::from_vfio(vdev);
        // SAFETY: `vfio_pci_core_init_dev()` set `pdev` to the device being probed, which is
        // valid; the reference is dropped in `release_callback` (or below, on failure).
        //
        // INVARIANT: `pdev` is referenced from here to `release`.
        let pdev = unsafe { kernel::bindings::pci_dev_get((*Self::core_from_vfio(vdev)).pdev) };
        let flags = T::migration_flags();
        if flags != 0 {
            // SAFETY: `vdev` is initialised and not registered yet, which is when vfio requires
            // the migration ops to be set; the ops table is `'static`.
            unsafe {
                (*vdev).migration_flags = flags;
                (*vdev).mig_ops = &raw const Self::mig_ops().ops;
            }
        }
        if T::DMA_LOGGING {
            // SAFETY: As for the migration ops: `log_ops` too must be set before registration,
            // and the ops table is `'static`.
            unsafe { (*vdev).log_ops = Self::log_ops() };
        }
        // SAFETY: `io` is not initialised yet and the allocation is pinned. A mutex initialiser
        // cannot fail.
        let _ = unsafe {
            new_mutex!(IoState { open: false }, "qemu_vfio_pci::io").__init(&raw mut (*this).io)
        };
        let tracked_len = T::TRACKED_BAR.map_or(0, |bar| {
            // SAFETY: `pdev` is valid (referenced above); `bar` is a BAR index (the driver's
            // constant), and `pci_resource_len()` is 0 for a BAR the device does not have.
            let len = unsafe { kernel::bindings::pci_resource_len(pdev, bar as c_int) };
            usize::try_from(len).unwrap_or(0)
        });
        // SAFETY: The allocation holds a whole `Device<T>`, is pinned (vfio never moves it) and
        // `tracker` and `data` are not initialised yet.
        //
        // INVARIANT: On success `tracker` and `data` are initialised; on failure `release` never
        // runs (the core frees the allocation), so undo what succeeded here.
        let ret = match unsafe { DirtyTracker::new(tracked_len).__init(&raw mut (*this).tracker) } {
            Err(e) => Err(e),
            // SAFETY: As above, for `data`.
            Ok(()) => match unsafe { T::init_data().__init(&raw mut (*this).data) } {
                Ok(()) => Ok(()),
                Err(e) => {
                    // SAFETY: `tracker` was initialised just above and nothing uses it.
                    unsafe { core::ptr::drop_in_place(&raw mut (*this).tracker) };
                    Err(e)
                }
            },
        };
        match ret {
            Ok(()) => 0,
            Err(e) => {
                // SAFETY: Undoes the successful `vfio_pci_core_init_dev()` and `pci_dev_get()`
                // above; `io` holds no resource.
                unsafe {
                    bindings::vfio_pci_core_release_dev(vdev);
                    kernel::bindings::pci_dev_put(pdev);
                }
                e.to_errno()
            }
        }
    }

    /// `vfio_device_ops.release`: drops the driver data, then releases vfio-pci-core's part.
    ///
    /// # Safety
    ///
    /// Called once, when the last reference to a device whose `init` succeeded is dropped.
    unsafe extern "C" fn release_callback(vdev: *mut bindings::vfio_device) {
        let this = Self::from_vfio(vdev);
        // SAFETY: `io`, `tracker` and `data` were initialised by `init` and nothing uses them any
        // more: every file of the device, the VMAs and data files included, is gone.
        unsafe {
            core::ptr::drop_in_place(&raw mut (*this).data);
            core::ptr::drop_in_place(&raw mut (*this).tracker);
            core::ptr::drop_in_place(&raw mut (*this).io);
        }
        // SAFETY: The device is initialised; `pdev` is the one `init` took a reference on.
        let pdev = unsafe { (*Self::core_from_vfio(vdev)).pdev };
        // SAFETY: Pairs with `vfio_pci_core_init_dev()` and `pci_dev_get()` in `init`; nothing
        // uses the PCI device through this vfio device any more.
        unsafe {
            bindings::vfio_pci_core_release_dev(vdev);
            kernel::bindings::pci_dev_put(pdev);
        }
    }

    /// `vfio_device_ops.open_device`.
    ///
    /// # Safety
    ///
    /// Called by the vfio core, under the device set lock, for an initialised device.
    unsafe extern "C" fn open_callback(vdev: *mut bindings::vfio_device) -> c_int {
        let core = Self::core_from_vfio(vdev);
        // SAFETY: `core` is an initialised, registered device.
        let ret = unsafe { bindings::vfio_pci_core_enable(core) };
        if ret != 0 {
            return ret;
        }
        // SAFETY: The device is initialised and stays so while it is open.
        let this = unsafe { Self::borrow(vdev) };
        // INVARIANT: `vfio_pci_core_enable()` succeeded, so the BARs are mapped.
        this.io.lock().open = true;
        if let Err(e) = T::open(this) {
            this.io.lock().open = false;
            // SAFETY: Undoes `vfio_pci_core_enable()`.
            unsafe { bindings::vfio_pci_core_disable(core) };
            return e.to_errno();
        }
        // SAFETY: `vfio_pci_core_enable()` succeeded.
        unsafe { bindings::vfio_pci_core_finish_enable(core) };
        0
    }

    /// `vfio_device_ops.close_device`.
    ///
    /// # Safety
    ///
    /// Called by the vfio core, under the device set lock, for a device that `open_callback`
    /// opened.
    unsafe extern "C" fn close_callback(vdev: *mut bindings::vfio_device) {
        // SAFETY: The device is open, hence initialised.
        let this = unsafe { Self::borrow(vdev) };
        T::close(this);
        // INVARIANT: Close the gate before vfio-pci-core unmaps the BARs; this waits for any
        // `with_io` in progress.
        this.io.lock().open = false;
        // SAFETY: Pairs with the successful open.
        unsafe { bindings::vfio_pci_core_close_device(vdev) };
    }
}

/// The device fd's region accesses and the write tracking of `T::TRACKED_BAR` (see
/// [`super::dirty`]).
impl<T: VariantDriver> Device<T> {
    /// The `vm_operations_struct` of a user mapping of the tracked BAR. `pfn_mkwrite` makes the
    /// mm give the VMA write-notify: its PTEs are read-only unless `fault` installs them writable,
    /// and a write to a read-only one calls `pfn_mkwrite` before the mm makes it writable.
    /// `huge_fault` maps huge entries, writable, as vfio-pci-core does, while tracking is off, and
    /// falls back to 4 KiB PTEs while it is armed (the dirty granule is a 4 KiB page; a huge entry
    /// that existed before arming is writable, all its pages' bits are set, and the first take of
    /// any of them zaps it whole). The mm calls it only on kernels that map PFNs huge, and only
    /// where no page table exists yet: a range mapped with 4 KiB PTEs while tracking keeps its
    /// page table until it is unmapped. No `access`, as in vfio-pci-core (ptrace
    /// cannot reach the BAR).
    const VM_OPS: kernel::bindings::vm_operations_struct = kernel::bindings::vm_operations_struct {
        fault: Some(Self::fault_callback),
        huge_fault: Some(Self::huge_fault_callback),
        pfn_mkwrite: Some(Self::pfn_mkwrite_callback),
        ..pin_init::zeroed()
    };

    /// `vfio_device_ops.mmap`: vfio-pci-core's, then, for the tracked BAR, the tracking
    /// `vm_operations_struct` in place of vfio-pci-core's.
    ///
    /// # Safety
    ///
    /// Called by the vfio core for an open device of this driver with a new VMA of one of its
    /// files, `mmap_lock` held for writing.
    unsafe extern "C" fn mmap_callback(
        vdev: *mut bindings::vfio_device,
        vma: *mut kernel::bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: As the function's safety requirement says.
        let ret = unsafe { bindings::vfio_pci_core_mmap(vdev, vma) };
        let Some(bar) = T::TRACKED_BAR else {
            return ret;
        };
        if ret != 0 {
            return ret;
        }
        // SAFETY: `vma` is valid and being set up under `mmap_lock`.
        let (pgoff, file) = unsafe { ((*vma).vm_pgoff, (*vma).vm_file) };
        // CAST: The index of a region fits in 32 bits.
        if (pgoff >> (OFFSET_SHIFT - kernel::page::PAGE_SHIFT as u32)) as u64 != u64::from(bar) {
            return 0;
        }
        // SAFETY: The device is open, hence initialised, for as long as the VMA exists: the VMA
        // holds its file.
        let this = unsafe { Self::borrow(vdev) };
        // SAFETY: `vfio_pci_core_mmap()` succeeded: the VMA maps the BAR, `vm_private_data` is the
        // core device, and the VMA is not visible to faults yet, so its ops can be replaced; the
        // ops table is `'static`. `vm_file` is the device file being mapped, whose `f_mapping` is
        // the vfio device's inode's address space.
        unsafe {
            (*vma).vm_ops = &raw const *Self::vm_ops();
            this.tracker.set_mapping((*file).f_mapping);
        }
        0
    }

    /// [`Self::VM_OPS`] as one `'static` object.
    fn vm_ops() -> &'static kernel::bindings::vm_operations_struct {
        &Self::VM_OPS
    }

    /// The device behind a fault of a VMA with [`Self::VM_OPS`], and the faulting page of the
    /// tracked BAR.
    ///
    /// # Safety
    ///
    /// `vmf` is the valid `struct vm_fault` of a fault on a VMA that `mmap_callback` set up.
    unsafe fn fault_target<'a>(vmf: *mut kernel::bindings::vm_fault) -> (&'a Self, usize) {
        // SAFETY: `vmf` is valid (function safety requirement).
        let (vma, pgoff) = unsafe { ((*vmf).__bindgen_anon_1.vma, (*vmf).__bindgen_anon_1.pgoff) };
        // SAFETY: `vma` is the faulting VMA; vfio-pci-core set `vm_private_data` to the core
        // device, whose `vdev` sits at offset 0.
        let vdev = unsafe { (*vma).vm_private_data }.cast::<bindings::vfio_device>();
        // SAFETY: The VMA holds its file, so the device stays open, hence initialised, during the
        // fault.
        let this = unsafe { Self::borrow(vdev) };
        // `vmf->pgoff` is the page offset into the device fd: the BAR's page sits below the
        // region index. CAST: At most 2^28, a `usize`.
        let page = (pgoff as u64 & (OFFSET_MASK >> kernel::page::PAGE_SHIFT)) as usize;
        (this, page)
    }

    /// Runs `insert` with the first PFN of the tracked BAR, under `memory_lock` held for reading
    /// (as vfio-pci-core's own fault handler takes it: `mmap_lock` comes first), and only if the
    /// BAR's memory is enabled; otherwise answers `VM_FAULT_SIGBUS`, as vfio-pci-core does with
    /// memory decode off or in a low-power state.
    fn fault_locked(
        &self,
        insert: impl FnOnce(c_ulong) -> kernel::bindings::vm_fault_t,
    ) -> kernel::bindings::vm_fault_t {
        let sigbus = kernel::bindings::vm_fault_reason_VM_FAULT_SIGBUS;
        let Some(bar) = T::TRACKED_BAR else {
            return sigbus;
        };
        let core = self.core.get();
        // SAFETY: `core` is initialised (type invariant).
        let (pdev, lock) = unsafe { ((*core).pdev, &raw mut (*core).memory_lock) };
        // SAFETY: `memory_lock` is an initialised rw_semaphore.
        unsafe { kernel::bindings::down_read(lock) };
        // SAFETY: `core` is initialised and `memory_lock` is held, as `__vfio_pci_memory_enabled()`
        // requires; `pm_runtime_engaged` is written under `memory_lock` held for writing.
        let enabled =
            unsafe { !(*core).pm_runtime_engaged && bindings::__vfio_pci_memory_enabled(core) };
        let ret = if enabled {
            // SAFETY: `pdev` is valid (type invariant); `bar` is the tracked BAR.
            let start = unsafe { kernel::bindings::pci_resource_start(pdev, bar as c_int) };
            // CAST: A physical address fits in `unsigned long` on 64-bit.
            insert((start >> kernel::page::PAGE_SHIFT) as c_ulong)
        } else {
            sigbus
        };
        // SAFETY: Taken above.
        unsafe { kernel::bindings::up_read(lock) };
        ret
    }

    /// `vm_operations_struct.fault` of the tracked BAR: installs the page's PTE, writable unless
    /// tracking is armed, the page is clean and the access reads.
    ///
    /// # Safety
    ///
    /// Called by the mm with a valid `vmf` on a VMA that `mmap_callback` set up, with `mmap_lock`
    /// held for reading.
    unsafe extern "C" fn fault_callback(
        vmf: *mut kernel::bindings::vm_fault,
    ) -> kernel::bindings::vm_fault_t {
        // SAFETY: As the function's safety requirement says.
        let (this, page) = unsafe { Self::fault_target(vmf) };
        // SAFETY: `vmf` is valid.
        let write = unsafe { (*vmf).flags } & kernel::bindings::fault_flag_FAULT_FLAG_WRITE != 0;
        if page >= this.tracker.npages() {
            return kernel::bindings::vm_fault_reason_VM_FAULT_SIGBUS;
        }
        this.fault_locked(|bar_pfn| {
            // The order of `super::dirty`: with `memory_lock` held, no take runs; the bit of a
            // page is set before a PTE that can write it is installed.
            let writable = if !this.tracker.is_armed() {
                true
            } else if write {
                this.tracker.mark_page(page);
                true
            } else {
                this.tracker.is_dirty(page)
            };
            // CAST: A page index fits in `unsigned long` on 64-bit.
            let pfn = bar_pfn + page as c_ulong;
            // SAFETY: `vmf` is valid; `pfn` is the page of the BAR the VMA maps at the faulting
            // address (vfio-pci-core checked the VMA against the BAR at mmap), with memory decode
            // on and `memory_lock` held, as vfio-pci-core inserts its PFNs.
            unsafe { bindings::qvp_vmf_insert_pfn(vmf, pfn, writable) }
        })
    }

    /// `vm_operations_struct.huge_fault` of the tracked BAR: while tracking is off, a writable
    /// huge entry where the kernel, the order and the alignment allow one, as vfio-pci-core maps
    /// the BAR; while it is armed, `VM_FAULT_FALLBACK`, so that the mm maps 4 KiB pages through
    /// `fault`. Arming takes `memory_lock` for writing, so the two cannot cross.
    ///
    /// # Safety
    ///
    /// Called by the mm with a valid `vmf` on a VMA that `mmap_callback` set up, with `mmap_lock`
    /// held for reading.
    unsafe extern "C" fn huge_fault_callback(
        vmf: *mut kernel::bindings::vm_fault,
        order: kernel::ffi::c_uint,
    ) -> kernel::bindings::vm_fault_t {
        if order == 0 {
            // SAFETY: As the function's safety requirement says.
            return unsafe { Self::fault_callback(vmf) };
        }
        // SAFETY: As the function's safety requirement says.
        let (this, _) = unsafe { Self::fault_target(vmf) };
        this.fault_locked(|bar_pfn| {
            if this.tracker.is_armed() {
                kernel::bindings::vm_fault_reason_VM_FAULT_FALLBACK
            } else {
                // SAFETY: `vmf` is valid, its VMA maps the BAR that starts at `bar_pfn`
                // (vfio-pci-core checked it at mmap, and the helper keeps the entry inside the
                // VMA), with memory decode on and `memory_lock` held.
                unsafe { bindings::qvp_vmf_insert_pfn_huge(vmf, bar_pfn, order) }
            }
        })
    }

    /// `vm_operations_struct.pfn_mkwrite` of the tracked BAR: a write to a read-only PTE marks the
    /// page before the mm makes the PTE writable. Atomics and a wake-up only.
    ///
    /// # Safety
    ///
    /// Called by the mm with a valid `vmf` on a VMA that `mmap_callback` set up.
    unsafe extern "C" fn pfn_mkwrite_callback(
        vmf: *mut kernel::bindings::vm_fault,
    ) -> kernel::bindings::vm_fault_t {
        // SAFETY: As the function's safety requirement says.
        let (this, page) = unsafe { Self::fault_target(vmf) };
        this.tracker.mark_page(page);
        0
    }

    /// `vfio_device_ops.write`: vfio-pci-core's, then, if tracking is armed, the pages of the
    /// tracked BAR that the write reached are marked, after they were written (see
    /// [`super::dirty`]). A failed write may have written part of the range: all of it is marked.
    ///
    /// # Safety
    ///
    /// Called by the vfio core for an open device of this driver, with a user buffer of `count`
    /// bytes and a valid `ppos`.
    unsafe extern "C" fn write_callback(
        vdev: *mut bindings::vfio_device,
        buf: *const kernel::ffi::c_char,
        count: usize,
        ppos: *mut kernel::bindings::loff_t,
    ) -> isize {
        // SAFETY: `ppos` is valid (function safety requirement).
        let pos = unsafe { *ppos };
        // SAFETY: As the function's safety requirement says.
        let ret = unsafe { bindings::vfio_pci_core_write(vdev, buf, count, ppos) };
        if let Some(bar) = T::TRACKED_BAR {
            // CAST: A device fd offset is not negative; a negative one is no region.
            let pos = pos as u64;
            if pos >> OFFSET_SHIFT == u64::from(bar) {
                // SAFETY: The device is open, hence initialised.
                let this = unsafe { Self::borrow(vdev) };
                // CAST: Non-negative byte counts.
                let len = if ret >= 0 { ret as u64 } else { count as u64 };
                this.tracker.mark_bytes(pos & OFFSET_MASK, len);
            }
        }
        ret
    }

    /// `vfio_device_ops.ioctl`: vfio-pci-core's, but `VFIO_DEVICE_IOEVENTFD` is refused with
    /// `EOPNOTSUPP` on a device with a tracked BAR: its writes come from the kernel through the
    /// BAR's kernel mapping, behind the tracker. The whole ioctl is refused, not only for the
    /// tracked BAR: vfio-pci-core reads the argument again, so a check of it here would race.
    ///
    /// # Safety
    ///
    /// Called by the vfio core for an open device of this driver.
    unsafe extern "C" fn ioctl_callback(
        vdev: *mut bindings::vfio_device,
        cmd: kernel::ffi::c_uint,
        arg: c_ulong,
    ) -> kernel::ffi::c_long {
        if T::TRACKED_BAR.is_some() && cmd == DEVICE_IOEVENTFD {
            // CAST: An errno fits a `long`.
            return EOPNOTSUPP.to_errno() as kernel::ffi::c_long;
        }
        // SAFETY: As the function's safety requirement says.
        unsafe { bindings::vfio_pci_core_ioctl(vdev, cmd, arg) }
    }
}

/// Migration callbacks (`struct vfio_migration_ops`) and the PCI reset hook.
impl<T: VariantDriver> Device<T> {
    /// The migration ops. `vfio_device.mig_ops` points at `ops` inside it: the C trampolines
    /// `qvp_migration_set_state()` and `qvp_migration_get_state()` (`src/helpers.c`) have the
    /// enum-typed C prototypes that kCFI checks the vfio core's calls against, and forward to
    /// `set_state` and `get_state` of the same struct, whose prototypes are integer-typed in C and
    /// in Rust alike. `migration_get_data_size` has no enum and is called directly.
    const MIG_OPS: bindings::qvp_migration_ops = bindings::qvp_migration_ops {
        ops: bindings::vfio_migration_ops {
            migration_set_state: Some(bindings::qvp_migration_set_state),
            migration_get_state: Some(bindings::qvp_migration_get_state),
            migration_get_data_size: Some(Self::data_size_callback),
        },
        set_state: Some(Self::set_state_callback),
        get_state: Some(Self::get_state_callback),
    };

    /// [`Self::MIG_OPS`] as one `'static` object (the trampolines find it from its `ops` field).
    fn mig_ops() -> &'static bindings::qvp_migration_ops {
        &Self::MIG_OPS
    }

    const ERR_HANDLERS: kernel::bindings::pci_error_handlers =
        kernel::bindings::pci_error_handlers {
            error_detected: Some(bindings::vfio_pci_core_aer_err_detected),
            reset_done: Some(Self::reset_done_callback),
            ..pin_init::zeroed()
        };

    /// The PCI error handlers: vfio-pci-core's, plus `reset_done` for [`VariantDriver::reset_done`].
    pub(super) fn err_handlers() -> &'static kernel::bindings::pci_error_handlers {
        &Self::ERR_HANDLERS
    }

    /// `vfio_migration_ops.migration_set_state`, through `qvp_migration_set_state()`.
    ///
    /// # Safety
    ///
    /// Called by the vfio core (`VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` on the device fd) for an
    /// open device of this driver.
    unsafe extern "C" fn set_state_callback(
        vdev: *mut bindings::vfio_device,
        new_state: u32,
    ) -> *mut kernel::bindings::file {
        // SAFETY: The device is open, hence initialised and not released.
        let this = unsafe { Self::borrow(vdev) };
        match T::set_state(this, new_state) {
            // The reference moves to the vfio core, which installs it in a file descriptor.
            Ok(Some(file)) => ARef::into_raw(file).as_ptr().cast(),
            Ok(None) => core::ptr::null_mut(),
            Err(e) => e.to_ptr(),
        }
    }

    /// `vfio_migration_ops.migration_get_state`, through `qvp_migration_get_state()`.
    ///
    /// # Safety
    ///
    /// Called with a valid `state` for a registered device of this driver, open or not: by the
    /// vfio core on the open device's fd, and by the vfio debugfs file `migration/state`, which
    /// exists from registration until unregistration.
    unsafe extern "C" fn get_state_callback(
        vdev: *mut bindings::vfio_device,
        state: *mut u32,
    ) -> c_int {
        // SAFETY: A registered device is initialised and not released: `release` runs only after
        // `vfio_unregister_group_dev()` removed its debugfs files and its last user closed it.
        let this = unsafe { Self::borrow(vdev) };
        match T::get_state(this) {
            Ok(s) => {
                // SAFETY: `state` is valid for writes (function safety requirement).
                unsafe { state.write(s) };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// `vfio_migration_ops.migration_get_data_size`.
    ///
    /// # Safety
    ///
    /// Called by the vfio core (`VFIO_DEVICE_FEATURE_MIG_DATA_SIZE` on the device fd) for an
    /// open device of this driver with a valid `size`.
    unsafe extern "C" fn data_size_callback(
        vdev: *mut bindings::vfio_device,
        size: *mut c_ulong,
    ) -> c_int {
        // SAFETY: The device is open, hence initialised and not released.
        let this = unsafe { Self::borrow(vdev) };
        match T::data_size(this) {
            Ok(n) => {
                // SAFETY: `size` is valid for writes (function safety requirement).
                // CAST: `usize` and `unsigned long` have the same size in the kernel.
                unsafe { size.write(n as c_ulong) };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// `pci_error_handlers.reset_done`.
    ///
    /// # Safety
    ///
    /// Called by the PCI core for a device bound to this driver (probe succeeded).
    unsafe extern "C" fn reset_done_callback(pdev: *mut kernel::bindings::pci_dev) {
        // SAFETY: `pdev` is valid. The PCI core calls `reset_done` for a device bound to this
        // driver with the device lock held, which probe and remove also hold: drvdata is the core
        // device probe set (our `Device<T>`), or null before probe set it.
        let core: *mut bindings::vfio_pci_core_device =
            unsafe { kernel::bindings::dev_get_drvdata(&raw mut (*pdev).dev) }.cast();
        if core.is_null() {
            return;
        }
        // SAFETY: While the driver is bound and remove has not run (the device lock excludes it),
        // the vfio device is registered, hence initialised and not released.
        T::reset_done(unsafe { Self::borrow(&raw mut (*core).vdev) });
    }
}

/// DMA logging callbacks (`struct vfio_log_ops`), installed if `T::DMA_LOGGING`.
///
/// kCFI: the vfio core calls them through pointers whose C prototypes have only pointer and
/// integer parameters (`struct vfio_device *`, `struct rb_root_cached *`, `u32`, `u64 *`,
/// `unsigned long`, `struct iova_bitmap *`). Pointers to structs are encoded by the struct's name
/// on both sides (a `#[repr(C)]` type in an `extern "C"` prototype), and integers by size and
/// signedness (`CONFIG_CFI_ICALL_NORMALIZE_INTEGERS`, `-Zsanitizer-cfi-normalize-integers`), so
/// these Rust functions carry the type hash of the C prototypes and need no C trampoline (unlike
/// the enum-typed migration callbacks).
impl<T: VariantDriver> Device<T> {
    /// The DMA logging ops, which `vfio_device.log_ops` points at.
    const LOG_OPS: bindings::vfio_log_ops = bindings::vfio_log_ops {
        log_start: Some(Self::log_start_callback),
        log_stop: Some(Self::log_stop_callback),
        log_read_and_clear: Some(Self::log_read_and_clear_callback),
    };

    /// [`Self::LOG_OPS`] as one `'static` object.
    fn log_ops() -> &'static bindings::vfio_log_ops {
        &Self::LOG_OPS
    }

    /// `vfio_log_ops.log_start` (`VFIO_DEVICE_FEATURE_DMA_LOGGING_START`).
    ///
    /// # Safety
    ///
    /// Called by the vfio core on the fd of an open device of this driver, with a valid
    /// `page_size`.
    unsafe extern "C" fn log_start_callback(
        vdev: *mut bindings::vfio_device,
        _ranges: *mut bindings::rb_root_cached,
        nnodes: u32,
        page_size: *mut u64,
    ) -> c_int {
        // SAFETY: The device is open, hence initialised and not released.
        let this = unsafe { Self::borrow(vdev) };
        // SAFETY: `page_size` points at the core's copy of the user's request, valid for reads
        // and writes and not otherwise accessed during the call (function safety requirement).
        let page_size = unsafe { &mut *page_size };
        match T::log_start(this, nnodes, page_size) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `vfio_log_ops.log_stop` (`VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP`, and the core's undo of a
    /// start whose result it could not copy to userspace).
    ///
    /// # Safety
    ///
    /// Called by the vfio core on the fd of an open device of this driver.
    unsafe extern "C" fn log_stop_callback(vdev: *mut bindings::vfio_device) -> c_int {
        // SAFETY: The device is open, hence initialised and not released.
        let this = unsafe { Self::borrow(vdev) };
        match T::log_stop(this) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `vfio_log_ops.log_read_and_clear` (`VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT`). The bitmap
    /// is not passed on (see [`VariantDriver::DMA_LOGGING`]), so nothing is written to it.
    ///
    /// # Safety
    ///
    /// Called by the vfio core on the fd of an open device of this driver.
    unsafe extern "C" fn log_read_and_clear_callback(
        vdev: *mut bindings::vfio_device,
        iova: c_ulong,
        length: c_ulong,
        _dirty: *mut bindings::iova_bitmap,
    ) -> c_int {
        // SAFETY: The device is open, hence initialised and not released.
        let this = unsafe { Self::borrow(vdev) };
        // CAST: `unsigned long` is at most 64 bits wide: lossless.
        match T::log_report(this, iova as u64, length as u64) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

// SAFETY: The reference count is that of the vfio device's `struct device`, which keeps the
// allocation (and so the `Device<T>`) alive: `release` runs only when it drops to zero.
unsafe impl<T: VariantDriver> AlwaysRefCounted for Device<T> {
    fn inc_ref(&self) {
        // SAFETY: `core` is initialised; its `vdev.device` is a live, refcounted device.
        unsafe { kernel::bindings::get_device(&raw mut (*self.core.get()).vdev.device) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns a reference, which this drops (this is `vfio_put_device()`).
        unsafe { kernel::bindings::put_device(&raw mut (*(*obj.as_ptr()).core.get()).vdev.device) };
    }
}
