// SPDX-License-Identifier: GPL-2.0

//! Registration of a vfio-pci variant driver with the PCI core.
//!
//! C header: [`include/linux/pci.h`](srctree/include/linux/pci.h)
//!
//! `kernel::pci::Driver` cannot host a vfio-pci variant driver: its adapter owns the device's
//! drvdata (vfio-pci-core requires drvdata to be the `struct vfio_pci_core_device`), and it cannot
//! set `driver_managed_dma`, `err_handler` or an override-only ID table. This module registers a
//! raw `struct pci_driver` instead, whose probe and remove callbacks create and destroy a
//! [`Device`].

use core::marker::PhantomData;

use kernel::{
    error::{
        from_err_ptr,
        to_result, //
    },
    ffi::c_int,
    prelude::*,
    types::Opaque,
    ThisModule, //
};

use super::{
    bindings,
    device::{
        Device,
        VariantDriver, //
    },
};

/// One entry of a PCI ID table that matches only through `driver_override`.
///
/// This is `PCI_DRIVER_OVERRIDE_DEVICE_VFIO(vendor, device)` in C: any subsystem IDs, and
/// `override_only = PCI_ID_F_VFIO_DRIVER_OVERRIDE`, so that the driver never binds a device on its
/// own and modpost emits a `vfio_pci:` alias for it.
#[repr(transparent)]
pub(crate) struct DeviceId(bindings::pci_device_id);

impl DeviceId {
    /// An entry for `vendor:device` that binds only through `driver_override`.
    pub(crate) const fn vfio_override(vendor: u16, device: u16) -> Self {
        Self(bindings::pci_device_id {
            vendor: vendor as u32,
            device: device as u32,
            subvendor: !0,
            subdevice: !0,
            class: 0,
            class_mask: 0,
            driver_data: 0,
            // CAST: The constant belongs to an anonymous C enum whose generated type depends on the
            // configuration (it may already be `u32`); its value fits a `u32`.
            #[allow(clippy::unnecessary_cast)]
            override_only: bindings::PCI_ID_F_VFIO_DRIVER_OVERRIDE as u32,
        })
    }

    /// The all-zero entry that ends a table.
    pub(crate) const fn terminator() -> Self {
        Self(bindings::pci_device_id {
            vendor: 0,
            device: 0,
            subvendor: 0,
            subdevice: 0,
            class: 0,
            class_mask: 0,
            driver_data: 0,
            override_only: 0,
        })
    }
}

/// A PCI ID table: entries followed by a [`DeviceId::terminator`].
///
/// The table must also be exported as `__mod_device_table__kmod_<module>__pci__<name>` so that
/// modpost generates the module aliases; [`crate::driver`] does that with `#[export_name]`.
///
/// # Invariants
///
/// The last entry is a terminator, and it is the only one.
#[repr(transparent)]
pub(crate) struct IdTable<const N: usize>([DeviceId; N]);

impl<const N: usize> IdTable<N> {
    /// Builds a table from entries that end with a terminator.
    ///
    /// # Panics
    ///
    /// Fails to build (in const context) if the last entry is not a terminator or if another entry
    /// is one.
    pub(crate) const fn new(ids: [DeviceId; N]) -> Self {
        let mut i = 0;
        while i < N {
            let is_terminator = ids[i].0.vendor == 0;
            assert!(
                is_terminator == (i + 1 == N),
                "the terminator must come last, once"
            );
            i += 1;
        }
        // INVARIANT: Checked above.
        Self(ids)
    }

    fn as_ptr(&self) -> *const bindings::pci_device_id {
        self.0.as_ptr().cast()
    }
}

/// A registered vfio-pci variant PCI driver.
///
/// # Invariants
///
/// - `drv` holds a `struct pci_driver` registered with the PCI core from the moment the
///   initialiser returned `Ok` until [`PinnedDrop::drop`] unregisters it.
/// - `drv` is pinned: the PCI core and vfio-pci-core keep pointers to it and write to it
///   (`driver.pm`).
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: VariantDriver> {
    #[pin]
    drv: Opaque<bindings::pci_driver>,
    _p: PhantomData<T>,
}

// SAFETY: The registration only holds the C driver structure, which the PCI core protects with its
// own locking; it is fine to drop (unregister) it from any thread.
unsafe impl<T: VariantDriver> Send for Registration<T> {}

// SAFETY: `&Registration` gives no access to the C structure at all.
unsafe impl<T: VariantDriver> Sync for Registration<T> {}

impl<T: VariantDriver> Registration<T> {
    /// Registers a PCI driver named `name` for the devices in `ids`.
    pub(crate) fn new<const N: usize>(
        name: &'static CStr,
        ids: &'static IdTable<N>,
        module: &'static ThisModule,
    ) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            drv <- Opaque::try_ffi_init(|drv: *mut bindings::pci_driver| {
                // SAFETY: `drv` is valid for writes and pinned; all-zero is a valid
                // `struct pci_driver`.
                unsafe {
                    drv.write(pin_init::zeroed());
                    (*drv).name = name.as_char_ptr();
                    (*drv).id_table = ids.as_ptr();
                    (*drv).probe = Some(Self::probe_callback);
                    (*drv).remove = Some(Self::remove_callback);
                    (*drv).err_handler = Device::<T>::err_handlers();
                    (*drv).driver_managed_dma = true;
                }
                // SAFETY: `drv` is a fully initialised `struct pci_driver` that stays pinned until
                // `PinnedDrop` unregisters it; `name` and `ids` are `'static`.
                //
                // INVARIANT: On success the driver is registered.
                to_result(unsafe { bindings::__pci_register_driver(drv, module.as_ptr(), name.as_char_ptr()) })
            }),
            _p: PhantomData,
        })
    }

    /// Probes one device: allocates the vfio device and registers it with vfio-pci-core.
    ///
    /// # Safety
    ///
    /// Called by the PCI core with a valid `pdev` that it keeps alive until `remove_callback`.
    unsafe extern "C" fn probe_callback(
        pdev: *mut bindings::pci_dev,
        _id: *const bindings::pci_device_id,
    ) -> c_int {
        // SAFETY: `pdev` is valid (function safety requirement).
        let dev = unsafe { &raw mut (*pdev).dev };
        // SAFETY: `dev` is a valid device; the ops table is a `'static` promoted constant; the size
        // is that of a `Device<T>`, whose first field is the `struct vfio_pci_core_device` (checked
        // at compile time in `Device::OPS`), as `vfio_alloc_device()` requires.
        let vdev = match from_err_ptr(unsafe {
            bindings::_vfio_alloc_device(core::mem::size_of::<Device<T>>(), dev, Device::<T>::ops())
        }) {
            Ok(vdev) => vdev,
            Err(e) => return e.to_errno(),
        };
        let core = Device::<T>::core_from_vfio(vdev);
        // SAFETY: vfio-pci-core requires drvdata to be the core device before registration.
        unsafe { bindings::dev_set_drvdata(dev, core.cast()) };
        // SAFETY: `core` was initialised by `_vfio_alloc_device` (through `Device::init`).
        let ret = unsafe { bindings::vfio_pci_core_register_device(core) };
        if ret != 0 {
            // SAFETY: Drops the reference `_vfio_alloc_device` returned; this frees the device.
            unsafe { bindings::qvp_vfio_put_device(vdev) };
        }
        ret
    }

    /// Removes one device: unregisters it from vfio-pci-core and drops our reference.
    ///
    /// # Safety
    ///
    /// Called by the PCI core for a device whose `probe_callback` succeeded.
    unsafe extern "C" fn remove_callback(pdev: *mut bindings::pci_dev) {
        // SAFETY: `pdev` is valid, and `probe_callback` set drvdata to the core device.
        let core: *mut bindings::vfio_pci_core_device =
            unsafe { bindings::dev_get_drvdata(&raw mut (*pdev).dev) }.cast();
        // SAFETY: `core` is registered (probe succeeded); this waits for all users to close it.
        unsafe { bindings::vfio_pci_core_unregister_device(core) };
        // SAFETY: Drops the reference taken at probe. `release` runs, and frees the device, once
        // the last reference is gone: now, or when the last data file holding one is closed.
        unsafe { bindings::qvp_vfio_put_device(&raw mut (*core).vdev) };
    }
}

#[pinned_drop]
impl<T: VariantDriver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the driver is registered, and this is the only place that
        // unregisters it.
        unsafe { bindings::pci_unregister_driver(self.drv.get()) };
    }
}
