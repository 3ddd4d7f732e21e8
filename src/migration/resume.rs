// SPDX-License-Identifier: GPL-2.0

//! The resuming data file: takes a device state in RESUMING and applies it at `RESUMING -> STOP`.
//!
//! `write()` accepts the stream cut at any byte boundary. Bytes go straight from userspace into
//! the decoder's one-record buffer ([`SCRATCH_LEN`], about 256 KiB, whatever the size of the device
//! memory), allocated at the first write, charged to the writer's memory cgroup and freed once the
//! file is disabled (see [`FileState`]).
//!
//! # Validated before it takes effect
//!
//! - A record reaches the device only once all of it arrived and its checksum, its bounds and
//!   its place in the stream were checked ([`crate::stream::decoder`]).
//! - MEMORY records are written to the device memory as they validate (the device is stopped, so
//!   nothing runs on them). Each access checks first, under the device's locks, that the file's
//!   session is still current: a write that waited in `copy_from_user()` while the device was
//!   reset or closed never reaches the device afterwards.
//! - The register blob is checked by the backend and kept; it is programmed only at
//!   `RESUMING -> STOP` ([`ResumeFile::finish`]), after the whole stream validated: END with
//!   matching record and byte counts, nothing after it, and MEMORY records that wrote every page
//!   of the device memory ([`Coverage`]), so that the destination never runs with memory the
//!   source did not send.
//! - A bad stream fails the write (and `RESUMING -> STOP`) with a clear errno and leaves the
//!   registers as they were; the device memory may hold part of the stream, and only a reset
//!   makes the device run again.

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
        Coverage,
        Decoder,
        DeviceIdentity,
        Header,
        Sink,
        SinkError,
        MAX_REGS_LEN,
        SCRATCH_LEN, //
    },
    vfio::{
        crc::KernelCrc32c,
        data_file::{
            self,
            poll_mask,
            DataFile,
            Direction, //
        },
        dirty::PollTable,
    },
};

use super::{
    errno,
    stop_for_signal,
    ByteSource,
    FileState,
    MigDevice,
    Reclaim, //
};

/// The memory a resuming file needs while it transfers.
struct Buffers {
    /// The decoder's one-record buffer.
    scratch: KVVec<u8>,
    /// One bit per page of device memory that MEMORY records wrote ([`Coverage`]).
    written: KVVec<u64>,
}

/// The state of a resuming file, under its mutex.
struct ResumeInner {
    decoder: Decoder,
    /// The pages written so far.
    coverage: Coverage,
    /// Allocated at the first write, freed once the file is disabled.
    buffers: Option<Buffers>,
    /// The validated register blob, applied by [`ResumeFile::finish`].
    regs: [u8; MAX_REGS_LEN],
    /// Length of `regs` once the register record arrived.
    regs_len: Option<usize>,
}

impl Reclaim for ResumeInner {
    fn reclaim(&mut self) {
        self.buffers = None;
    }
}

/// A resuming data file.
#[pin_data]
pub(crate) struct ResumeFile<D: MigDevice> {
    dev: D::Ref,
    /// Disabled when the FSM leaves the data state, on reset and on close.
    state: FileState,
    #[pin]
    inner: Mutex<ResumeInner>,
}

/// The device as the decoder's [`Sink`], for the file `state`.
struct DevSink<'a, D: MigDevice> {
    dev: &'a D,
    state: &'a FileState,
    regs: &'a mut [u8; MAX_REGS_LEN],
    regs_len: &'a mut Option<usize>,
    coverage: &'a mut Coverage,
    written: &'a mut [u64],
}

fn sink_error(e: Error) -> SinkError {
    SinkError(-e.to_errno())
}

impl<D: MigDevice> Sink for DevSink<'_, D> {
    fn header(&mut self, header: &Header) -> Result<(), SinkError> {
        // The decoder checked the device kind and memory size; the register layout must match too.
        if usize::try_from(header.regs_len).ok() != Some(self.dev.regs_len()) {
            return Err(sink_error(EINVAL));
        }
        Ok(())
    }

    fn regs(&mut self, regs: &[u8]) -> Result<(), SinkError> {
        self.dev.check_regs(regs).map_err(sink_error)?;
        let dst = self
            .regs
            .get_mut(..regs.len())
            .ok_or(sink_error(EMSGSIZE))?;
        dst.copy_from_slice(regs);
        *self.regs_len = Some(regs.len());
        Ok(())
    }

    fn memory(&mut self, offset: u64, data: &[u8]) -> Result<(), SinkError> {
        let (state, dev) = (self.state, self.dev);
        dev.write_memory(|| state.check_on(dev), offset, data)
            .map_err(sink_error)?;
        let len = u64::try_from(data.len()).map_err(|_| sink_error(EINVAL))?;
        // The decoder checked the bounds.
        self.coverage
            .mark(self.written, offset, len)
            .map_err(|_| sink_error(EINVAL))
    }

    fn end(&mut self) -> Result<(), SinkError> {
        // The whole device memory must have come from the stream.
        if !self.coverage.complete() {
            return Err(sink_error(ENODATA));
        }
        Ok(())
    }
}

impl<D: MigDevice> ResumeFile<D> {
    /// Starts resuming into `dev`, whose identity is `identity`: returns the file's state and the
    /// file for userspace.
    pub(crate) fn create(
        dev: &D::Ref,
        identity: DeviceIdentity,
    ) -> Result<(Arc<Self>, ARef<File>)> {
        let session = dev.migration().session().current();
        let this = Arc::pin_init(
            pin_init!(Self {
                dev: dev.clone(),
                state: FileState::new(session),
                inner <- new_mutex!(ResumeInner {
                    decoder: Decoder::new(identity),
                    coverage: Coverage::new(identity.mem_size),
                    buffers: None,
                    regs: [0; MAX_REGS_LEN],
                    regs_len: None,
                }, "qemu_vfio_pci::resume_file"),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let file = data_file::create(c"qemu_vfio_pci_resume", this.clone(), Direction::Resume)?;
        Ok((this, file))
    }

    /// Ends the file: later writes fail with `ENODEV`, and its buffers are freed. Does not wait
    /// (see [`FileState`]).
    pub(crate) fn disable(&self) {
        self.state.disable(&self.inner);
    }

    /// `write()`: consumes up to `input.left()` stream bytes. With `nonblock`, `EAGAIN` instead of
    /// waiting for another writer.
    pub(crate) fn write_from(&self, input: &mut impl ByteSource, nonblock: bool) -> Result<usize> {
        let mut guard = self.state.lock(&self.inner, nonblock)?;
        let inner = guard.get()?;
        let mut total = 0;
        while input.left() > 0 {
            if let Some(r) = stop_for_signal(total) {
                return r;
            }
            match self.write_some(inner, input) {
                Ok(n) => total += n,
                // Report the bytes consumed so far; the error, sticky in the decoder (or the
                // disabled flag), comes with the next write.
                Err(_) if total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Moves the next bytes of `input`, at most to the end of the record being received, into
    /// the decoder; returns how many.
    fn write_some(&self, inner: &mut ResumeInner, input: &mut impl ByteSource) -> Result<usize> {
        self.state.check_on(&*self.dev)?;
        if inner.buffers.is_none() {
            let words = inner.coverage.words();
            inner.buffers = Some(Buffers {
                scratch: KVVec::from_elem(0u8, SCRATCH_LEN, GFP_KERNEL_ACCOUNT)?,
                written: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            });
        }
        let buffers = inner.buffers.as_mut().ok_or(EINVAL)?;
        let dst = inner
            .decoder
            .buffer(&mut buffers.scratch)
            .map_err(|e| errno(e.errno_hint()))?;
        let n = input.left().min(dst.len());
        let dst = dst.get_mut(..n).ok_or(EINVAL)?;
        input.take(dst)?;
        let mut sink = DevSink {
            dev: &*self.dev,
            state: &self.state,
            regs: &mut inner.regs,
            regs_len: &mut inner.regs_len,
            coverage: &mut inner.coverage,
            written: &mut buffers.written,
        };
        inner
            .decoder
            .commit(n, &buffers.scratch, &KernelCrc32c, &mut sink)
            .map_err(|e| errno(e.errno_hint()))?;
        Ok(n)
    }

    /// `RESUMING -> STOP`: checks that the whole stream arrived and validated, then programs the
    /// registers. On failure nothing is programmed.
    pub(crate) fn finish(&self) -> Result {
        let inner = self.inner.lock();
        let session = self.dev.migration().session();
        self.state.check(session)?;
        inner.decoder.finish().map_err(|e| errno(e.errno_hint()))?;
        let len = inner.regs_len.ok_or(ENODATA)?;
        let regs = inner.regs.get(..len).ok_or(EINVAL)?;
        self.dev.restore_regs(|| self.state.check(session), regs)
    }

    /// Whether the buffers are allocated (for the tests).
    #[cfg(CONFIG_KUNIT = "y")]
    pub(crate) fn holds_buffers(&self) -> bool {
        self.inner.lock().buffers.is_some()
    }
}

impl<D: MigDevice> DataFile for ResumeFile<D> {
    fn read(
        _this: ArcBorrow<'_, Self>,
        _out: &mut UserSliceWriter,
        _nonblock: bool,
    ) -> Result<usize> {
        // The VFS refuses reads from a write-only file first.
        Err(EBADF)
    }

    fn write(
        this: ArcBorrow<'_, Self>,
        input: &mut UserSliceReader,
        nonblock: bool,
    ) -> Result<usize> {
        this.write_from(input, nonblock)
    }

    fn poll(this: ArcBorrow<'_, Self>, _table: &PollTable<'_>) -> u32 {
        // Writes never wait for the device: the file is always writable until disabled.
        this.state
            .poll_mask(this.dev.migration().session(), poll_mask::WRITABLE)
    }
}
