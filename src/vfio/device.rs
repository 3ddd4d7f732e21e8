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

use core::marker::PhantomPinned;

use kernel::{
    device,
    ffi::c_int,
    prelude::*,
    str::as_char_ptr_in_const_context,
    types::Opaque, //
};

use super::bindings;

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
}

/// A vfio-pci-core device with the driver data of `T`.
///
/// # Invariants
///
/// - `core` is a `struct vfio_pci_core_device` initialised by `vfio_pci_core_init_dev()` and sits
///   at offset 0 (`#[repr(C)]`, first field), as `vfio_alloc_device()` requires.
/// - `data` is initialised from the end of `init` until the start of `release`, which covers
///   every moment a `&Device<T>` exists.
#[repr(C)]
#[pin_data]
pub(crate) struct Device<T: VariantDriver> {
    core: Opaque<bindings::vfio_pci_core_device>,
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
    /// The PCI device's generic device, for logging.
    pub(crate) fn as_dev(&self) -> &device::Device {
        // SAFETY: `core` is initialised (type invariant); its `pdev` is valid while the vfio device
        // is registered, which outlives every `&Device<T>`.
        unsafe { device::Device::from_raw(&raw mut (*(*self.core.get()).pdev).dev) }
    }

    /// The `struct vfio_device_ops` of this driver.
    pub(super) fn ops() -> &'static bindings::vfio_device_ops {
        const { assert!(core::mem::offset_of!(Self, core) == 0) };
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
        ioctl: Some(bindings::vfio_pci_core_ioctl),
        get_region_info_caps: Some(bindings::vfio_pci_ioctl_get_region_info),
        device_feature: Some(bindings::vfio_pci_core_ioctl_feature),
        read: Some(bindings::vfio_pci_core_read),
        write: Some(bindings::vfio_pci_core_write),
        mmap: Some(bindings::vfio_pci_core_mmap),
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
        // SAFETY: The allocation holds a whole `Device<T>`, is pinned (vfio never moves it) and
        // `data` is not initialised yet.
        //
        // INVARIANT: On success `data` is initialised; on failure `release` never runs (the core
        // frees the allocation), so undo `vfio_pci_core_init_dev()` here.
        match unsafe { T::init_data().__init(&raw mut (*this).data) } {
            Ok(()) => 0,
            Err(e) => {
                // SAFETY: Undoes the successful `vfio_pci_core_init_dev()` above.
                unsafe { bindings::vfio_pci_core_release_dev(vdev) };
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
        // SAFETY: `data` was initialised by `init` and nothing uses it any more.
        unsafe { core::ptr::drop_in_place(&raw mut (*this).data) };
        // SAFETY: Pairs with `vfio_pci_core_init_dev()` in `init`.
        unsafe { bindings::vfio_pci_core_release_dev(vdev) };
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
        if let Err(e) = T::open(this) {
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
        T::close(unsafe { Self::borrow(vdev) });
        // SAFETY: Pairs with the successful open.
        unsafe { bindings::vfio_pci_core_close_device(vdev) };
    }
}
