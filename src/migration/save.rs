// SPDX-License-Identifier: GPL-2.0

//! The saving data file: streams the complete device state in STOP_COPY.
//!
//! The stream is produced lazily, one record at a time, into a staging buffer of one record
//! ([`SCRATCH_LEN`], about 256 KiB) from which `read()` copies to userspace: memory use is bounded
//! by a chunk, whatever the size of the device memory. The buffer is allocated at the first read,
//! charged to the reader's memory cgroup, and freed once the file is disabled (see
//! [`FileState`]). Device memory is read while the device is stopped, so the stream is a
//! consistent snapshot. `read()` accepts any length and returns short counts at record
//! boundaries only when the stream ends; the end of the data is `read() == 0`.
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
        DeviceIdentity,
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
            DataFile,
            Direction, //
        },
    },
};

use super::{
    errno,
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
}

impl Reclaim for SaveInner {
    fn reclaim(&mut self) {
        // INVARIANT: Nothing is staged any more.
        self.buf = None;
        self.pos = 0;
        self.filled = 0;
    }
}

/// A saving data file.
#[pin_data]
pub(crate) struct SaveFile<D: MigDevice> {
    dev: D::Ref,
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
    /// Starts saving `dev`, whose identity is `identity`: returns the file's state and the file
    /// for userspace.
    pub(crate) fn create(
        dev: &D::Ref,
        identity: DeviceIdentity,
    ) -> Result<(Arc<Self>, ARef<File>)> {
        let regs_len = u32::try_from(dev.regs_len()).map_err(|_| EINVAL)?;
        let session = dev.migration().session().current();
        // INVARIANT: Nothing is staged: `pos == filled == 0`, no buffer.
        let this = Arc::pin_init(
            pin_init!(Self {
                dev: dev.clone(),
                state: FileState::new(session),
                inner <- new_mutex!(SaveInner {
                    encoder: Encoder::new(identity, regs_len),
                    buf: None,
                    pos: 0,
                    filled: 0,
                    done: false,
                }, "qemu_vfio_pci::save_file"),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let file = data_file::create(c"qemu_vfio_pci_save", this.clone(), Direction::Save)?;
        Ok((this, file))
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
                let mut source = DevSource {
                    dev: &*self.dev,
                    state: &self.state,
                };
                match inner.encoder.next_record(&mut source, &KernelCrc32c, buf) {
                    // INVARIANT: The encoder wrote `n <= buf.len()` bytes.
                    Ok(Some(n)) => {
                        inner.pos = 0;
                        inner.filled = n;
                    }
                    Ok(None) => {
                        inner.done = true;
                        break;
                    }
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

    /// Ends the file: later reads fail with `ENODEV`, and the staging buffer is freed. Does not
    /// wait (see [`FileState`]).
    pub(crate) fn disable(&self) {
        self.state.disable(&self.inner);
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

    fn poll(this: ArcBorrow<'_, Self>) -> u32 {
        // Data, or the permanent end of the stream, is always available at once: reads never wait
        // for the device, so there is nothing to wait for.
        this.state
            .poll_mask(this.dev.migration().session(), poll_mask::READABLE)
    }
}
