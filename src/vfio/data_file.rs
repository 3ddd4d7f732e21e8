// SPDX-License-Identifier: GPL-2.0

//! Migration data files: the anonymous-inode files a state transition hands to userspace.
//!
//! C headers: [`include/linux/anon_inodes.h`](srctree/include/linux/anon_inodes.h),
//! [`include/linux/fs.h`](srctree/include/linux/fs.h)
//!
//! A data file is a stream (`stream_open()`): it has no position, so `lseek`, `pread` and `pwrite`
//! fail with `ESPIPE` in the VFS before reaching the driver. A saving file is opened read-only and
//! a resuming file write-only, so the VFS also answers the wrong direction with `EBADF`. The file's
//! `private_data` owns a reference to the driver's [`DataFile`] object, dropped on the last close.

use core::ptr::NonNull;

use kernel::{
    error::from_err_ptr,
    ffi::{
        c_char,
        c_int,
        c_long,
        c_uint,
        c_ulong,
        c_void, //
    },
    fs::{
        file::flags,
        File, //
    },
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        ArcBorrow, //
    },
    types::ForeignOwnable,
    uaccess::{
        UserPtr,
        UserSlice,
        UserSliceReader,
        UserSliceWriter, //
    },
};

use super::{
    bindings,
    dirty::PollTable, //
};

pub(crate) use super::uapi::MIG_GET_PRECOPY_INFO;

/// Poll mask bits (`POLLIN | POLLRDNORM` and friends) a [`DataFile::poll`] returns.
pub(crate) mod poll_mask {
    /// Data can be read without blocking.
    pub(crate) const READABLE: u32 = kernel::bindings::POLLIN | kernel::bindings::POLLRDNORM;
    /// Data can be written without blocking.
    pub(crate) const WRITABLE: u32 = kernel::bindings::POLLOUT | kernel::bindings::POLLWRNORM;
    /// The file is in error (disabled).
    pub(crate) const ERROR: u32 = kernel::bindings::POLLERR;
}

/// The operations of a migration data file.
pub(crate) trait DataFile: Send + Sync + Sized + 'static {
    /// `read(2)` on a saving file: copies up to `out.len()` bytes of the stream to userspace.
    /// `nonblock` is the file's `O_NONBLOCK`.
    fn read(this: ArcBorrow<'_, Self>, out: &mut UserSliceWriter, nonblock: bool) -> Result<usize>;

    /// `write(2)` on a resuming file: consumes up to `input.len()` bytes of the stream.
    fn write(
        this: ArcBorrow<'_, Self>,
        input: &mut UserSliceReader,
        nonblock: bool,
    ) -> Result<usize>;

    /// `poll(2)`: registers `table` with the wait queues that are woken when the answer may
    /// change, then returns the current [`poll_mask`].
    fn poll(this: ArcBorrow<'_, Self>, table: &PollTable<'_>) -> u32;

    /// `ioctl(2)` on the data file.
    fn ioctl(_this: ArcBorrow<'_, Self>, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }
}

/// The direction of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A saving file, opened read-only.
    Save,
    /// A resuming file, opened write-only.
    Resume,
}

/// Creates a data file named `name` (as shown in `/proc/*/fd`) for `data`.
pub(crate) fn create<T: DataFile>(
    name: &'static CStr,
    data: Arc<T>,
    dir: Direction,
) -> Result<ARef<File>> {
    let mode = match dir {
        Direction::Save => flags::O_RDONLY,
        Direction::Resume => flags::O_WRONLY,
    };
    let private = data.into_foreign();
    // SAFETY: `name` is a valid C string; the ops table is a `'static` promoted constant;
    // `private` is handed to the file, whose `release` takes it back.
    let file = match from_err_ptr(unsafe {
        bindings::anon_inode_getfile(
            name.as_char_ptr(),
            FileVTable::<T>::ops(),
            private,
            // CAST: `O_RDONLY` and `O_WRONLY` are 0 and 1.
            mode as c_int,
        )
    }) {
        Ok(file) => file,
        Err(e) => {
            // SAFETY: The file was not created, so `private` is still ours to take back.
            drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(private) });
            return Err(e);
        }
    };
    // SAFETY: `file` is a new, valid file. `stream_open()` only sets mode flags and cannot fail.
    unsafe { kernel::bindings::stream_open((*file).f_inode, file) };
    // SAFETY: `anon_inode_getfile()` returned a file with one reference, which we now own;
    // `File` is a transparent wrapper of `struct file`.
    Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(file.cast::<File>())) })
}

/// The size of `struct vfio_precopy_info` up to `dirty_bytes`: the part every caller passes.
const PRECOPY_INFO_MINSZ: usize = 24;

/// `VFIO_MIG_GET_PRECOPY_INFO` on a saving file, as `vfio_check_precopy_ioctl()` and the in-tree
/// drivers answer it: reads `struct vfio_precopy_info` from `arg` (`EFAULT`), fails with `EINVAL`
/// if its `argsz` is short, then asks `counts` for `(initial_bytes, dirty_bytes)` and writes the
/// struct back.
///
/// `flags` is written back as userspace passed it (the uAPI keeps it so for bug compatibility),
/// unless it opted in to `VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2` (`v2`): then it is a valid
/// output, 0 here, since the device never needs the stream started anew
/// (`VFIO_PRECOPY_INFO_REINIT`). `counts` runs before anything is copied to userspace, so that it
/// may take locks that a page fault on `arg` would need.
pub(crate) fn precopy_info_ioctl(
    arg: usize,
    v2: bool,
    counts: impl FnOnce() -> Result<(u64, u64)>,
) -> Result<isize> {
    let (mut reader, mut writer) =
        UserSlice::new(UserPtr::from_addr(arg), PRECOPY_INFO_MINSZ).reader_writer();
    let mut raw = [0u8; PRECOPY_INFO_MINSZ];
    reader.read_slice(&mut raw)?;
    let word = |at: usize| -> Result<[u8; 4]> {
        raw.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(EINVAL)
    };
    let argsz = u32::from_ne_bytes(word(0)?);
    // CAST: `PRECOPY_INFO_MINSZ` is 24.
    if argsz < PRECOPY_INFO_MINSZ as u32 {
        return Err(EINVAL);
    }
    let flags = if v2 { 0 } else { u32::from_ne_bytes(word(4)?) };
    let (initial, dirty) = counts()?;
    let mut out = [0u8; PRECOPY_INFO_MINSZ];
    out[0..4].copy_from_slice(&argsz.to_ne_bytes());
    out[4..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..16].copy_from_slice(&initial.to_ne_bytes());
    out[16..24].copy_from_slice(&dirty.to_ne_bytes());
    writer.write_slice(&out)?;
    Ok(0)
}

/// The `struct file_operations` of data files of type `T`.
struct FileVTable<T>(core::marker::PhantomData<T>);

impl<T: DataFile> FileVTable<T> {
    const OPS: kernel::bindings::file_operations = kernel::bindings::file_operations {
        owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
        read: Some(Self::read),
        write: Some(Self::write),
        poll: Some(Self::poll),
        unlocked_ioctl: Some(Self::ioctl),
        compat_ioctl: kernel::bindings::compat_ptr_ioctl,
        release: Some(Self::release),
        ..pin_init::zeroed()
    };

    fn ops() -> &'static kernel::bindings::file_operations {
        &Self::OPS
    }

    /// Borrows the driver object of a data file.
    ///
    /// # Safety
    ///
    /// `file` is a valid data file of type `T` that is not being released.
    unsafe fn data<'a>(file: *mut kernel::bindings::file) -> ArcBorrow<'a, T> {
        // SAFETY: `private_data` was set by `create` from `Arc<T>::into_foreign` and is only taken
        // back in `release`, which cannot run concurrently with other file operations.
        unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) }
    }

    /// Whether the file has `O_NONBLOCK`.
    ///
    /// `f_flags` is read directly rather than through `kernel::fs::File`: a data file is a stream
    /// (`FMODE_STREAM`, no `FMODE_ATOMIC_POS`), so `fdget_pos()` never takes its `f_pos_lock` and
    /// neither the `File` nor the `LocalFile` contract can be promised for it.
    ///
    /// # Safety
    ///
    /// `file` is a valid file.
    unsafe fn nonblock(file: *mut kernel::bindings::file) -> bool {
        // SAFETY: The caller guarantees `file` is valid. `fcntl(F_SETFL)` may change `f_flags`
        // concurrently; a racy read yields the old or the new flags, as it does in C.
        let f_flags = unsafe { core::ptr::read_volatile(&raw const (*file).f_flags) };
        f_flags & flags::O_NONBLOCK != 0
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid file of this type and a user buffer of `len` bytes.
    unsafe extern "C" fn read(
        file: *mut kernel::bindings::file,
        buf: *mut c_char,
        len: usize,
        pos: *mut kernel::bindings::loff_t,
    ) -> isize {
        // A stream file has no position: the VFS passes none for read(2) and refuses pread(2).
        if !pos.is_null() {
            return ESPIPE.to_errno() as isize;
        }
        let mut out = UserSlice::new(UserPtr::from_ptr(buf.cast::<c_void>()), len).writer();
        // SAFETY: The VFS calls us with a valid, open file of this type.
        let (this, nonblock) = unsafe { (Self::data(file), Self::nonblock(file)) };
        match T::read(this, &mut out, nonblock) {
            // CAST: At most `len` bytes, and `len` is at most `MAX_RW_COUNT`.
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid file of this type and a user buffer of `len` bytes.
    unsafe extern "C" fn write(
        file: *mut kernel::bindings::file,
        buf: *const c_char,
        len: usize,
        pos: *mut kernel::bindings::loff_t,
    ) -> isize {
        if !pos.is_null() {
            return ESPIPE.to_errno() as isize;
        }
        let mut input =
            UserSlice::new(UserPtr::from_ptr(buf.cast_mut().cast::<c_void>()), len).reader();
        // SAFETY: The VFS calls us with a valid, open file of this type.
        let (this, nonblock) = unsafe { (Self::data(file), Self::nonblock(file)) };
        match T::write(this, &mut input, nonblock) {
            // CAST: At most `len` bytes, and `len` is at most `MAX_RW_COUNT`.
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid file of this type and a valid or null poll table.
    unsafe extern "C" fn poll(
        file: *mut kernel::bindings::file,
        table: *mut kernel::bindings::poll_table_struct,
    ) -> kernel::bindings::__poll_t {
        // SAFETY: The VFS calls us with a valid, open file of this type.
        let this = unsafe { Self::data(file) };
        // SAFETY: These are the arguments of this poll call, which outlives `table`.
        let table = unsafe { PollTable::from_raw(file, table) };
        T::poll(this, &table)
    }

    /// # Safety
    ///
    /// Called by the VFS with a valid file of this type.
    unsafe extern "C" fn ioctl(
        file: *mut kernel::bindings::file,
        cmd: c_uint,
        arg: c_ulong,
    ) -> c_long {
        // SAFETY: The VFS calls us with a valid, open file of this type.
        let this = unsafe { Self::data(file) };
        // CAST: `unsigned long` and `usize` are the same size in the kernel (the same type on
        // some configurations).
        #[allow(clippy::unnecessary_cast)]
        let arg = arg as usize;
        match T::ioctl(this, cmd, arg) {
            // CAST: ioctl results fit a `long`.
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS once, on the last close of a file of this type.
    unsafe extern "C" fn release(
        _inode: *mut kernel::bindings::inode,
        file: *mut kernel::bindings::file,
    ) -> c_int {
        // SAFETY: Takes back the reference `create` gave the file; no other file operation can run
        // any more.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*file).private_data) });
        0
    }
}
