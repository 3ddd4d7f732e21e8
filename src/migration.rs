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
//! PRE_COPY, PRE_COPY_P2P and STOP_COPY share one saving file: `RUNNING -> PRE_COPY` and
//! `RUNNING_P2P -> PRE_COPY_P2P` open a pre-copy [`save::SaveFile`] and arm the device's dirty
//! tracker; `PRE_COPY <-> PRE_COPY_P2P` keep it; `PRE_COPY(_P2P) -> STOP_COPY` switches the same
//! file to stop-copy and returns no new file; `PRE_COPY -> RUNNING` and `PRE_COPY_P2P ->
//! RUNNING_P2P` end the session (disable the file, disarm the tracker), as a reset and a close
//! do.
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
//! # DMA logging
//!
//! [`dma_log`]: the `VFIO_DEVICE_FEATURE_DMA_LOGGING_*` state of a device that cannot write
//! memory, whose log is always empty. It is ended by a close and kept across a reset.
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
            Full,
            Relaxed, //
        },
        barrier::smp_mb,
        lock::{
            mutex::MutexBackend,
            Guard, //
        },
        Arc,
        Mutex,
        SpinLock, //
    }, //
};

use crate::{
    stream::{
        stream_len,
        Crc32c,
        DeviceIdentity, //
    },
    vfio::{
        crc::KernelCrc32c,
        dirty::PollTable,
        task, //
    },
};

pub(crate) mod dma_log;
pub(crate) mod resume;
pub(crate) mod save;
pub(crate) mod state;

use dma_log::DmaLog;
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

/// The stream's CRC-32C, computed by the kernel's `crc32c()`.
impl Crc32c for KernelCrc32c {
    fn update(&self, crc: u32, data: &[u8]) -> u32 {
        self.extend(crc, data)
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

/// A device's session counter: each open, close and reset starts a new session.
///
/// A data file belongs to the session it was created in. Its device accesses check, under the
/// locks of [`crate::vfio::device::Device::with_io`], that its session is still the current
/// one: a reset changes the session with `memory_lock` held, a close before the I/O gate closes,
/// so a transfer that passed its checks before the reset or the close and then waited (in a copy
/// from or to userspace, which userspace can make last as long as it likes) never reaches the
/// device of the next session.
pub(crate) struct Session(Atomic<u64>);

impl Session {
    fn new() -> Self {
        Self(Atomic::new(0))
    }

    /// The current session.
    pub(crate) fn current(&self) -> u64 {
        self.0.load(Acquire)
    }

    /// Ends the current session and starts the next one. Does not wait.
    fn next(&self) {
        self.0.fetch_add(1, Full);
    }
}

/// What every data file has besides its own mutex: its session, whether it is disabled, and its
/// place in the live count.
///
/// Leaving the data state, a reset and a close disable a file; reads and writes then fail with
/// `ENODEV`. The flag is an atomic, not part of the file's mutex-protected state: a reset
/// disables the file with vfio-pci-core's `memory_lock` held, while a read or write holds the
/// file's mutex and then takes `memory_lock` to reach the device; taking the mutex to disable
/// would close that cycle. A transfer in progress sees the flag at its next record, and every
/// device access checks it again, with the session, under the device's locks ([`Self::check`]).
///
/// The memory a file allocates for its transfers ([`Reclaim`]) is allocated on first use,
/// charged to the caller's memory cgroup, and given back as soon as the file is disabled, even
/// if userspace keeps the file open: by `disable` if the file's mutex is free, otherwise by the
/// transfer holding it, as it unlocks ([`IoGuard`]).
pub(crate) struct FileState {
    disabled: Atomic<bool>,
    /// The session the file belongs to.
    session: u64,
    _live: Live,
}

impl FileState {
    /// An enabled file of session `session`.
    pub(crate) fn new(session: u64) -> Self {
        Self {
            disabled: Atomic::new(false),
            session,
            _live: Live::new(&LIVE_FILES),
        }
    }

    /// Ends the file: later transfers fail with `ENODEV`, and its transfer memory is freed now or
    /// by the transfer in progress when it unlocks. Does not wait.
    pub(crate) fn disable<I: Reclaim>(&self, inner: &Mutex<I>) {
        self.disabled.store(true, Relaxed);
        // Pairs with the barrier in `IoGuard::drop`: either the lock is seen free here, or the
        // holder sees the flag after it unlocked.
        smp_mb(Full);
        if let Some(mut guard) = inner.try_lock() {
            guard.reclaim();
        }
    }

    /// Whether the file was disabled.
    fn is_disabled(&self) -> bool {
        self.disabled.load(Acquire)
    }

    /// `ENODEV` once the file is disabled or its session ended.
    pub(crate) fn check(&self, session: &Session) -> Result {
        if self.is_disabled() || session.current() != self.session {
            Err(ENODEV)
        } else {
            Ok(())
        }
    }

    /// [`Self::check`] against the current session of `dev`: what every transfer and device
    /// access of a file of `dev` checks.
    pub(crate) fn check_on<D: MigDevice>(&self, dev: &D) -> Result {
        self.check(dev.migration().session())
    }

    /// The poll mask: `ready` while the file is enabled, an error once it is disabled.
    pub(crate) fn poll_mask(&self, session: &Session, ready: u32) -> u32 {
        if self.check(session).is_err() {
            crate::vfio::data_file::poll_mask::ERROR
        } else {
            ready
        }
    }

    /// Locks the file's state for a read or a write: with `nonblock` (`O_NONBLOCK`), `EAGAIN`
    /// instead of waiting for another reader or writer.
    pub(crate) fn lock<'a, I: Reclaim>(
        &'a self,
        inner: &'a Mutex<I>,
        nonblock: bool,
    ) -> Result<IoGuard<'a, I>> {
        let guard = if nonblock {
            inner.try_lock().ok_or(EAGAIN)?
        } else {
            inner.lock()
        };
        Ok(IoGuard {
            state: self,
            inner,
            guard: Some(guard),
        })
    }
}

/// A data file's state under its mutex, which holds memory that a disabled file gives back.
pub(crate) trait Reclaim: Unpin {
    /// Frees the transfer memory; the file is disabled and never transfers again.
    fn reclaim(&mut self);
}

/// A data file's state, locked for a read or a write ([`FileState::lock`]).
///
/// On unlock, a file that was disabled meanwhile gives its transfer memory back.
pub(crate) struct IoGuard<'a, I: Reclaim> {
    state: &'a FileState,
    inner: &'a Mutex<I>,
    guard: Option<Guard<'a, I, MutexBackend>>,
}

impl<I: Reclaim> IoGuard<'_, I> {
    /// The locked state.
    pub(crate) fn get(&mut self) -> Result<&mut I> {
        // The guard is only taken in `drop`.
        self.guard.as_deref_mut().ok_or(EINVAL)
    }
}

impl<I: Reclaim> Drop for IoGuard<'_, I> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            if self.state.is_disabled() {
                guard.reclaim();
            }
        }
        // Pairs with the barrier in `FileState::disable`: a disable whose `try_lock` found the
        // mutex still held is seen here.
        smp_mb(Full);
        if self.state.is_disabled() {
            if let Some(mut guard) = self.inner.try_lock() {
                guard.reclaim();
            }
        }
    }
}

/// Stops a long transfer: `Some` with what to return once the current task has a fatal signal
/// pending (`total` bytes moved so far, or `EINTR`). Otherwise yields the CPU if it is due.
fn stop_for_signal(total: usize) -> Option<Result<usize>> {
    if task::fatal_signal_pending() {
        return Some(if total > 0 { Ok(total) } else { Err(EINTR) });
    }
    task::cond_resched();
    None
}

/// The numbers of live migration states and data files.
pub(crate) fn live_objects() -> (i32, i32) {
    (LIVE_STATES.load(Relaxed), LIVE_FILES.load(Relaxed))
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

    /// What a stream of this device carries and what a destination must match. Read from the
    /// device once, when it is opened ([`Migration::open`]).
    fn identity(&self) -> Result<DeviceIdentity>;

    /// Length of the device's register blob.
    fn regs_len(&self) -> usize;

    // Every access to the device takes `valid`, which it calls right before it touches the
    // device, under the locks that make its answer true: a data file checks there that its
    // session is still current (see [`Session`]). If `valid` fails, the device is not touched.

    /// Reads the registers into `out` (`regs_len()` bytes).
    fn save_regs(&self, valid: impl FnOnce() -> Result, out: &mut [u8]) -> Result;

    /// Validates a register blob without touching the device.
    fn check_regs(&self, regs: &[u8]) -> Result;

    /// Programs the registers from a validated blob.
    fn restore_regs(&self, valid: impl FnOnce() -> Result, regs: &[u8]) -> Result;

    /// Reads device memory at `offset`.
    fn read_memory(&self, valid: impl FnOnce() -> Result, offset: u64, out: &mut [u8]) -> Result;

    /// Writes device memory at `offset`.
    fn write_memory(&self, valid: impl FnOnce() -> Result, offset: u64, data: &[u8]) -> Result;

    /// The next single step from `cur` towards `new` (`vfio_mig_get_next_state()`).
    fn next_step(&self, cur: MigState, new: u32) -> Result<MigState>;

    // The dirty tracker of PRE_COPY: one bit per page of
    // [`PAGE_SIZE`](crate::stream::precopy::PAGE_SIZE) bytes of device memory, set when a writer
    // changes the page while tracking is armed, cleared by the sender ([`Self::take_and_read`]).
    // The protocol code only needs this contract, not the mechanism (write faults on the mapped
    // BAR, region writes):
    //
    // - A write to device memory while tracking is armed sets the bits of the pages it changes
    //   no later than the write becomes visible to `take_and_read`.
    // - `take_and_read` clears the bits and then reads the pages atomically with respect to
    //   writers: a write that the read does not see sets its bit again afterwards, so no change
    //   is ever lost between a clear and the read.
    // - Until a page is first taken after arming, its bit means nothing: the initial pass of a
    //   pre-copy stream takes every page, and the stream only looks at the bits of pages it sent.
    // - `disarm_tracking` is called from the reset path, under vfio-pci-core's `memory_lock`: it
    //   uses atomics only and never sleeps on a lock that a writer or a reader holds.

    /// Starts tracking writes to device memory. `valid` is checked as for a device access.
    fn arm_tracking(&self, valid: impl FnOnce() -> Result) -> Result;

    /// Stops tracking writes. Atomics only (see above); calling it while not armed does nothing.
    fn disarm_tracking(&self);

    /// Copies the dirty bitmap into `out`, one bit per page, page 0 in bit 0 of `out[0]`;
    /// `out` has [`words`](crate::stream::precopy::words) of the memory size words. Touches no
    /// device: `MIG_DATA_SIZE` and `PRECOPY_INFO` read it while the guest runs.
    fn dirty_snapshot(&self, out: &mut [u64]) -> Result;

    /// Clears the dirty bits of the `pages` pages from page `first_page` on and reads
    /// `out.len()` bytes of device memory from the start of `first_page` (at most those pages,
    /// the last one of the memory maybe partial), atomically with respect to writers (see
    /// above). `valid` is checked as for a device access; if it fails, or the read fails,
    /// nothing is cleared. At most [`MAX_RUN_PAGES`](crate::stream::precopy::MAX_RUN_PAGES)
    /// pages.
    ///
    /// With `rearm` (PRE_COPY), a write after the read must set the bits again. Without it
    /// (STOP_COPY: the device is stopped, and the stream sends no page twice any more), the
    /// device may skip what makes later writes visible (for the real device: zapping the pages'
    /// mappings), and only clears the bits.
    fn take_and_read(
        &self,
        valid: impl FnOnce() -> Result,
        first_page: u64,
        pages: u64,
        rearm: bool,
        out: &mut [u8],
    ) -> Result;

    /// Adds a `poll()` caller of a data file to the waiters that [`Self::wake_pollers`] and a
    /// page becoming dirty while tracking is armed wake.
    fn poll_wait(&self, table: &PollTable<'_>);

    /// Wakes the `poll()` callers of the device's data files: a file changed state. Takes no
    /// sleeping lock: the reset path calls it.
    fn wake_pollers(&self);

    /// Whether userspace opted in to `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2`: the `flags` of
    /// `VFIO_MIG_GET_PRECOPY_INFO` are then an output.
    fn precopy_info_v2(&self) -> bool;
}

/// The state under the state mutex.
///
/// A data file holds a reference to the device (`MigDevice::Ref`) and the device's state holds
/// the file: that cycle is broken whenever the state leaves the saving states (STOP_COPY,
/// PRE_COPY, PRE_COPY_P2P) or RESUMING, on reset, and
/// at the latest when the device is closed, which the VFIO core does before the device can be
/// unregistered. A file userspace keeps open after that keeps only the device's memory alive.
struct Inner<D: MigDevice> {
    /// The current state: the last step that completed.
    state: MigState,
    /// The open saving file, while in STOP_COPY, PRE_COPY or PRE_COPY_P2P.
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
/// `inner.saving` is `Some` exactly in STOP_COPY, PRE_COPY and PRE_COPY_P2P, and
/// `inner.resuming` exactly in RESUMING.
#[pin_data]
pub(crate) struct Migration<D: MigDevice> {
    #[pin]
    inner: Mutex<Inner<D>>,
    /// A reset happened and the state mutex holder must apply it (`deferred_reset`).
    #[pin]
    deferred_reset: SpinLock<bool>,
    /// The device's identity, read when it was opened; `None` before.
    #[pin]
    identity: SpinLock<Option<DeviceIdentity>>,
    /// The session data files belong to.
    session: Session,
    /// DMA logging: started and stopped by userspace, ended by a close, kept across a reset.
    dma_log: DmaLog,
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
            identity <- new_spinlock!(None, "qemu_vfio_pci::identity"),
            session: Session::new(),
            dma_log: DmaLog::new(),
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

    /// The device was opened: it starts in RUNNING, in a new session. Reads the device's
    /// identity, so that `MIG_DATA_SIZE` and new data files need no device access.
    pub(crate) fn open(dev: &D) -> Result {
        let identity = dev.identity()?;
        let mig = dev.migration();
        *mig.identity.lock() = Some(identity);
        mig.session.next();
        if let Ok(inner) = mig.lock().inner() {
            Self::apply_reset(inner);
        }
        Ok(())
    }

    /// The device is being closed: its session ends, data files reach their end, the state
    /// returns to RUNNING, DMA logging stops.
    pub(crate) fn close(&self) {
        self.session.next();
        if let Ok(inner) = self.lock().inner() {
            Self::apply_reset(inner);
        }
        self.dma_log.stop();
    }

    /// The device's identity, known from its open.
    fn identity(&self) -> Result<DeviceIdentity> {
        (*self.identity.lock()).ok_or(ENODEV)
    }

    /// The device's session (see [`Session`]).
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// The device's DMA logging state.
    pub(crate) fn dma_log(&self) -> &DmaLog {
        &self.dma_log
    }

    /// The device was reset (`pci_error_handlers.reset_done`); see the module docs.
    ///
    /// The session ends at once, so that no transfer of a data file of the old session reaches
    /// the device from now on; the state machine follows when the state mutex is free. DMA
    /// logging stays as it was.
    pub(crate) fn reset_done(&self) {
        self.session.next();
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
    /// Touches no device: QEMU asks while the guest runs.
    ///
    /// In PRE_COPY and PRE_COPY_P2P that is what the saving file would still yield if STOP_COPY
    /// were entered now ([`SaveFile::stop_copy_size`]), and in a STOP_COPY that followed them what
    /// it still yields.
    pub(crate) fn data_size(dev: &D) -> Result<usize> {
        let saving = {
            let mut guard = dev.migration().lock();
            let inner = guard.inner()?;
            match inner.state {
                MigState::PreCopy | MigState::PreCopyP2p | MigState::StopCopy => {
                    inner.saving.clone().filter(|f| f.is_precopy())
                }
                _ => None,
            }
        };
        if let Some(file) = saving {
            return usize::try_from(file.stop_copy_size()?).map_err(|_| EOVERFLOW);
        }
        let identity = dev.migration().identity()?;
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
                let (saving, file) = SaveFile::create(dev, dev.migration().identity()?)?;
                // INVARIANT: `saving` is set as the state becomes STOP_COPY.
                inner.saving = Some(saving);
                Ok(Some(file))
            }
            Step::EndStopCopy | Step::EndPreCopy => {
                // A pre-copy file disarms the tracker as it is disabled.
                if let Some(f) = inner.saving.take() {
                    f.disable();
                }
                Ok(None)
            }
            Step::BeginPreCopy => {
                let (saving, file) = SaveFile::create_precopy(dev, dev.migration().identity()?)?;
                if let Err(e) = saving.arm() {
                    saving.disable();
                    return Err(e);
                }
                // INVARIANT: `saving` is set as the state becomes PRE_COPY(_P2P).
                inner.saving = Some(saving);
                Ok(Some(file))
            }
            Step::PreCopyToStopCopy => {
                // Nothing to stop (see above); the same file goes on, and no new one is handed
                // out. The state mutex is held: it comes before the file's.
                inner.saving.as_ref().ok_or(EINVAL)?.enter_stop_copy()?;
                Ok(None)
            }
            Step::BeginResume => {
                let (resuming, file) = ResumeFile::create(dev, dev.migration().identity()?)?;
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
        }
    }
}

/// Access for the KUnit tests (`tests/kunit/migration.rs`) to the data files the state machine
/// opened: the files [`Migration::set_state`] hands out cannot be read or written from kernel
/// space, so the tests drive the driver objects behind them.
#[cfg(CONFIG_KUNIT = "y")]
impl<D: MigDevice> Migration<D> {
    /// The open saving file: `Some` exactly in STOP_COPY, PRE_COPY and PRE_COPY_P2P.
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
