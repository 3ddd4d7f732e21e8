// SPDX-License-Identifier: GPL-2.0

//! The VFIO v2 migration protocol: the state machine and its data files.
//!
//! [`Migration`] holds a device's migration state behind a mutex. [`Migration::set_state`] walks a
//! requested transition one single-step arc at a time (as `vfio_mig_get_next_state()` gives
//! them), and the state it reports is always the last step that completed: a failed step leaves
//! the device in the state before it.
//!
//! Arcs that move data open a data file: `STOP -> STOP_COPY` a [`save::SaveFile`],
//! `STOP -> RESUMING` a [`resume::ResumeFile`]. Leaving the data state, a reset, and closing the
//! device disable the file: later reads and writes fail with `ENODEV`.
//!
//! # Reset
//!
//! `VFIO_DEVICE_RESET` reaches [`Migration::reset_done`] with vfio-pci-core's `memory_lock` held
//! for writing, while a state change holds the state mutex and then takes `memory_lock` to touch
//! the BARs, and a data file's `read()` holds its own mutex while it faults in user pages (mm
//! lock, then `memory_lock` for a mapped BAR). Waiting for the state mutex in `reset_done` would
//! close that cycle, so the reset is deferred as in mlx5: `reset_done` sets a flag under a spin
//! lock and only takes the state mutex if it is free; otherwise whoever holds it performs the
//! reset when it unlocks ([`StateGuard`]).
//!
//! This module has no `unsafe` code: the device is reached through [`MigDevice`].

use core::ops::Deref;

use kernel::{
    fs::File,
    new_mutex,
    new_spinlock,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{
            Acquire,
            Atomic,
            Relaxed,
            Release, //
        },
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        Arc,
        Mutex,
        SpinLock, //
    }, //
};

use crate::stream::{
    stream_len,
    DeviceIdentity, //
};

pub(crate) mod resume;
pub(crate) mod save;
pub(crate) mod state;

use resume::ResumeFile;
use save::SaveFile;
use state::{
    Arc as Step,
    MigState, //
};

/// Where a saving file's `read()` puts stream bytes: userspace, or a kernel buffer in tests.
pub(crate) trait ByteSink {
    /// How many more bytes fit.
    fn room(&self) -> usize;
    /// Appends `data` (at most `room()` bytes).
    fn put(&mut self, data: &[u8]) -> Result;
}

/// Where a resuming file's `write()` takes stream bytes from.
pub(crate) trait ByteSource {
    /// How many bytes are left.
    fn left(&self) -> usize;
    /// Fills `out` with the next `out.len()` (at most `left()`) bytes.
    fn take(&mut self, out: &mut [u8]) -> Result;
}

impl ByteSink for kernel::uaccess::UserSliceWriter {
    fn room(&self) -> usize {
        self.len()
    }

    fn put(&mut self, data: &[u8]) -> Result {
        self.write_slice(data)
    }
}

impl ByteSource for kernel::uaccess::UserSliceReader {
    fn left(&self) -> usize {
        self.len()
    }

    fn take(&mut self, out: &mut [u8]) -> Result {
        self.read_slice(out)
    }
}

/// Live migration states (one per device) and live data files, so that module exit can report
/// anything that outlived its device: a reference cycle left unbroken would show there.
static LIVE_STATES: Atomic<i32> = Atomic::new(0);
static LIVE_FILES: Atomic<i32> = Atomic::new(0);

/// Counts one live object while it exists.
pub(crate) struct Live(&'static Atomic<i32>);

impl Live {
    fn new(counter: &'static Atomic<i32>) -> Self {
        counter.add(1, Relaxed);
        Self(counter)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.add(-1, Relaxed);
    }
}

/// What every data file has besides its own mutex: whether it is disabled, and its place in the
/// live count.
///
/// Leaving the data state, a reset and a close disable a file; reads and writes then fail with
/// `ENODEV`. The flag is an atomic, not part of the file's mutex-protected state: a reset
/// disables the file with vfio-pci-core's `memory_lock` held, while a read or write holds the
/// file's mutex and then takes `memory_lock` to reach the device; taking the mutex to disable
/// would close that cycle. A transfer in progress sees the flag at its next record.
pub(crate) struct FileState {
    disabled: Atomic<bool>,
    _live: Live,
}

impl FileState {
    /// An enabled file.
    pub(crate) fn new() -> Self {
        Self {
            disabled: Atomic::new(false),
            _live: Live::new(&LIVE_FILES),
        }
    }

    /// Ends the file: later transfers fail with `ENODEV`. Does not wait.
    pub(crate) fn disable(&self) {
        self.disabled.store(true, Release);
    }

    /// `ENODEV` once the file is disabled.
    pub(crate) fn check(&self) -> Result {
        if self.disabled.load(Acquire) {
            Err(ENODEV)
        } else {
            Ok(())
        }
    }

    /// The poll mask: `ready` while the file is enabled, an error once it is disabled.
    pub(crate) fn poll_mask(&self, ready: u32) -> u32 {
        if self.disabled.load(Acquire) {
            crate::vfio::data_file::poll_mask::ERROR
        } else {
            ready
        }
    }
}

/// The numbers of live migration states and data files.
pub(crate) fn live_objects() -> (i32, i32) {
    (LIVE_STATES.load(Relaxed), LIVE_FILES.load(Relaxed))
}

/// Locks a data file's state for a read or a write: with `nonblock` (`O_NONBLOCK`), `EAGAIN`
/// instead of waiting for another reader or writer.
fn lock_for_io<T>(lock: &Mutex<T>, nonblock: bool) -> Result<Guard<'_, T, MutexBackend>> {
    if nonblock {
        lock.try_lock().ok_or(EAGAIN)
    } else {
        Ok(lock.lock())
    }
}

/// Converts a positive errno number from the stream code into an [`Error`].
fn errno(n: i32) -> Error {
    Error::from_errno(-n)
}

/// A device that can be migrated: what the protocol code needs from the driver.
///
/// The driver implements it for its vfio device (see [`crate::driver`]); a test can implement it
/// for a fake device.
pub(crate) trait MigDevice: Send + Sync + Sized + 'static {
    /// An owned reference that keeps the device alive; data files hold one, since they can
    /// outlive the device's close (`ARef` for a vfio device, `Arc` for a test double).
    type Ref: Deref<Target = Self> + Clone + Send + Sync;

    /// The device's migration state.
    fn migration(&self) -> &Migration<Self>;

    /// What a stream of this device carries and what a destination must match.
    fn identity(&self) -> Result<DeviceIdentity>;

    /// Length of the device's register blob.
    fn regs_len(&self) -> usize;

    /// Reads the registers into `out` (`regs_len()` bytes).
    fn save_regs(&self, out: &mut [u8]) -> Result;

    /// Validates a register blob without touching the device.
    fn check_regs(&self, regs: &[u8]) -> Result;

    /// Programs the registers from a validated blob.
    fn restore_regs(&self, regs: &[u8]) -> Result;

    /// Reads device memory at `offset`.
    fn read_memory(&self, offset: u64, out: &mut [u8]) -> Result;

    /// Writes device memory at `offset`.
    fn write_memory(&self, offset: u64, data: &[u8]) -> Result;

    /// The next single step from `cur` towards `new` (`vfio_mig_get_next_state()`).
    fn next_step(&self, cur: MigState, new: u32) -> Result<MigState>;
}

/// The state under the state mutex.
///
/// A data file holds a reference to the device (`MigDevice::Ref`) and the device's state holds
/// the file: that cycle is broken whenever the state leaves STOP_COPY or RESUMING, on reset, and
/// at the latest when the device is closed, which the VFIO core does before the device can be
/// unregistered. A file userspace keeps open after that keeps only the device's memory alive.
struct Inner<D: MigDevice> {
    /// The current state: the last step that completed.
    state: MigState,
    /// The open saving file, while in STOP_COPY.
    saving: Option<Arc<SaveFile<D>>>,
    /// The open resuming file, while in RESUMING.
    resuming: Option<Arc<ResumeFile<D>>>,
}

impl<D: MigDevice> Inner<D> {
    /// Disables and forgets the data files.
    fn disable_files(&mut self) {
        if let Some(f) = self.saving.take() {
            f.disable();
        }
        if let Some(f) = self.resuming.take() {
            f.disable();
        }
    }
}

/// A device's migration state.
///
/// # Invariants
///
/// `inner.saving` is `Some` exactly in STOP_COPY and `inner.resuming` exactly in RESUMING.
#[pin_data]
pub(crate) struct Migration<D: MigDevice> {
    #[pin]
    inner: Mutex<Inner<D>>,
    /// A reset happened and the state mutex holder must apply it (`deferred_reset`).
    #[pin]
    deferred_reset: SpinLock<bool>,
    _live: Live,
}

/// The state mutex, held; on unlock it applies a deferred reset first.
struct StateGuard<'a, D: MigDevice> {
    mig: &'a Migration<D>,
    guard: Option<Guard<'a, Inner<D>, MutexBackend>>,
}

impl<D: MigDevice> StateGuard<'_, D> {
    fn inner(&mut self) -> Result<&mut Inner<D>> {
        // The guard is only taken in `drop`.
        self.guard.as_deref_mut().ok_or(EINVAL)
    }
}

impl<D: MigDevice> Drop for StateGuard<'_, D> {
    fn drop(&mut self) {
        loop {
            let mut deferred = self.mig.deferred_reset.lock();
            if !*deferred {
                // Unlock the state mutex while holding the spin lock, so that a `reset_done`
                // racing with us either sees the mutex free or its flag seen by us.
                drop(self.guard.take());
                drop(deferred);
                return;
            }
            *deferred = false;
            drop(deferred);
            if let Some(inner) = self.guard.as_deref_mut() {
                Migration::apply_reset(inner);
            }
        }
    }
}

impl<D: MigDevice> Migration<D> {
    /// A device in RUNNING with no data files.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- new_mutex!(Inner {
                state: MigState::Running,
                saving: None,
                resuming: None,
            }, "qemu_vfio_pci::migration"),
            deferred_reset <- new_spinlock!(false, "qemu_vfio_pci::deferred_reset"),
            _live: Live::new(&LIVE_STATES),
        }? Error)
    }

    fn lock(&self) -> StateGuard<'_, D> {
        StateGuard {
            mig: self,
            guard: Some(self.inner.lock()),
        }
    }

    /// What a reset does to the migration state: RUNNING, data files disabled.
    fn apply_reset(inner: &mut Inner<D>) {
        // INVARIANT: Both files are dropped as the state becomes RUNNING.
        inner.disable_files();
        inner.state = MigState::Running;
    }

    /// The device was opened: it starts in RUNNING.
    pub(crate) fn open(&self) {
        if let Ok(inner) = self.lock().inner() {
            Self::apply_reset(inner);
        }
    }

    /// The device is being closed: data files reach their end, the state returns to RUNNING.
    pub(crate) fn close(&self) {
        if let Ok(inner) = self.lock().inner() {
            Self::apply_reset(inner);
        }
    }

    /// The device was reset (`pci_error_handlers.reset_done`); see the module docs.
    pub(crate) fn reset_done(&self) {
        let mut deferred = self.deferred_reset.lock();
        *deferred = true;
        let Some(guard) = self.inner.try_lock() else {
            // The holder applies it when it unlocks.
            return;
        };
        drop(deferred);
        // Dropping the guard applies the deferred reset.
        drop(StateGuard {
            mig: self,
            guard: Some(guard),
        });
    }

    /// The current state (`migration_get_state`).
    pub(crate) fn get_state(&self) -> Result<u32> {
        let mut guard = self.lock();
        Ok(guard.inner()?.state.raw())
    }

    /// The exact length of the stream a STOP_COPY would produce now (`migration_get_data_size`).
    pub(crate) fn data_size(dev: &D) -> Result<usize> {
        let identity = dev.identity()?;
        let regs_len = u32::try_from(dev.regs_len()).map_err(|_| EINVAL)?;
        let len = stream_len(identity, regs_len).map_err(|_| EOVERFLOW)?;
        usize::try_from(len).map_err(|_| EOVERFLOW)
    }

    /// Takes the device to the uAPI state `new` (`migration_set_state`).
    pub(crate) fn set_state(dev: &D::Ref, new: u32) -> Result<Option<ARef<File>>> {
        let mig = dev.migration();
        let mut guard = mig.lock();
        let inner = guard.inner()?;
        let mut file = None;
        while inner.state.raw() != new {
            let next = dev.next_step(inner.state, new)?;
            let opened = Self::step(dev, inner, next)?;
            inner.state = next;
            if let Some(f) = opened {
                if next.raw() != new {
                    // Only the final step may hand out a file; the core would have nowhere to put
                    // an earlier one. `vfio_mig_get_next_state()` never plans such a path.
                    return Err(EINVAL);
                }
                file = Some(f);
            }
        }
        Ok(file)
    }

    /// Performs one single-step arc `inner.state -> next`.
    fn step(dev: &D::Ref, inner: &mut Inner<D>, next: MigState) -> Result<Option<ARef<File>>> {
        let arc = Step::of(inner.state, next).ok_or(EINVAL)?;
        match arc {
            // The device has no DMA, peer-to-peer or otherwise, and no interrupts, and it does not
            // change its own state: there is nothing to quiesce, stop or start.
            Step::QuiesceP2p | Step::ResumeP2p | Step::Stop | Step::Start => Ok(None),
            Step::BeginStopCopy => {
                let (saving, file) = SaveFile::create(dev)?;
                // INVARIANT: `saving` is set as the state becomes STOP_COPY.
                inner.saving = Some(saving);
                Ok(Some(file))
            }
            Step::EndStopCopy => {
                if let Some(f) = inner.saving.take() {
                    f.disable();
                }
                Ok(None)
            }
            Step::BeginResume => {
                let (resuming, file) = ResumeFile::create(dev)?;
                // INVARIANT: `resuming` is set as the state becomes RESUMING.
                inner.resuming = Some(resuming);
                Ok(Some(file))
            }
            Step::FinishResume => {
                let resuming = inner.resuming.as_ref().ok_or(EINVAL)?;
                // Validates the whole stream, then programs the registers; on failure the device
                // stays in RESUMING with its registers untouched.
                resuming.finish()?;
                if let Some(f) = inner.resuming.take() {
                    f.disable();
                }
                Ok(None)
            }
            // PRE_COPY is not advertised, so the core never plans these arcs.
            Step::BeginPreCopy | Step::EndPreCopy | Step::PreCopyToStopCopy => Err(EINVAL),
        }
    }
}

/// Access for the KUnit tests (`tests/kunit/migration.rs`) to the data files the state machine
/// opened: the files [`Migration::set_state`] hands out cannot be read or written from kernel
/// space, so the tests drive the driver objects behind them.
#[cfg(CONFIG_KUNIT = "y")]
impl<D: MigDevice> Migration<D> {
    /// The open saving file: `Some` exactly in STOP_COPY.
    pub(crate) fn saving_file(&self) -> Option<Arc<SaveFile<D>>> {
        let mut guard = self.lock();
        guard.inner().ok()?.saving.clone()
    }

    /// The open resuming file: `Some` exactly in RESUMING.
    pub(crate) fn resuming_file(&self) -> Option<Arc<ResumeFile<D>>> {
        let mut guard = self.lock();
        guard.inner().ok()?.resuming.clone()
    }
}
