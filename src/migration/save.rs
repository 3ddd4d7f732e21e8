// SPDX-License-Identifier: GPL-2.0

//! The saving data file: streams the complete device state in STOP_COPY, or the changing state
//! in PRE_COPY and then the rest in STOP_COPY.
//!
//! The stream is produced lazily, one record at a time, into a staging buffer of one record
//! ([`SCRATCH_LEN`], about 256 KiB) from which `read()` copies to userspace: memory use is bounded
//! by a chunk, whatever the size of the device memory. The buffer is allocated at the first read,
//! charged to the reader's memory cgroup, and freed once the file is disabled (see
//! [`FileState`]). Device memory is read while the device is stopped, so the stream is a
//! consistent snapshot. `read()` accepts any length and returns short counts at record
//! boundaries only when the stream ends; the end of the data is `read() == 0`.
//!
//! A file opened by `STOP -> STOP_COPY` writes the plain stop-copy stream with
//! [`Encoder::next_record`]. A file opened by `RUNNING -> PRE_COPY` (a *pre-copy* file) follows a
//! [`PreCopyPlan`] over the device's dirty bitmap ([`MigDevice::dirty_snapshot`],
//! [`MigDevice::take_and_read`]): HEADER, the initial pass, then dirty runs as pages are written.
//! Its `read()` never waits for data: at the temporary end of the stream (nothing initial, nothing
//! dirty, nothing staged) a read that copied nothing fails with `ENOMSG`. `PRE_COPY_P2P ->
//! STOP_COPY` switches the same file to stop-copy ([`SaveFile::enter_stop_copy`]): the rest of
//! the initial pass, one lap of dirty runs, DEVICE_REGS and END, then `read() == 0` for ever.
//! [`SaveFile::precopy_info`] and [`SaveFile::stop_copy_size`] count the bytes still to come,
//! with the unread part of the staged record.
//!
//! Every device access checks, under the device's locks, that the file's session is still the
//! current one: a read that was waiting in `copy_to_user()` while the device was reset or closed
//! (and maybe opened again by someone else) cannot read the next session's device state into
//! this stream.

use kernel::{
    fs::File,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        ArcBorrow,
        Mutex, //
    },
    uaccess::{
        UserSliceReader,
        UserSliceWriter, //
    },
};

use crate::{
    stream::{
        precopy::{
            words,
            Phase,
            PreCopyPlan,
            PAGE_SIZE, //
        },
        DeviceIdentity,
        EncodeError,
        Encoder,
        Source,
        SourceError,
        SCRATCH_LEN, //
    },
    vfio::{
        crc::KernelCrc32c,
        data_file::{
            self,
            poll_mask,
            precopy_info_ioctl,
            DataFile,
            Direction,
            MIG_GET_PRECOPY_INFO, //
        },
        dirty::PollTable,
    },
};

use super::{
    errno,
    state::MigState,
    stop_for_signal,
    ByteSink,
    FileState,
    MigDevice,
    Reclaim, //
};

/// The state of a saving file, under its mutex.
///
/// # Invariants
///
/// `pos <= filled`, and `filled <= buf.len()` when `buf` is allocated (`filled == 0` when it is
/// not); `buf[pos..filled]` are the stream bytes not yet read.
struct SaveInner {
    encoder: Encoder,
    /// One staged record, allocated at the first read.
    buf: Option<KVVec<u8>>,
    pos: usize,
    filled: usize,
    /// The encoder produced the END record and it was staged.
    done: bool,
    /// The plan of a pre-copy file; `None` for a plain stop-copy file.
    precopy: Option<PreCopy>,
}

/// The pre-copy part of a saving file's state.
struct PreCopy {
    plan: PreCopyPlan,
    /// Room for a snapshot of the dirty bitmap, [`words`] of the memory size.
    bits: KVVec<u64>,
    /// Length of the register blob.
    regs_len: u32,
    /// Whether the staged record belongs to the initial part (HEADER or the initial pass): its
    /// unread bytes count as initial bytes, else as dirty bytes.
    staged_initial: bool,
    /// A record failed after its pages' dirty bits were cleared: the stream lost data and is
    /// given up (`EIO`).
    failed: bool,
}

impl Reclaim for SaveInner {
    fn reclaim(&mut self) {
        // INVARIANT: Nothing is staged any more.
        self.buf = None;
        self.pos = 0;
        self.filled = 0;
        if let Some(pc) = self.precopy.as_mut() {
            pc.bits = KVVec::new();
        }
    }
}

impl SaveInner {
    /// The bytes of the staged record not read yet.
    fn unread(&self) -> u64 {
        // CAST: A record length fits in 64 bits.
        self.filled.saturating_sub(self.pos) as u64
    }
}

/// What staging the next record gave.
enum Staged {
    /// A record of this many bytes.
    Record(usize),
    /// The permanent end of the stream.
    End,
    /// PRE_COPY: nothing to send now (the temporary end of the stream).
    Empty,
}

/// A saving data file.
#[pin_data]
pub(crate) struct SaveFile<D: MigDevice> {
    dev: D::Ref,
    /// A pre-copy file: it armed the device's dirty tracker and disarms it when disabled.
    tracked: bool,
    /// Disabled when the FSM leaves the data state, on reset and on close.
    state: FileState,
    #[pin]
    inner: Mutex<SaveInner>,
}

/// The device as the encoder's [`Source`], for the file `state`.
struct DevSource<'a, D: MigDevice> {
    dev: &'a D,
    state: &'a FileState,
}

impl<D: MigDevice> DevSource<'_, D> {
    /// The check every device access makes under the device's locks.
    fn valid(&self) -> impl FnOnce() -> Result + '_ {
        || self.state.check_on(self.dev)
    }
}

/// The device as the encoder's [`Source`] for a pre-copy file: reading memory takes the pages'
/// dirty bits ([`MigDevice::take_and_read`]).
struct TrackedSource<'a, D: MigDevice> {
    dev: &'a D,
    state: &'a FileState,
    /// Whether a memory read cleared dirty bits.
    took: bool,
    /// Whether a page sent must be re-armed: in PRE_COPY, not in STOP_COPY.
    rearm: bool,
}

impl<D: MigDevice> Source for TrackedSource<'_, D> {
    fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        self.dev
            .save_regs(|| self.state.check_on(self.dev), out)
            .map_err(|e| SourceError(-e.to_errno()))
    }

    fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError> {
        // The plan's MEMORY records start at page boundaries and cover whole pages, the last one
        // of the memory maybe partial.
        let einval = SourceError(-EINVAL.to_errno());
        if offset % PAGE_SIZE != 0 {
            return Err(einval);
        }
        let pages = u64::try_from(out.len())
            .map_err(|_| einval)?
            .div_ceil(PAGE_SIZE);
        let (dev, state) = (self.dev, self.state);
        dev.take_and_read(
            || state.check_on(dev),
            offset / PAGE_SIZE,
            pages,
            self.rearm,
            out,
        )
        .map_err(|e| SourceError(-e.to_errno()))?;
        self.took = true;
        Ok(())
    }
}

impl<D: MigDevice> Source for DevSource<'_, D> {
    fn regs(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        self.dev
            .save_regs(self.valid(), out)
            .map_err(|e| SourceError(-e.to_errno()))
    }

    fn memory(&mut self, offset: u64, out: &mut [u8]) -> Result<(), SourceError> {
        self.dev
            .read_memory(self.valid(), offset, out)
            .map_err(|e| SourceError(-e.to_errno()))
    }
}

impl<D: MigDevice> SaveFile<D> {
    /// Starts saving `dev`, whose identity is `identity`, in STOP_COPY: returns the file's
    /// state and the file for userspace.
    pub(crate) fn create(
        dev: &D::Ref,
        identity: DeviceIdentity,
    ) -> Result<(Arc<Self>, ARef<File>)> {
        Self::new_file(dev, identity, false)
    }

    /// Starts saving `dev`, whose identity is `identity`, in PRE_COPY: returns the file's state
    /// and the file for userspace. The caller arms the tracker ([`Self::arm`]) before it hands
    /// out the file.
    pub(crate) fn create_precopy(
        dev: &D::Ref,
        identity: DeviceIdentity,
    ) -> Result<(Arc<Self>, ARef<File>)> {
        Self::new_file(dev, identity, true)
    }

    fn new_file(
        dev: &D::Ref,
        identity: DeviceIdentity,
        tracked: bool,
    ) -> Result<(Arc<Self>, ARef<File>)> {
        let regs_len = u32::try_from(dev.regs_len()).map_err(|_| EINVAL)?;
        let session = dev.migration().session().current();
        let precopy = if tracked {
            Some(PreCopy {
                plan: PreCopyPlan::new(identity.mem_size),
                bits: KVVec::from_elem(0u64, words(identity.mem_size), GFP_KERNEL_ACCOUNT)?,
                regs_len,
                staged_initial: false,
                failed: false,
            })
        } else {
            None
        };
        // INVARIANT: Nothing is staged: `pos == filled == 0`, no buffer.
        let this = Arc::pin_init(
            pin_init!(Self {
                dev: dev.clone(),
                tracked,
                state: FileState::new(session),
                inner <- new_mutex!(SaveInner {
                    encoder: Encoder::new(identity, regs_len),
                    buf: None,
                    pos: 0,
                    filled: 0,
                    done: false,
                    precopy,
                }, "qemu_vfio_pci::save_file"),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let file = data_file::create(c"qemu_vfio_pci_save", this.clone(), Direction::Save)?;
        Ok((this, file))
    }

    /// Whether this is a pre-copy file (opened by `RUNNING -> PRE_COPY`).
    pub(crate) fn is_precopy(&self) -> bool {
        self.tracked
    }

    /// Arms the device's dirty tracker for a pre-copy file.
    pub(crate) fn arm(&self) -> Result {
        if !self.tracked {
            return Err(EINVAL);
        }
        self.dev.arm_tracking(|| self.state.check_on(&*self.dev))
    }

    /// `PRE_COPY(_P2P) -> STOP_COPY`: the same stream goes on to its end (see the module docs).
    /// Takes the file's mutex: the caller holds the state mutex, which comes first.
    pub(crate) fn enter_stop_copy(&self) -> Result {
        {
            let mut guard = self.state.lock(&self.inner, false)?;
            let inner = guard.get()?;
            inner.precopy.as_mut().ok_or(EINVAL)?.plan.enter_stop_copy();
        }
        // The stream is readable for good now: wake a poller that waits for dirty pages.
        self.dev.wake_pollers();
        Ok(())
    }

    /// Stages the next record of a pre-copy stream into `buf`.
    fn stage_precopy(
        &self,
        pc: &mut PreCopy,
        encoder: &mut Encoder,
        buf: &mut [u8],
    ) -> Result<Staged, EncodeError> {
        let eio = EncodeError::Source(SourceError(-EIO.to_errno()));
        if pc.failed {
            return Err(eio);
        }
        self.dev
            .dirty_snapshot(&mut pc.bits)
            .map_err(|e| EncodeError::Source(SourceError(-e.to_errno())))?;
        let Some(step) = pc.plan.next(&pc.bits)? else {
            return Ok(if pc.plan.is_stop_copy() {
                Staged::End
            } else {
                Staged::Empty
            });
        };
        let initial = matches!(pc.plan.phase(), Phase::Header | Phase::Initial { .. });
        let mut source = TrackedSource {
            dev: &*self.dev,
            state: &self.state,
            took: false,
            rearm: !pc.plan.is_stop_copy(),
        };
        match step.encode(encoder, &mut source, &KernelCrc32c, buf) {
            Ok(n) => {
                if pc.plan.advance(step).is_err() {
                    // The record was counted by the encoder but not by the plan.
                    pc.failed = true;
                    return Err(eio);
                }
                pc.staged_initial = initial;
                Ok(Staged::Record(n))
            }
            Err(e) => {
                // The plan does not remember pages whose bits were cleared.
                if source.took {
                    pc.failed = true;
                }
                Err(e)
            }
        }
    }

    /// Runs `f` on the pre-copy state, its bitmap snapshot just taken, and the unread bytes of
    /// the staged record, under the file's mutex: what the byte counts of a pre-copy file are
    /// computed from. `ENODEV` once disabled, `EINVAL` for a plain stop-copy file.
    fn with_snapshot<R>(&self, f: impl FnOnce(&PreCopy, u64) -> Result<R>) -> Result<R> {
        self.state.check_on(&*self.dev)?;
        let mut guard = self.state.lock(&self.inner, false)?;
        let inner = guard.get()?;
        let unread = inner.unread();
        let pc = inner.precopy.as_mut().ok_or(EINVAL)?;
        self.dev.dirty_snapshot(&mut pc.bits)?;
        f(pc, unread)
    }

    /// `VFIO_MIG_GET_PRECOPY_INFO`: `(initial_bytes, dirty_bytes)`, the stream bytes still to
    /// come of the initial part and of the dirty runs, with the unread part of the staged record.
    ///
    /// `EINVAL` unless the device is in PRE_COPY or PRE_COPY_P2P; `ENODEV` once the file is
    /// disabled. Takes the state mutex, then the file's mutex.
    pub(crate) fn precopy_info(&self) -> Result<(u64, u64)> {
        let mig = self.dev.migration();
        let mut state = mig.lock();
        if !matches!(
            state.inner()?.state,
            MigState::PreCopy | MigState::PreCopyP2p
        ) {
            return Err(EINVAL);
        }
        self.with_snapshot(|pc, unread| {
            let overflow = |_| EOVERFLOW;
            let initial = pc.plan.initial_bytes().map_err(overflow)?;
            let dirty = pc.plan.dirty_bytes(&pc.bits).map_err(overflow)?;
            Ok(if pc.staged_initial {
                (initial.checked_add(unread).ok_or(EOVERFLOW)?, dirty)
            } else {
                (initial, dirty.checked_add(unread).ok_or(EOVERFLOW)?)
            })
        })
    }

    /// `MIG_DATA_SIZE` of a pre-copy file: the bytes a STOP_COPY entered now would still yield,
    /// with the unread part of the staged record. Touches no device. `ENODEV` once disabled.
    pub(crate) fn stop_copy_size(&self) -> Result<u64> {
        self.with_snapshot(|pc, unread| {
            pc.plan
                .stop_copy_bytes(&pc.bits, pc.regs_len)
                .ok()
                .and_then(|n| n.checked_add(unread))
                .ok_or(EOVERFLOW)
        })
    }

    /// The poll mask: a pre-copy file in PRE_COPY is readable only when a read would return
    /// data; otherwise, data or the permanent end of the stream is always available at once.
    ///
    /// A poller is woken when a page becomes dirty (by the device's tracker), when the file
    /// enters STOP_COPY and when it is disabled.
    pub(crate) fn poll_mask(&self) -> u32 {
        let session = self.dev.migration().session();
        let ready = if self.has_data() {
            poll_mask::READABLE
        } else {
            0
        };
        self.state.poll_mask(session, ready)
    }

    /// Whether a read would not fail with `ENOMSG`.
    fn has_data(&self) -> bool {
        // A busy file has a reader: report it readable rather than wait.
        let Ok(mut guard) = self.state.lock(&self.inner, true) else {
            return true;
        };
        let Ok(inner) = guard.get() else {
            return true;
        };
        let unread = inner.unread();
        match inner.precopy.as_mut() {
            None => true,
            Some(pc) if pc.plan.is_stop_copy() || pc.failed || unread > 0 => true,
            Some(pc) => match self.dev.dirty_snapshot(&mut pc.bits) {
                Ok(()) => !matches!(pc.plan.next(&pc.bits), Ok(None)),
                Err(_) => true,
            },
        }
    }

    /// `read()`: copies up to `out.room()` stream bytes to `out`; `Ok(0)` at the end of the
    /// stream. With `nonblock`, `EAGAIN` instead of waiting for another reader.
    pub(crate) fn read_into(&self, out: &mut impl ByteSink, nonblock: bool) -> Result<usize> {
        let mut guard = self.state.lock(&self.inner, nonblock)?;
        let inner = guard.get()?;
        let mut total = 0;
        while out.room() > 0 {
            if let Err(e) = self.state.check_on(&*self.dev) {
                return if total > 0 { Ok(total) } else { Err(e) };
            }
            if let Some(r) = stop_for_signal(total) {
                return r;
            }
            if inner.pos == inner.filled {
                if inner.done {
                    break;
                }
                if inner.buf.is_none() {
                    inner.buf = Some(KVVec::from_elem(0u8, SCRATCH_LEN, GFP_KERNEL_ACCOUNT)?);
                }
                let buf = inner.buf.as_mut().ok_or(EINVAL)?;
                let staged = match inner.precopy.as_mut() {
                    Some(pc) => self.stage_precopy(pc, &mut inner.encoder, buf),
                    None => {
                        let mut source = DevSource {
                            dev: &*self.dev,
                            state: &self.state,
                        };
                        inner
                            .encoder
                            .next_record(&mut source, &KernelCrc32c, buf)
                            .map(|n| n.map_or(Staged::End, Staged::Record))
                    }
                };
                match staged {
                    // INVARIANT: The encoder wrote `n <= buf.len()` bytes.
                    Ok(Staged::Record(n)) => {
                        inner.pos = 0;
                        inner.filled = n;
                    }
                    Ok(Staged::End) => {
                        inner.done = true;
                        break;
                    }
                    // PRE_COPY's temporary end of the stream: a short count, or `ENOMSG` for a
                    // read that copied nothing. Never in STOP_COPY.
                    Ok(Staged::Empty) if total > 0 => break,
                    Ok(Staged::Empty) => return Err(ENOMSG),
                    // Report what was read so far; the error (sticky in the encoder's source)
                    // comes with the next read.
                    Err(_) if total > 0 => break,
                    Err(e) => return Err(errno(e.errno_hint())),
                }
            }
            let n = out.room().min(inner.filled - inner.pos);
            let chunk = inner
                .buf
                .as_ref()
                .and_then(|b| b.get(inner.pos..inner.pos + n))
                .ok_or(EINVAL)?;
            match out.put(chunk) {
                Ok(()) => {}
                Err(_) if total > 0 => break,
                Err(e) => return Err(e),
            }
            inner.pos += n;
            total += n;
        }
        Ok(total)
    }

    /// Ends the file: later reads fail with `ENODEV`, and the staging buffer is freed; a
    /// pre-copy file disarms the dirty tracker. Atomics only, does not wait (see [`FileState`]
    /// and [`MigDevice::disarm_tracking`]): the reset path calls it.
    pub(crate) fn disable(&self) {
        self.state.disable(&self.inner);
        if self.tracked {
            self.dev.disarm_tracking();
        }
        self.dev.wake_pollers();
    }

    /// Whether the staging buffer is allocated (for the tests).
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn holds_buffer(&self) -> bool {
        self.inner.lock().buf.is_some()
    }
}

impl<D: MigDevice> DataFile for SaveFile<D> {
    fn read(this: ArcBorrow<'_, Self>, out: &mut UserSliceWriter, nonblock: bool) -> Result<usize> {
        this.read_into(out, nonblock)
    }

    fn write(
        _this: ArcBorrow<'_, Self>,
        _input: &mut UserSliceReader,
        _nonblock: bool,
    ) -> Result<usize> {
        // The VFS refuses writes to a read-only file first.
        Err(EBADF)
    }

    fn poll(this: ArcBorrow<'_, Self>, table: &PollTable<'_>) -> u32 {
        // Registered before the mask is computed, so that a page dirtied in between wakes it.
        this.dev.poll_wait(table);
        this.poll_mask()
    }

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            MIG_GET_PRECOPY_INFO => {
                precopy_info_ioctl(arg, this.dev.precopy_info_v2(), || this.precopy_info())
            }
            _ => Err(ENOTTY),
        }
    }
}
