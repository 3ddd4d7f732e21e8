// SPDX-License-Identifier: GPL-2.0

//! The resuming data file: takes a device state in RESUMING and applies it at `RESUMING -> STOP`.
//!
//! `write()` accepts the stream cut at any byte boundary. Bytes go straight from userspace into
//! the decoder's one-record buffer ([`SCRATCH_LEN`], about 256 KiB, whatever the size of the device
//! memory); a record reaches the device only once its checksum passed. Memory records are written
//! to the device memory as they validate (the device is stopped, so nothing runs on them); the
//! register blob is checked and kept, and programmed only after the whole stream, END record
//! included, validated ([`ResumeFile::finish`]). A bad stream fails the state change and leaves the
//! registers as they were; only a reset makes the device run again.

use kernel::{
    fs::File,
    new_mutex,
    prelude::*,
    sync::{
        aref::ARef,
        poll::PollTable,
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
        Decoder,
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
    },
};

use super::{
    errno,
    lock_for_io,
    ByteSource,
    FileState,
    MigDevice, //
};

/// The state of a resuming file, under its mutex.
struct ResumeInner {
    decoder: Decoder,
    /// The decoder's one-record buffer.
    scratch: KVVec<u8>,
    /// The validated register blob, applied by [`ResumeFile::finish`].
    regs: [u8; MAX_REGS_LEN],
    /// Length of `regs` once the register record arrived.
    regs_len: Option<usize>,
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

/// The device as the decoder's [`Sink`].
struct DevSink<'a, D: MigDevice> {
    dev: &'a D,
    regs: &'a mut [u8; MAX_REGS_LEN],
    regs_len: &'a mut Option<usize>,
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
        self.dev.write_memory(offset, data).map_err(sink_error)
    }

    fn end(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl<D: MigDevice> ResumeFile<D> {
    /// Starts resuming into `dev`: returns the file's state and the file for userspace.
    pub(crate) fn create(dev: &D::Ref) -> Result<(Arc<Self>, ARef<File>)> {
        let identity = dev.identity()?;
        let scratch = KVVec::from_elem(0u8, SCRATCH_LEN, GFP_KERNEL)?;
        let this = Arc::pin_init(
            pin_init!(Self {
                dev: dev.clone(),
                state: FileState::new(),
                inner <- new_mutex!(ResumeInner {
                    decoder: Decoder::new(identity),
                    scratch,
                    regs: [0; MAX_REGS_LEN],
                    regs_len: None,
                }, "qemu_vfio_pci::resume_file"),
            }),
            GFP_KERNEL,
        )?;
        let file = data_file::create(c"qemu_vfio_pci_resume", this.clone(), Direction::Resume)?;
        Ok((this, file))
    }

    /// Ends the file: later writes fail with `ENODEV`. Does not wait (see [`FileState`]).
    pub(crate) fn disable(&self) {
        self.state.disable();
    }

    /// `write()`: consumes up to `input.left()` stream bytes. With `nonblock`, `EAGAIN` instead of
    /// waiting for another writer.
    pub(crate) fn write_from(&self, input: &mut impl ByteSource, nonblock: bool) -> Result<usize> {
        let mut guard = lock_for_io(&self.inner, nonblock)?;
        let inner = &mut *guard;
        let mut total = 0;
        while input.left() > 0 {
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
        self.state.check()?;
        let dst = inner
            .decoder
            .buffer(&mut inner.scratch)
            .map_err(|e| errno(e.errno_hint()))?;
        let n = input.left().min(dst.len());
        let dst = dst.get_mut(..n).ok_or(EINVAL)?;
        input.take(dst)?;
        let mut sink = DevSink {
            dev: &*self.dev,
            regs: &mut inner.regs,
            regs_len: &mut inner.regs_len,
        };
        inner
            .decoder
            .commit(n, &inner.scratch, &KernelCrc32c, &mut sink)
            .map_err(|e| errno(e.errno_hint()))?;
        Ok(n)
    }

    /// `RESUMING -> STOP`: checks that the whole stream arrived and validated, then programs the
    /// registers. On failure nothing is programmed.
    pub(crate) fn finish(&self) -> Result {
        let inner = self.inner.lock();
        self.state.check()?;
        inner.decoder.finish().map_err(|e| errno(e.errno_hint()))?;
        let len = inner.regs_len.ok_or(ENODATA)?;
        let regs = inner.regs.get(..len).ok_or(EINVAL)?;
        self.dev.restore_regs(regs)
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

    fn poll(this: ArcBorrow<'_, Self>, _file: &File, _table: PollTable<'_>) -> u32 {
        // Writes never wait for the device: the file is always writable until disabled.
        this.state.poll_mask(poll_mask::WRITABLE)
    }
}
