// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the VFIO v2 migration protocol ([`crate::migration`]) against a fake device
//! with a register blob and a memory in kernel buffers:
//!
//! - the transition planner, against a copy of the kernel's `vfio_from_fsm_table`;
//! - every transition between the states the driver supports, refused requests, failed steps,
//!   and reset, close and open in every state, also a reset that arrives during a transition;
//! - the data files: a save/resume round trip in odd pieces, malformed streams, and
//!   non-blocking reads and writes while the file is busy;
//! - hardening: transfers racing a reset or a close, transfer memory, END coverage, MIG_DATA_SIZE
//!   without device access, and a fatal signal ending a long transfer between records.

use kernel::prelude::*;

#[kunit_tests(qemu_vfio_pci_migration)]
mod tests {
    use core::ops::Deref;

    use kernel::{
        fs::File,
        new_mutex,
        prelude::*,
        sync::{
            aref::ARef,
            atomic::{
                Atomic,
                Relaxed, //
            },
            Arc,
            Completion,
            Mutex, //
        },
        workqueue,
    };

    use crate::{
        migration::{
            resume::ResumeFile,
            save::SaveFile,
            state::{
                next_step,
                Arc as Step,
                MigState,
                FLAG_P2P,
                FLAG_PRE_COPY,
                FLAG_STOP_COPY, //
            },
            ByteSink,
            ByteSource,
            MigDevice,
            Migration, //
        },
        stream::{
            precopy::{
                words,
                PAGE_SIZE, //
            },
            DeviceIdentity,
            DeviceKind,
            MAX_CHUNK, //
        },
        vfio::{
            dirty::PollTable,
            task::FatalSignal, //
        },
    };

    /// Length of the fake's register blob.
    const REGS_LEN: usize = 24;
    /// A first register byte the fake's `check_regs` rejects.
    const BAD_REG: u8 = 0xFF;
    /// Device memory for the data tests: three MEMORY records, the last one short and odd-sized.
    const BIG_MEM: usize = 2 * MAX_CHUNK + 4096 + 13;
    /// Device memory for the state machine tests.
    const SMALL_MEM: usize = 4096 + 5;
    /// The migration flags of the fake: those of the real driver.
    const FLAGS: u32 = FLAG_STOP_COPY | FLAG_P2P;
    /// The migration flags of the pre-copy fake ([`fake_precopy`]).
    const PRECOPY_FLAGS: u32 = FLAGS | FLAG_PRE_COPY;
    /// The states the fake supports.
    const STATES: [MigState; 5] = [
        MigState::Running,
        MigState::Stop,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
    ];
    /// Requests the fake must refuse: ERROR, the PRE_COPY states it does not support, and values
    /// the uAPI does not define.
    const ILLEGAL: [u32; 7] = [0, 6, 7, 8, 9, 0x100, u32::MAX];

    /// The fake device's "hardware".
    struct FakeHw {
        regs: [u8; REGS_LEN],
        mem: KVVec<u8>,
        /// `next_step()` resets the device first, as a concurrent `VFIO_DEVICE_RESET` would while
        /// a transition holds the state mutex. Cleared when it happens.
        reset_in_step: bool,
        /// A step into this state fails with `EIO` (`next_step()` refuses it).
        fail_to: Option<MigState>,
        /// What happens to the device right before a memory access checks its `valid`, that is
        /// after the data file checked its state: a reset, a close or a state change racing the
        /// transfer. Taken when it happens.
        on_access: Option<Event>,
        /// How many times registers were programmed.
        restores: usize,
        /// A saving file to read with `nonblock` from inside `read_memory`, that is while a read
        /// of the same file is in progress. Taken when it happens.
        probe_save: Option<Arc<SaveFile<Fake>>>,
        /// A resuming file to write with `nonblock` from inside `write_memory`.
        probe_resume: Option<Arc<ResumeFile<Fake>>>,
        /// What the probe read or write returned.
        probe_result: Option<Result<usize>>,
        /// The fake itself, for `Event::Stop` (a cycle that `FakeDev::drop` breaks).
        me: Option<Arc<Fake>>,
        /// How many times `identity()` read the device.
        identities: usize,
        /// The migration flags the fake's planner uses.
        flags: u32,
        /// The software dirty bitmap, one bit per page ([`Fake::guest_write`] sets bits while
        /// tracking is armed, `take_and_read` clears them).
        dirty: KVVec<u64>,
        /// A guest write (offset, byte) that happens right after the next `take_and_read` has
        /// read its pages: a write during a `read()` of the data file. Taken when it happens.
        write_on_take: Option<(usize, u8)>,
    }

    #[pin_data]
    struct Fake {
        #[pin]
        mig: Migration<Fake>,
        #[pin]
        hw: Mutex<FakeHw>,
        /// Whether dirty tracking is armed: an atomic, as `disarm_tracking` must be.
        armed: Atomic<bool>,
        /// How many times the pollers of the data files were woken.
        wakes: Atomic<u32>,
    }

    /// The error the fake's `check_regs` rejects a blob with, distinct from the decoder's errors.
    const REGS_REJECTED: Error = EDOM;

    /// The byte range `[offset, offset + len)` of a memory of `size` bytes.
    fn mem_range(size: usize, offset: u64, len: usize) -> Result<core::ops::Range<usize>> {
        let start = usize::try_from(offset)?;
        let end = start.checked_add(len).ok_or(EINVAL)?;
        if end > size {
            return Err(EINVAL);
        }
        Ok(start..end)
    }

    impl MigDevice for Fake {
        type Ref = Arc<Fake>;

        fn migration(&self) -> &Migration<Self> {
            &self.mig
        }

        fn identity(&self) -> Result<DeviceIdentity> {
            let mut hw = self.hw.lock();
            hw.identities += 1;
            let mem_size = u64::try_from(hw.mem.len())?;
            Ok(DeviceIdentity {
                kind: DeviceKind::BochsDisplay,
                mem_size,
            })
        }

        fn regs_len(&self) -> usize {
            REGS_LEN
        }

        fn save_regs(&self, valid: impl FnOnce() -> Result, out: &mut [u8]) -> Result {
            valid()?;
            let hw = self.hw.lock();
            if out.len() != REGS_LEN {
                return Err(EINVAL);
            }
            out.copy_from_slice(&hw.regs);
            Ok(())
        }

        fn check_regs(&self, regs: &[u8]) -> Result {
            match regs.first() {
                Some(&first) if regs.len() == REGS_LEN && first != BAD_REG => Ok(()),
                _ => Err(REGS_REJECTED),
            }
        }

        fn restore_regs(&self, valid: impl FnOnce() -> Result, regs: &[u8]) -> Result {
            valid()?;
            self.check_regs(regs)?;
            let mut hw = self.hw.lock();
            hw.regs.copy_from_slice(regs);
            hw.restores += 1;
            Ok(())
        }

        fn read_memory(
            &self,
            valid: impl FnOnce() -> Result,
            offset: u64,
            out: &mut [u8],
        ) -> Result {
            self.run_on_access()?;
            valid()?;
            let probe = {
                let mut hw = self.hw.lock();
                let range = mem_range(hw.mem.len(), offset, out.len())?;
                out.copy_from_slice(hw.mem.get(range).ok_or(EINVAL)?);
                hw.probe_save.take()
            };
            if let Some(file) = probe {
                let mut got = KVVec::new();
                let result = file.read_into(
                    &mut VecSink {
                        out: &mut got,
                        room: 16,
                    },
                    true,
                );
                self.hw.lock().probe_result = Some(result);
            }
            Ok(())
        }

        fn write_memory(&self, valid: impl FnOnce() -> Result, offset: u64, data: &[u8]) -> Result {
            self.run_on_access()?;
            valid()?;
            let probe = {
                let mut hw = self.hw.lock();
                let range = mem_range(hw.mem.len(), offset, data.len())?;
                hw.mem.get_mut(range).ok_or(EINVAL)?.copy_from_slice(data);
                hw.probe_resume.take()
            };
            if let Some(file) = probe {
                let result = file.write_from(&mut SliceSource { data: &[0u8; 1] }, true);
                self.hw.lock().probe_result = Some(result);
            }
            Ok(())
        }

        fn next_step(&self, cur: MigState, new: u32) -> Result<MigState> {
            let (reset, fail_to, flags) = {
                let mut hw = self.hw.lock();
                (core::mem::take(&mut hw.reset_in_step), hw.fail_to, hw.flags)
            };
            if reset {
                self.mig.reset_done();
            }
            let next = next_step(flags, cur, new).ok_or(EINVAL)?;
            if fail_to == Some(next) {
                return Err(EIO);
            }
            Ok(next)
        }

        fn arm_tracking(&self, valid: impl FnOnce() -> Result) -> Result {
            valid()?;
            let mut hw = self.hw.lock();
            let n = words(u64::try_from(hw.mem.len())?);
            hw.dirty = KVVec::from_elem(0u64, n, GFP_KERNEL)?;
            self.armed.store(true, Relaxed);
            Ok(())
        }

        fn disarm_tracking(&self) {
            self.armed.store(false, Relaxed);
        }

        fn poll_wait(&self, _table: &PollTable<'_>) {
            // The tests do not poll: they read `wakes`.
        }

        fn wake_pollers(&self) {
            self.wakes.add(1, Relaxed);
        }

        fn precopy_info_v2(&self) -> bool {
            false
        }

        fn dirty_snapshot(&self, out: &mut [u64]) -> Result {
            let hw = self.hw.lock();
            out.fill(0);
            for (o, w) in out.iter_mut().zip(hw.dirty.iter()) {
                *o = *w;
            }
            Ok(())
        }

        fn take_and_read(
            &self,
            valid: impl FnOnce() -> Result,
            first_page: u64,
            pages: u64,
            _rearm: bool,
            out: &mut [u8],
        ) -> Result {
            valid()?;
            let mut hw = self.hw.lock();
            let offset = first_page.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
            let range = mem_range(hw.mem.len(), offset, out.len())?;
            // Under the lock that writers take: clearing and reading are atomic for them.
            for page in first_page..first_page.saturating_add(pages) {
                set_bit(&mut hw.dirty, page, false);
            }
            out.copy_from_slice(hw.mem.get(range).ok_or(EINVAL)?);
            if let Some((at, byte)) = hw.write_on_take.take() {
                self.write_locked(&mut hw, at, &[byte])?;
            }
            Ok(())
        }
    }

    /// Sets or clears bit `page` of `bits`; a page beyond the bitmap is ignored.
    fn set_bit(bits: &mut [u64], page: u64, on: bool) {
        let Some(w) = usize::try_from(page / 64)
            .ok()
            .and_then(|i| bits.get_mut(i))
        else {
            return;
        };
        let mask = 1u64 << (page % 64);
        if on {
            *w |= mask;
        } else {
            *w &= !mask;
        }
    }

    impl Fake {
        /// A guest write of `data` at `offset` of the device memory: with tracking armed, it
        /// dirties the pages it touches.
        fn guest_write(&self, offset: usize, data: &[u8]) -> Result {
            let mut hw = self.hw.lock();
            self.write_locked(&mut hw, offset, data)
        }

        fn write_locked(&self, hw: &mut FakeHw, offset: usize, data: &[u8]) -> Result {
            let range = mem_range(hw.mem.len(), u64::try_from(offset)?, data.len())?;
            let (first, end) = (range.start, range.end);
            hw.mem.get_mut(range).ok_or(EINVAL)?.copy_from_slice(data);
            if self.armed.load(Relaxed) {
                let page_size = usize::try_from(PAGE_SIZE)?;
                for page in first / page_size..end.div_ceil(page_size) {
                    set_bit(&mut hw.dirty, u64::try_from(page)?, true);
                }
                // As the real tracker does when a page becomes dirty.
                self.wake_pollers();
            }
            Ok(())
        }

        /// Whether dirty tracking is armed.
        fn armed(&self) -> bool {
            self.armed.load(Relaxed)
        }
    }

    impl Fake {
        /// Runs the `on_access` event, if one is set.
        fn run_on_access(&self) -> Result {
            let event = self.hw.lock().on_access.take();
            match event {
                Some(event) => self.happen_elsewhere(event),
                None => Ok(()),
            }
        }

        /// Makes `event` happen in another thread (the system workqueue) and waits for it, as a
        /// close, a reset or a state change by another thread does while this one is in the
        /// middle of a transfer, holding the data file's mutex: the other thread does not hold
        /// it, so lockdep sees the locks of each thread as they really are.
        fn happen_elsewhere(&self, event: Event) -> Result {
            let me = self.arc()?;
            let done = Arc::pin_init(Completion::new(), GFP_KERNEL)?;
            let result = Arc::pin_init(
                new_mutex!(Err(EINPROGRESS), "qemu_vfio_pci::kunit_event"),
                GFP_KERNEL,
            )?;
            let (d, r) = (done.clone(), result.clone());
            workqueue::system().try_spawn(GFP_KERNEL, move || {
                *r.lock() = me.happen(event);
                d.complete_all();
            })?;
            done.wait_for_completion();
            let outcome = *result.lock();
            outcome
        }

        /// Makes `event` happen to the device, from outside the data file.
        fn happen(&self, event: Event) -> Result {
            match event {
                Event::Reset => self.mig.reset_done(),
                Event::Close => self.mig.close(),
                Event::Open => Migration::open(self)?,
                Event::Reopen => {
                    self.mig.close();
                    Migration::open(self)?;
                    // The next user fills the memory.
                    self.hw.lock().mem.fill(NEXT_USER);
                }
                Event::Stop => {
                    Migration::<Fake>::set_state(&self.arc()?, MigState::Stop.raw())?;
                }
            }
            Ok(())
        }

        /// A reference to this fake (the state machine takes one).
        fn arc(&self) -> Result<Arc<Fake>> {
            self.hw.lock().me.clone().ok_or(EINVAL)
        }
    }

    /// A fake device, closed when the test lets go of it as the real one is when userspace closes
    /// it: the data files the state machine keeps hold references to the device.
    struct FakeDev(Arc<Fake>);

    impl Deref for FakeDev {
        type Target = Arc<Fake>;

        fn deref(&self) -> &Arc<Fake> {
            &self.0
        }
    }

    impl Drop for FakeDev {
        fn drop(&mut self) {
            self.0.mig.close();
            let probes = {
                let mut hw = self.0.hw.lock();
                (hw.probe_save.take(), hw.probe_resume.take(), hw.me.take())
            };
            drop(probes);
        }
    }

    /// Deterministic test bytes.
    fn pattern(seed: u32, len: usize) -> Result<KVVec<u8>> {
        let mut v = KVVec::with_capacity(len, GFP_KERNEL)?;
        let mut x = seed.wrapping_mul(2_654_435_761) | 1;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push((x >> 24) as u8, GFP_KERNEL)?;
        }
        Ok(v)
    }

    /// A fake device in RUNNING with `mem_len` bytes of memory and contents made from `seed`.
    fn fake(mem_len: usize, seed: u32) -> Result<FakeDev> {
        fake_with(mem_len, seed, FLAGS)
    }

    /// [`fake`] with PRE_COPY (and PRE_COPY_P2P) supported.
    fn fake_precopy(mem_len: usize, seed: u32) -> Result<FakeDev> {
        fake_with(mem_len, seed, PRECOPY_FLAGS)
    }

    /// [`fake`] with the migration flags `flags`.
    fn fake_with(mem_len: usize, seed: u32, flags: u32) -> Result<FakeDev> {
        let mem = pattern(seed, mem_len)?;
        let mut regs = [0u8; REGS_LEN];
        regs.copy_from_slice(&pattern(seed ^ 0x5A5A_5A5A, REGS_LEN)?);
        // A valid blob.
        regs[0] &= 0x7F;
        let dev = Arc::pin_init(
            try_pin_init!(Fake {
                mig <- Migration::new(),
                hw <- new_mutex!(FakeHw {
                    regs,
                    mem,
                    reset_in_step: false,
                    fail_to: None,
                    on_access: None,
                    restores: 0,
                    probe_save: None,
                    probe_resume: None,
                    probe_result: None,
                    me: None,
                    identities: 0,
                    flags,
                    dirty: KVVec::new(),
                    write_on_take: None,
                }, "qemu_vfio_pci::kunit_fake"),
                armed: Atomic::new(false),
                wakes: Atomic::new(0),
            }? Error),
            GFP_KERNEL,
        )?;
        dev.hw.lock().me = Some(dev.clone());
        // The device is opened, as userspace opens it before it can migrate it.
        Migration::open(&*dev)?;
        Ok(FakeDev(dev))
    }

    /// A [`ByteSink`] that appends to a vector and has room for `room` more bytes.
    struct VecSink<'a> {
        out: &'a mut KVVec<u8>,
        room: usize,
    }

    impl ByteSink for VecSink<'_> {
        fn room(&self) -> usize {
            self.room
        }

        fn put(&mut self, data: &[u8]) -> Result {
            // `EXDEV` is no error of the code under test: a reader that overflows the buffer
            // fails the test.
            self.room = self.room.checked_sub(data.len()).ok_or(EXDEV)?;
            self.out.extend_from_slice(data, GFP_KERNEL)?;
            Ok(())
        }
    }

    /// A [`ByteSource`] over a slice.
    struct SliceSource<'a> {
        data: &'a [u8],
    }

    impl ByteSource for SliceSource<'_> {
        fn left(&self) -> usize {
            self.data.len()
        }

        fn take(&mut self, out: &mut [u8]) -> Result {
            let (now, rest) = self.data.split_at_checked(out.len()).ok_or(EXDEV)?;
            out.copy_from_slice(now);
            self.data = rest;
            Ok(())
        }
    }

    /// `Migration::set_state` for a fake.
    fn set(dev: &Arc<Fake>, new: u32) -> Result<Option<ARef<File>>> {
        Migration::<Fake>::set_state(dev, new)
    }

    /// Reads a saving file to its end with reads of `rooms` bytes in turn, every other one
    /// non-blocking. A short read before the end is an error (`EXDEV`).
    fn read_stream(file: &SaveFile<Fake>, rooms: &[usize]) -> Result<KVVec<u8>> {
        let mut out = KVVec::new();
        let mut short = false;
        for i in 0usize.. {
            let room = rooms.get(i % rooms.len().max(1)).copied().ok_or(EINVAL)?;
            let n = file.read_into(
                &mut VecSink {
                    out: &mut out,
                    room,
                },
                i % 2 == 1,
            )?;
            if n == 0 {
                break;
            }
            if short {
                pr_err!("read {n} bytes after a short read\n");
                return Err(EXDEV);
            }
            short = n < room;
        }
        Ok(out)
    }

    /// The identity of a fake, without asking the fake.
    fn ident(dev: &Fake) -> Result<DeviceIdentity> {
        Ok(DeviceIdentity {
            kind: DeviceKind::BochsDisplay,
            mem_size: u64::try_from(dev.hw.lock().mem.len())?,
        })
    }

    /// The stream a fresh saving file of `dev` yields.
    fn save_all(dev: &Arc<Fake>) -> Result<KVVec<u8>> {
        let (file, _file) = SaveFile::<Fake>::create(dev, ident(dev)?)?;
        read_stream(&file, &[4093, 65_537, 7])
    }

    /// Writes `data` to a resuming file in pieces of `sizes` bytes in turn, every other one
    /// non-blocking, as a userspace writer does: after a short write it writes the rest, and it
    /// stops at the first error. A write that consumes nothing is an error (`EXDEV`).
    fn feed(file: &ResumeFile<Fake>, data: &[u8], sizes: &[usize]) -> Result {
        let mut rest = data;
        let mut i = 0usize;
        while !rest.is_empty() {
            let size = sizes.get(i % sizes.len().max(1)).copied().ok_or(EINVAL)?;
            let now = rest.get(..size.min(rest.len())).ok_or(EINVAL)?;
            let n = file.write_from(&mut SliceSource { data: now }, i % 2 == 0)?;
            if n == 0 || n > now.len() {
                pr_err!("write of {} bytes returned {n}\n", now.len());
                return Err(EXDEV);
            }
            rest = rest.get(n..).ok_or(EINVAL)?;
            i += 1;
        }
        Ok(())
    }

    /// Whether a saving file is disabled: a read fails with `ENODEV`.
    fn save_disabled(file: &SaveFile<Fake>) -> bool {
        let mut out = KVVec::new();
        let result = file.read_into(
            &mut VecSink {
                out: &mut out,
                room: 1,
            },
            false,
        );
        result == Err(ENODEV)
    }

    /// Whether a resuming file is disabled: a write fails with `ENODEV`.
    fn resume_disabled(file: &ResumeFile<Fake>) -> bool {
        file.write_from(&mut SliceSource { data: &[0u8; 1] }, false) == Err(ENODEV)
    }

    /// Whether a saving file is enabled: a one-byte read succeeds.
    fn save_enabled(file: &SaveFile<Fake>) -> bool {
        let mut out = KVVec::new();
        let result = file.read_into(
            &mut VecSink {
                out: &mut out,
                room: 1,
            },
            false,
        );
        result == Ok(1)
    }

    fn regs(dev: &Fake) -> [u8; REGS_LEN] {
        dev.hw.lock().regs
    }

    fn restores(dev: &Fake) -> usize {
        dev.hw.lock().restores
    }

    /// Whether two fakes have the same memory (one lock at a time).
    fn mem_eq(a: &Fake, b: &Fake) -> Result<bool> {
        let copy = mem_of(a)?;
        let same = b.hw.lock().mem[..] == copy[..];
        Ok(same)
    }

    /// Whether `state` has a data file.
    fn is_data(state: MigState) -> bool {
        matches!(state, MigState::StopCopy | MigState::Resuming)
    }

    // The planner.

    /// `vfio_from_fsm_table` of `drivers/vfio/vfio_main.c`, by uAPI value.
    const KERNEL_FSM_TABLE: [[u32; 8]; 8] = {
        const E: u32 = 0;
        const S: u32 = 1;
        const R: u32 = 2;
        const SC: u32 = 3;
        const RS: u32 = 4;
        const RP: u32 = 5;
        const PC: u32 = 6;
        const PP: u32 = 7;
        [
            /* ERROR */ [E, E, E, E, E, E, E, E],
            /* STOP */ [E, S, RP, SC, RS, RP, RP, RP],
            /* RUNNING */ [E, RP, R, RP, RP, RP, PC, RP],
            /* STOP_COPY */ [E, S, S, SC, S, S, E, E],
            /* RESUMING */ [E, S, S, S, RS, S, S, S],
            /* RUNNING_P2P */ [E, S, R, S, S, RP, R, PP],
            /* PRE_COPY */ [E, R, R, PP, R, R, PC, PP],
            /* PRE_COPY_P2P */ [E, RP, RP, SC, RP, RP, PC, PP],
        ]
    };

    /// `state_flags_table` of `drivers/vfio/vfio_main.c`, by uAPI value.
    const KERNEL_STATE_FLAGS: [u32; 8] = [
        !0,
        FLAG_STOP_COPY,
        FLAG_STOP_COPY,
        FLAG_STOP_COPY,
        FLAG_STOP_COPY,
        FLAG_STOP_COPY | FLAG_P2P,
        FLAG_STOP_COPY | FLAG_PRE_COPY,
        FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
    ];

    /// `vfio_mig_get_next_state()`, transcribed from C.
    fn kernel_next_state(flags: u32, cur: u32, new: u32) -> Option<u32> {
        let supported = |s: u32| {
            let need = usize::try_from(s)
                .ok()
                .and_then(|i| KERNEL_STATE_FLAGS.get(i));
            matches!(need, Some(&need) if need & flags == need)
        };
        let lookup = |from: u32, to: u32| {
            KERNEL_FSM_TABLE
                .get(usize::try_from(from).ok()?)?
                .get(usize::try_from(to).ok()?)
                .copied()
        };
        if !supported(cur) || !supported(new) {
            return None;
        }
        let mut next = lookup(cur, new)?;
        // The table never loops; the bound only keeps a broken test from hanging.
        for _ in 0..8 {
            if next == 0 || supported(next) {
                break;
            }
            next = lookup(next, new)?;
        }
        (next != 0 && supported(next)).then_some(next)
    }

    #[test]
    fn planner_matches_kernel_table() -> Result {
        let mut news = [0u32; 12];
        for (i, n) in news.iter_mut().enumerate().take(10) {
            *n = u32::try_from(i)?;
        }
        news[10] = 0x8000_0000;
        news[11] = u32::MAX;
        let mut mismatches = 0;
        for flags in 0..8u32 {
            for cur in MigState::ALL {
                for new in news {
                    let got = next_step(flags, cur, new).map(MigState::raw);
                    let want = kernel_next_state(flags, cur.raw(), new);
                    if got != want {
                        pr_err!("flags {flags:#x}: {cur:?} -> {new}: {got:?}, want {want:?}\n");
                        mismatches += 1;
                    }
                }
            }
        }
        assert_eq!(mismatches, 0);
        Ok(())
    }

    #[test]
    fn planner_expectations() -> Result {
        use MigState::*;
        const SC: u32 = FLAG_STOP_COPY;
        const SP: u32 = FLAG_STOP_COPY | FLAG_PRE_COPY;
        const ALL: u32 = FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY;
        let cases: [(u32, MigState, MigState, Option<MigState>); 37] = [
            // With P2P, RUNNING and STOP are never adjacent.
            (FLAGS, Running, Stop, Some(RunningP2p)),
            (FLAGS, Running, StopCopy, Some(RunningP2p)),
            (FLAGS, RunningP2p, StopCopy, Some(Stop)),
            (FLAGS, Stop, StopCopy, Some(StopCopy)),
            (FLAGS, Stop, Running, Some(RunningP2p)),
            (FLAGS, RunningP2p, Running, Some(Running)),
            (FLAGS, StopCopy, Running, Some(Stop)),
            (FLAGS, StopCopy, Resuming, Some(Stop)),
            (FLAGS, Resuming, Running, Some(Stop)),
            (FLAGS, Resuming, StopCopy, Some(Stop)),
            (FLAGS, Stop, Resuming, Some(Resuming)),
            (FLAGS, Running, Running, Some(Running)),
            (FLAGS, Running, PreCopy, None),
            (FLAGS, Running, PreCopyP2p, None),
            (FLAGS, Running, Error, None),
            (FLAGS, PreCopy, Running, None),
            (FLAGS, Error, Running, None),
            // Without P2P, RUNNING and STOP are adjacent and RUNNING_P2P does not exist.
            (SC, Running, Stop, Some(Stop)),
            (SC, Running, StopCopy, Some(Stop)),
            (SC, Running, Resuming, Some(Stop)),
            (SC, Stop, Running, Some(Running)),
            (SC, StopCopy, Running, Some(Stop)),
            (SC, Resuming, Running, Some(Stop)),
            (SC, Running, RunningP2p, None),
            (SC, RunningP2p, Running, None),
            // PRE_COPY without P2P.
            (SP, StopCopy, PreCopy, None),
            (SP, Running, PreCopy, Some(PreCopy)),
            (SP, PreCopy, StopCopy, Some(StopCopy)),
            (SP, PreCopy, Stop, Some(Running)),
            (SP, Stop, PreCopy, Some(Running)),
            (SP, Running, PreCopyP2p, None),
            // PRE_COPY with P2P.
            (ALL, StopCopy, PreCopy, None),
            (ALL, StopCopy, PreCopyP2p, None),
            (ALL, PreCopy, StopCopy, Some(PreCopyP2p)),
            (ALL, PreCopyP2p, StopCopy, Some(StopCopy)),
            (ALL, Stop, PreCopy, Some(RunningP2p)),
            // Nothing without STOP_COPY.
            (FLAG_P2P, Running, RunningP2p, None),
        ];
        let mut mismatches = 0;
        for (flags, cur, new, want) in cases {
            let got = next_step(flags, cur, new.raw());
            if got != want {
                pr_err!("flags {flags:#x}: {cur:?} -> {new:?}: {got:?}, want {want:?}\n");
                mismatches += 1;
            }
        }
        assert_eq!(mismatches, 0);
        for new in [8, 9, 0x100, u32::MAX] {
            assert!(next_step(FLAGS, Running, new).is_none());
        }
        Ok(())
    }

    #[test]
    fn planner_paths_are_single_arcs() -> Result {
        let flag_sets = [
            FLAG_STOP_COPY,
            FLAG_STOP_COPY | FLAG_P2P,
            FLAG_STOP_COPY | FLAG_PRE_COPY,
            FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
        ];
        let mut bad = 0;
        for flags in flag_sets {
            for from in MigState::ALL {
                for to in MigState::ALL {
                    if !from.supported(flags) || !to.supported(flags) {
                        continue;
                    }
                    let blocked = from == MigState::StopCopy
                        && matches!(to, MigState::PreCopy | MigState::PreCopyP2p);
                    let mut cur = from;
                    let mut steps = 0;
                    let mut ok = true;
                    while cur != to && ok {
                        let Some(next) = next_step(flags, cur, to.raw()) else {
                            ok = blocked;
                            break;
                        };
                        // A single-step arc the driver implements, through supported states
                        // only; only the last step may open a data file (`set_state` could not
                        // return an earlier one).
                        let arc = Step::of(cur, next);
                        let opens = matches!(
                            arc,
                            Some(Step::BeginStopCopy | Step::BeginResume | Step::BeginPreCopy)
                        );
                        ok = !blocked
                            && arc.is_some()
                            && next.supported(flags)
                            && (next == to || !opens)
                            && steps < 4;
                        cur = next;
                        steps += 1;
                    }
                    if !ok {
                        pr_err!("flags {flags:#x}: bad path {from:?} -> {to:?} at {cur:?}\n");
                        bad += 1;
                    }
                }
            }
        }
        assert_eq!(bad, 0);
        Ok(())
    }

    // The state machine.

    #[test]
    fn every_legal_transition() -> Result {
        let src = fake(SMALL_MEM, 1)?;
        let stream = save_all(&src)?;
        assert_eq!(stream.len(), Migration::<Fake>::data_size(&src)?);
        let mut seed = 100;
        for from in STATES {
            for to in STATES {
                seed += 1;
                let dev = fake(SMALL_MEM, seed)?;
                let regs_before = regs(&dev);
                let first = set(&dev, from.raw())?;
                assert_eq!(dev.mig.get_state()?, from.raw());
                assert_eq!(first.is_some(), is_data(from));
                let old_save = dev.mig.saving_file();
                let old_resume = dev.mig.resuming_file();
                assert_eq!(old_save.is_some(), from == MigState::StopCopy);
                assert_eq!(old_resume.is_some(), from == MigState::Resuming);
                if let Some(f) = &old_resume {
                    if to != from {
                        // Leaving RESUMING needs a complete, valid stream.
                        feed(f, &stream, &[4093, 17])?;
                    }
                }

                let result = set(&dev, to.raw());
                let state = dev.mig.get_state()?;
                if result.is_err() || state != to.raw() {
                    pr_err!(
                        "{from:?} -> {to:?}: {:?}, state {state}\n",
                        result.as_ref().map(Option::is_some)
                    );
                }
                assert!(result.is_ok());
                let file = result?;
                assert_eq!(state, to.raw());
                assert_eq!(file.is_some(), from != to && is_data(to));
                let save = dev.mig.saving_file();
                let resume = dev.mig.resuming_file();
                assert_eq!(save.is_some(), to == MigState::StopCopy);
                assert_eq!(resume.is_some(), to == MigState::Resuming);

                // A file is disabled once its state is left, and kept if it is not.
                if let Some(old) = &old_save {
                    if from == to {
                        assert!(save.as_ref().is_some_and(|s| Arc::ptr_eq(s, old)));
                        assert!(save_enabled(old));
                    } else {
                        assert!(save_disabled(old));
                    }
                }
                if let Some(old) = &old_resume {
                    if from == to {
                        assert!(resume.as_ref().is_some_and(|r| Arc::ptr_eq(r, old)));
                    } else {
                        assert!(resume_disabled(old));
                        // The stream was applied.
                        assert!(regs(&dev) == regs(&src));
                        assert_eq!(restores(&dev), 1);
                        assert!(mem_eq(&src, &dev)?);
                    }
                } else {
                    assert!(regs(&dev) == regs_before);
                    assert_eq!(restores(&dev), 0);
                }

                // A new saving file streams the whole state; after a resume, the very stream that
                // was resumed.
                if let (Some(s), true) = (&save, from != to) {
                    let saved = read_stream(s, &[1000, 3])?;
                    assert_eq!(saved.len(), Migration::<Fake>::data_size(&dev)?);
                    if from == MigState::Resuming {
                        assert!(saved[..] == stream[..]);
                    }
                }
                drop(file);
                drop(first);
            }
        }
        Ok(())
    }

    #[test]
    fn illegal_requests_change_nothing() -> Result {
        let src = fake(SMALL_MEM, 2)?;
        let stream = save_all(&src)?;
        for from in STATES {
            let dev = fake(SMALL_MEM, 3)?;
            let _file = set(&dev, from.raw())?;
            let save = dev.mig.saving_file();
            let resume = dev.mig.resuming_file();
            for bad in ILLEGAL {
                let result = set(&dev, bad);
                assert!(result.err() == Some(EINVAL));
                assert_eq!(dev.mig.get_state()?, from.raw());
                let save_now = dev.mig.saving_file();
                let resume_now = dev.mig.resuming_file();
                assert_eq!(save.is_some(), save_now.is_some());
                assert_eq!(resume.is_some(), resume_now.is_some());
                if let (Some(a), Some(b)) = (&save, &save_now) {
                    assert!(Arc::ptr_eq(a, b));
                }
                if let (Some(a), Some(b)) = (&resume, &resume_now) {
                    assert!(Arc::ptr_eq(a, b));
                }
            }
            // The data files still work.
            if let Some(f) = &save {
                let saved = read_stream(f, &[512])?;
                assert_eq!(saved.len(), Migration::<Fake>::data_size(&dev)?);
            }
            if let Some(f) = &resume {
                feed(f, &stream, &[777])?;
                assert!(set(&dev, MigState::Running.raw()).is_ok());
                assert!(regs(&dev) == regs(&src));
            }
        }
        Ok(())
    }

    #[test]
    fn failed_step_reports_last_completed_state() -> Result {
        let src = fake(SMALL_MEM, 4)?;
        let stream = save_all(&src)?;
        let len = stream.len();

        // RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY, and the last step fails.
        let dev = fake(SMALL_MEM, 5)?;
        dev.hw.lock().fail_to = Some(MigState::StopCopy);
        assert!(set(&dev, MigState::StopCopy.raw()).err() == Some(EIO));
        assert_eq!(dev.mig.get_state()?, MigState::Stop.raw());
        assert!(dev.mig.saving_file().is_none());
        // RUNNING_P2P -> STOP -> RESUMING, and the last step fails.
        assert!(set(&dev, MigState::RunningP2p.raw())?.is_none());
        dev.hw.lock().fail_to = Some(MigState::Resuming);
        assert!(set(&dev, MigState::Resuming.raw()).err() == Some(EIO));
        assert_eq!(dev.mig.get_state()?, MigState::Stop.raw());
        assert!(dev.mig.resuming_file().is_none());
        // The device is usable afterwards.
        dev.hw.lock().fail_to = None;
        assert!(set(&dev, MigState::StopCopy.raw())?.is_some());
        assert_eq!(dev.mig.get_state()?, MigState::StopCopy.raw());

        // RESUMING -> STOP needs the whole stream: without it the device stays in RESUMING with
        // its file open and its registers as they were.
        let dst = fake(SMALL_MEM, 6)?;
        let before = regs(&dst);
        let _file = set(&dst, MigState::Resuming.raw())?;
        let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
        assert!(set(&dst, MigState::Running.raw()).err() == Some(ENODATA));
        assert_eq!(dst.mig.get_state()?, MigState::Resuming.raw());
        feed(&resume, stream.get(..len - 1).ok_or(EINVAL)?, &[1000])?;
        assert!(set(&dst, MigState::StopCopy.raw()).err() == Some(ENODATA));
        assert_eq!(dst.mig.get_state()?, MigState::Resuming.raw());
        assert!(regs(&dst) == before);
        assert_eq!(restores(&dst), 0);
        let still = dst.mig.resuming_file().ok_or(EINVAL)?;
        assert!(Arc::ptr_eq(&still, &resume));
        // The last byte completes it.
        feed(&resume, stream.get(len - 1..).ok_or(EINVAL)?, &[1])?;
        assert!(set(&dst, MigState::Running.raw())?.is_none());
        assert_eq!(dst.mig.get_state()?, MigState::Running.raw());
        assert!(regs(&dst) == regs(&src));
        assert!(mem_eq(&src, &dst)?);
        assert!(resume_disabled(&resume));

        // A register blob the device rejects fails the write and every later RESUMING -> STOP.
        let bad_src = fake(SMALL_MEM, 7)?;
        bad_src.hw.lock().regs[0] = BAD_REG;
        let bad = save_all(&bad_src)?;
        let dst = fake(SMALL_MEM, 8)?;
        let before = regs(&dst);
        let _file = set(&dst, MigState::Resuming.raw())?;
        let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
        assert!(feed(&resume, &bad, &[4096]).err() == Some(REGS_REJECTED));
        for to in [MigState::Stop, MigState::Running, MigState::StopCopy] {
            assert!(set(&dst, to.raw()).err() == Some(REGS_REJECTED));
            assert_eq!(dst.mig.get_state()?, MigState::Resuming.raw());
        }
        assert!(regs(&dst) == before);
        assert_eq!(restores(&dst), 0);
        // Only a reset gets it out.
        dst.mig.reset_done();
        assert_eq!(dst.mig.get_state()?, MigState::Running.raw());
        Ok(())
    }

    /// What happens to the device from outside a data file.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Event {
        /// `VFIO_DEVICE_RESET`.
        Reset,
        /// The last close of the device.
        Close,
        /// An open of the device.
        Open,
        /// A close, then an open by the next user, who fills the memory with [`NEXT_USER`].
        Reopen,
        /// The state machine moves to STOP (leaving STOP_COPY or RESUMING).
        Stop,
    }

    /// The byte the next user of a reopened fake fills its memory with.
    const NEXT_USER: u8 = 0xA5;

    #[test]
    fn reset_close_open_in_every_state() -> Result {
        let src = fake(SMALL_MEM, 9)?;
        let stream = save_all(&src)?;
        let half = stream.get(..stream.len() / 2).ok_or(EINVAL)?;
        for event in [Event::Reset, Event::Close, Event::Open] {
            for from in STATES {
                let dev = fake(SMALL_MEM, 10)?;
                let before = regs(&dev);
                let _file = set(&dev, from.raw())?;
                let save = dev.mig.saving_file();
                let resume = dev.mig.resuming_file();
                if let Some(f) = &resume {
                    // Validated registers that must not be applied.
                    feed(f, half, &[999])?;
                }
                if let Some(f) = &save {
                    // Midway through the stream.
                    assert!(save_enabled(f));
                }
                dev.happen(event)?;
                let state = dev.mig.get_state()?;
                if state != MigState::Running.raw() {
                    pr_err!("{event:?} in {from:?}: state {state}\n");
                }
                assert_eq!(state, MigState::Running.raw());
                assert!(dev.mig.saving_file().is_none());
                assert!(dev.mig.resuming_file().is_none());
                if let Some(f) = &save {
                    assert!(save_disabled(f));
                }
                if let Some(f) = &resume {
                    assert!(resume_disabled(f));
                    assert!(f.finish() == Err(ENODEV));
                }
                assert!(regs(&dev) == before);
                assert_eq!(restores(&dev), 0);
                // The state machine works as before.
                assert!(set(&dev, MigState::StopCopy.raw())?.is_some());
                assert_eq!(dev.mig.get_state()?, MigState::StopCopy.raw());
                let fresh = dev.mig.saving_file().ok_or(EINVAL)?;
                let saved = read_stream(&fresh, &[4096])?;
                assert_eq!(saved.len(), Migration::<Fake>::data_size(&dev)?);
            }
        }
        Ok(())
    }

    #[test]
    fn reset_during_a_transition_is_applied_at_its_end() -> Result {
        let dev = fake(SMALL_MEM, 11)?;
        for to in [MigState::StopCopy, MigState::Resuming] {
            // The reset arrives while STOP -> `to` holds the state mutex: it cannot wait for it,
            // so the transition completes and the reset is applied as the mutex is unlocked.
            assert!(set(&dev, MigState::Stop.raw()).is_ok());
            dev.hw.lock().reset_in_step = true;
            let result = set(&dev, to.raw());
            let hook_ran = !dev.hw.lock().reset_in_step;
            assert!(hook_ran);
            assert!(matches!(result, Ok(Some(_))));
            assert_eq!(dev.mig.get_state()?, MigState::Running.raw());
            assert!(dev.mig.saving_file().is_none());
            assert!(dev.mig.resuming_file().is_none());
            // The reset was applied once: the next transition stands.
            assert!(set(&dev, to.raw())?.is_some());
            assert_eq!(dev.mig.get_state()?, to.raw());
            if let Some(f) = dev.mig.saving_file() {
                assert!(save_enabled(&f));
            }
            dev.mig.reset_done();
        }

        // A reset during a transition that then fails: RUNNING, not the failed step's STOP.
        assert_eq!(dev.mig.get_state()?, MigState::Running.raw());
        {
            let mut hw = dev.hw.lock();
            hw.reset_in_step = true;
            hw.fail_to = Some(MigState::StopCopy);
        }
        assert!(set(&dev, MigState::StopCopy.raw()).err() == Some(EIO));
        assert_eq!(dev.mig.get_state()?, MigState::Running.raw());
        Ok(())
    }

    // DMA logging of a device that cannot write memory (`crate::migration::dma_log`).

    #[test]
    fn dma_log_protocol() -> Result {
        let dev = fake(SMALL_MEM, 30)?;
        let log = dev.mig.dma_log();
        // Idle: a report is refused, a stop is fine.
        assert!(log.page_size().is_none());
        assert!(log.report() == Err(EINVAL));
        log.stop();
        assert!(log.report() == Err(EINVAL));
        // Page sizes that are not a power of two of at least 4096 are refused, the log stays idle.
        for bad in [0, 1, 1000, 2048, 4095, 4097, 12288, 3 << 20, u64::MAX] {
            assert!(log.start(bad) == Err(EINVAL));
            assert!(log.page_size().is_none());
        }
        for size in [4096, 1 << 21, 1 << 30, 1 << 63] {
            assert!(log.start(size).is_ok());
            assert_eq!(log.page_size(), Some(size));
            // One start at a time, whatever the page size; the first one stands.
            assert!(log.start(4096) == Err(EINVAL));
            assert!(log.start(8192) == Err(EINVAL));
            assert!(log.start(1000) == Err(EINVAL));
            assert_eq!(log.page_size(), Some(size));
            // Reports succeed (nothing dirty), as often as asked.
            assert!(log.report().is_ok());
            assert!(log.report().is_ok());
            // Stop twice: idle both times.
            log.stop();
            log.stop();
            assert!(log.page_size().is_none());
            assert!(log.report() == Err(EINVAL));
        }
        Ok(())
    }

    #[test]
    fn dma_log_kept_across_reset_ended_by_close() -> Result {
        let dev = fake_precopy(SMALL_MEM, 31)?;
        for from in [MigState::Running, MigState::StopCopy, MigState::PreCopy] {
            let _file = set(&dev, from.raw())?;
            assert!(dev.mig.dma_log().start(4096).is_ok());
            // A reset (deferred or not) leaves logging active.
            dev.happen(Event::Reset)?;
            assert_eq!(dev.mig.get_state()?, MigState::Running.raw());
            assert_eq!(dev.mig.dma_log().page_size(), Some(4096));
            assert!(dev.mig.dma_log().report().is_ok());
            // State changes leave it alone too.
            let _file = set(&dev, from.raw())?;
            assert!(dev.mig.dma_log().report().is_ok());
            // A close ends it; after the next open it is idle and can start again.
            dev.happen(Event::Reopen)?;
            assert!(dev.mig.dma_log().page_size().is_none());
            assert!(dev.mig.dma_log().report() == Err(EINVAL));
            assert!(dev.mig.dma_log().start(1 << 16).is_ok());
            assert!(dev.mig.dma_log().report().is_ok());
            dev.mig.dma_log().stop();
        }
        Ok(())
    }

    // The data files.

    #[test]
    fn save_resume_round_trip() -> Result {
        let src = fake(BIG_MEM, 12)?;
        let dst = fake(BIG_MEM, 13)?;
        let dst_regs = regs(&dst);
        assert!(regs(&src) != dst_regs);
        assert!(!mem_eq(&src, &dst)?);

        let size = Migration::<Fake>::data_size(&src)?;
        let (save, _save_file) = SaveFile::<Fake>::create(&src, ident(&src)?)?;
        let mut stream = KVVec::with_capacity(size, GFP_KERNEL)?;
        let rooms = [
            1usize,
            7,
            4093,
            65_537,
            3,
            300_000,
            28,
            131_071,
            MAX_CHUNK + 41,
        ];
        let mut i = 0usize;
        loop {
            let room = rooms[i % rooms.len()];
            let before = stream.len();
            let n = save.read_into(
                &mut VecSink {
                    out: &mut stream,
                    room,
                },
                i % 2 == 1,
            )?;
            // Full reads up to the end of the stream.
            assert_eq!(n, stream.len() - before);
            assert_eq!(n, room.min(size.saturating_sub(before)));
            if n == 0 {
                break;
            }
            i += 1;
        }
        assert_eq!(stream.len(), size);
        // The end stays the end.
        let mut more = KVVec::new();
        let n = save.read_into(
            &mut VecSink {
                out: &mut more,
                room: 100,
            },
            false,
        )?;
        assert_eq!(n, 0);

        let (resume, _resume_file) = ResumeFile::<Fake>::create(&dst, ident(&dst)?)?;
        let pieces = [3usize, 1, 24, 4095, 262_147, 11, 99_999, 300_001];
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let take = pieces[i % pieces.len()].min(rest.len());
            let (now, later) = rest.split_at(take);
            let mut input = SliceSource { data: now };
            let n = resume.write_from(&mut input, i % 2 == 0)?;
            assert_eq!(n, take);
            assert_eq!(input.left(), 0);
            rest = later;
            i += 1;
        }
        // Memory records are applied as they validate, the registers only at the end.
        assert!(mem_eq(&src, &dst)?);
        assert!(regs(&dst) == dst_regs);
        assert_eq!(restores(&dst), 0);
        assert!(resume.finish().is_ok());
        assert!(regs(&dst) == regs(&src));
        assert_eq!(restores(&dst), 1);
        // The destination now saves the very same stream.
        let again = save_all(&dst)?;
        assert!(again[..] == stream[..]);
        Ok(())
    }

    /// Feeds `data` to a new resuming file of a new fake with `mem_len` bytes of memory. Returns
    /// what the writes and `finish()` returned, and whether the registers are untouched.
    fn try_resume(data: &[u8], mem_len: usize) -> Result<(Result, Result, bool)> {
        let dst = fake(mem_len, 99)?;
        let before = regs(&dst);
        let (file, _file) = ResumeFile::<Fake>::create(&dst, ident(&dst)?)?;
        let fed = feed(&file, data, &[1, 4093, 33]);
        let finished = file.finish();
        let untouched = regs(&dst) == before && restores(&dst) == 0;
        Ok((fed, finished, untouched))
    }

    #[test]
    fn malformed_streams_are_refused() -> Result {
        let src = fake(SMALL_MEM, 14)?;
        let stream = save_all(&src)?;
        let len = stream.len();
        // HEADER (60 bytes), DEVICE_REGS (24 + REGS_LEN + 4), MEMORY..., END (44 bytes).
        let regs_end = 60 + 28 + REGS_LEN;
        let end_start = len - 44;

        // Truncated: what arrived validates, but RESUMING -> STOP refuses it.
        for cut in [
            0,
            1,
            59,
            60,
            61,
            regs_end,
            regs_end + 1,
            len / 2,
            end_start,
            len - 1,
        ] {
            let (fed, finished, untouched) =
                try_resume(stream.get(..cut).ok_or(EINVAL)?, SMALL_MEM)?;
            if fed.is_err() || finished != Err(ENODATA) || !untouched {
                pr_err!("cut at {cut}: {fed:?} {finished:?} {untouched}\n");
            }
            assert!(fed.is_ok());
            assert!(finished == Err(ENODATA));
            assert!(untouched);
        }

        // One flipped bit anywhere: every byte of the HEADER, DEVICE_REGS and END records and of
        // the first MEMORY record header, and a sample of the memory data.
        let mut bad = KVVec::with_capacity(len, GFP_KERNEL)?;
        bad.extend_from_slice(&stream, GFP_KERNEL)?;
        let mut tried = 0;
        let mut pos = 0;
        while pos < len {
            let bit = 1u8 << (pos % 8);
            bad[pos] ^= bit;
            let (fed, finished, untouched) = try_resume(&bad, SMALL_MEM)?;
            bad[pos] ^= bit;
            if finished.is_ok() || !untouched {
                pr_err!("bit flip at {pos}: {fed:?} {finished:?} {untouched}\n");
            }
            assert!(finished.is_err());
            assert!(untouched);
            tried += 1;
            pos += if pos < regs_end + 36 || pos >= end_start {
                1
            } else {
                257
            };
        }
        assert!(tried > 150);
        // In a payload, the CRC catches it.
        for pos in [40, 60 + 24 + 5, regs_end + 36 + 1000, len - 10, len - 2] {
            bad[pos] ^= 0x10;
            let (fed, finished, untouched) = try_resume(&bad, SMALL_MEM)?;
            bad[pos] ^= 0x10;
            assert!(fed == Err(EBADMSG));
            assert!(finished == Err(EBADMSG));
            assert!(untouched);
        }

        // A single write with a bad record in the middle: it accepts the bytes before the record
        // and the error comes with the next write, as with read().
        let pos = regs_end + 36 + 1000;
        bad[pos] ^= 0x10;
        let dst = fake(SMALL_MEM, 97)?;
        let before = regs(&dst);
        let (file, _file) = ResumeFile::<Fake>::create(&dst, ident(&dst)?)?;
        let first = file.write_from(&mut SliceSource { data: &bad }, false);
        let accepted = *first.as_ref().unwrap_or(&0);
        if !(regs_end + 1..=pos).contains(&accepted) {
            pr_err!("one write with a bad record at {pos}: {first:?}\n");
        }
        assert!(accepted > regs_end && accepted <= pos);
        let rest = bad.get(accepted..).ok_or(EINVAL)?;
        assert!(file.write_from(&mut SliceSource { data: rest }, false) == Err(EBADMSG));
        assert!(file.finish() == Err(EBADMSG));
        assert!(regs(&dst) == before);
        assert_eq!(restores(&dst), 0);
        bad[pos] ^= 0x10;

        // Anything after END, even a complete stream.
        let mut long = KVVec::with_capacity(2 * len, GFP_KERNEL)?;
        long.extend_from_slice(&stream, GFP_KERNEL)?;
        long.push(0, GFP_KERNEL)?;
        let (fed, finished, untouched) = try_resume(&long, SMALL_MEM)?;
        assert!(fed == Err(EINVAL));
        assert!(finished == Err(EINVAL));
        assert!(untouched);
        long.truncate(len);
        long.extend_from_slice(&stream, GFP_KERNEL)?;
        let (fed, finished, untouched) = try_resume(&long, SMALL_MEM)?;
        assert!(fed == Err(EINVAL));
        assert!(finished == Err(EINVAL));
        assert!(untouched);

        // A register blob the destination rejects, in an otherwise valid stream.
        let bad_src = fake(SMALL_MEM, 15)?;
        bad_src.hw.lock().regs[0] = BAD_REG;
        let rejected = save_all(&bad_src)?;
        let (fed, finished, untouched) = try_resume(&rejected, SMALL_MEM)?;
        assert!(fed == Err(REGS_REJECTED));
        assert!(finished == Err(REGS_REJECTED));
        assert!(untouched);

        // A stream of a device with another memory size.
        let (fed, finished, untouched) = try_resume(&stream, SMALL_MEM + 1)?;
        assert!(fed == Err(ENODEV));
        assert!(finished == Err(ENODEV));
        assert!(untouched);

        // The intact stream, for contrast.
        let (fed, finished, _) = try_resume(&stream, SMALL_MEM)?;
        assert!(fed.is_ok());
        assert!(finished.is_ok());
        Ok(())
    }

    #[test]
    fn nonblocking_io_while_busy() -> Result {
        // A non-blocking read while another read of the same file is in progress (the fake reads
        // from inside `read_memory`) returns EAGAIN and disturbs nothing.
        let src = fake(SMALL_MEM, 16)?;
        let (save, _save_file) = SaveFile::<Fake>::create(&src, ident(&src)?)?;
        src.hw.lock().probe_save = Some(save.clone());
        let stream = read_stream(&save, &[4093, 1, 100_000])?;
        let (pending, probed) = {
            let mut hw = src.hw.lock();
            (hw.probe_save.take(), hw.probe_result.take())
        };
        assert!(pending.is_none());
        assert!(probed == Some(Err(EAGAIN)));
        assert_eq!(stream.len(), Migration::<Fake>::data_size(&src)?);

        // Likewise a non-blocking write while a write is in progress (from `write_memory`).
        let dst = fake(SMALL_MEM, 17)?;
        let (resume, _resume_file) = ResumeFile::<Fake>::create(&dst, ident(&dst)?)?;
        dst.hw.lock().probe_resume = Some(resume.clone());
        feed(&resume, &stream, &[4093, 1, 100_000])?;
        let (pending, probed) = {
            let mut hw = dst.hw.lock();
            (hw.probe_resume.take(), hw.probe_result.take())
        };
        assert!(pending.is_none());
        assert!(probed == Some(Err(EAGAIN)));
        assert!(resume.finish().is_ok());
        assert!(regs(&dst) == regs(&src));
        assert!(mem_eq(&src, &dst)?);
        Ok(())
    }
    // Transfers against resets, closes and state changes (issue: no transfer outlives its file).

    /// Where the first MEMORY record starts in a stream of the fake: after the HEADER record
    /// (24 + 32 + 4 bytes) and the DEVICE_REGS record (24 + REGS_LEN + 4 bytes).
    const MEM_START: usize = 60 + 28 + REGS_LEN;
    /// Length of a MEMORY record's record header.
    const RECORD_HEADER: usize = 24;

    /// A [`ByteSource`] over a slice that makes `event` happen to `dev` during its `fire_at`-th
    /// `take()`, before it copies: a `copy_from_user()` that waits on a userfaultfd or FUSE page
    /// while the device is reset or closed.
    struct StallSource<'a> {
        data: &'a [u8],
        dev: &'a Fake,
        event: Event,
        fire_at: usize,
        takes: usize,
    }

    impl ByteSource for StallSource<'_> {
        fn left(&self) -> usize {
            self.data.len()
        }

        fn take(&mut self, out: &mut [u8]) -> Result {
            if self.takes == self.fire_at {
                self.dev.happen_elsewhere(self.event)?;
            }
            self.takes += 1;
            let (now, rest) = self.data.split_at_checked(out.len()).ok_or(EXDEV)?;
            out.copy_from_slice(now);
            self.data = rest;
            Ok(())
        }
    }

    /// A copy of a fake's memory.
    fn mem_of(dev: &Fake) -> Result<KVVec<u8>> {
        let mut copy = KVVec::new();
        copy.extend_from_slice(&dev.hw.lock().mem, GFP_KERNEL)?;
        Ok(copy)
    }

    /// What the memory of `dev` must hold after `event` if nothing of the old session reached
    /// it: what it held before, or what the next user wrote.
    fn expected_after(event: Event, before: &[u8]) -> Result<KVVec<u8>> {
        let mut want = KVVec::new();
        want.extend_from_slice(before, GFP_KERNEL)?;
        if event == Event::Reopen {
            want.fill(NEXT_USER);
        }
        Ok(want)
    }

    #[test]
    fn a_write_stalled_across_reset_or_close_never_reaches_the_device() -> Result {
        let src = fake(SMALL_MEM, 20)?;
        let stream = save_all(&src)?;
        for event in [Event::Reset, Event::Close, Event::Reopen] {
            let dst = fake(SMALL_MEM, 21)?;
            let _file = set(&dst, MigState::Resuming.raw())?;
            let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
            feed(
                &resume,
                stream.get(..MEM_START).ok_or(EINVAL)?,
                &[MEM_START],
            )?;
            let before = mem_of(&dst)?;
            // The MEMORY record's header is taken first, then its payload: the event happens
            // while the payload is being copied, after the file checked its state.
            let mut input = StallSource {
                data: stream.get(MEM_START..).ok_or(EINVAL)?,
                dev: &dst,
                event,
                fire_at: 1,
                takes: 0,
            };
            let result = resume.write_from(&mut input, false);
            if result != Ok(RECORD_HEADER) {
                pr_err!("{event:?}: the stalled write returned {result:?}\n");
            }
            assert!(result == Ok(RECORD_HEADER));
            assert!(resume_disabled(&resume));
            // Not one byte of the record reached the device.
            let after = mem_of(&dst)?;
            assert!(after[..] == expected_after(event, &before)?[..]);
            assert!(resume.finish() == Err(ENODEV));
            assert_eq!(restores(&dst), 0);
        }
        Ok(())
    }

    #[test]
    fn a_device_access_racing_reset_or_close_is_refused() -> Result {
        let src = fake(SMALL_MEM, 22)?;
        let stream = save_all(&src)?;
        for event in [Event::Reset, Event::Close, Event::Reopen] {
            // Resume: the record validated, then the event, then the device write.
            let dst = fake(SMALL_MEM, 23)?;
            let _file = set(&dst, MigState::Resuming.raw())?;
            let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
            let before = mem_of(&dst)?;
            dst.hw.lock().on_access = Some(event);
            let result = resume.write_from(&mut SliceSource { data: &stream }, false);
            assert!(dst.hw.lock().on_access.is_none());
            // Everything up to the MEMORY record's payload was consumed, then the write stopped.
            assert!(result == Ok(MEM_START + RECORD_HEADER));
            assert!(mem_of(&dst)?[..] == expected_after(event, &before)?[..]);
            assert!(resume_disabled(&resume));

            // Save: the HEADER and DEVICE_REGS records were read, then the event, then the
            // device read of the first MEMORY record.
            let dev = fake(SMALL_MEM, 24)?;
            let own = save_all(&dev)?;
            let _file = set(&dev, MigState::StopCopy.raw())?;
            let save = dev.mig.saving_file().ok_or(EINVAL)?;
            dev.hw.lock().on_access = Some(event);
            let mut got = KVVec::new();
            let result = save.read_into(
                &mut VecSink {
                    out: &mut got,
                    room: usize::MAX,
                },
                false,
            );
            if result != Ok(MEM_START) {
                pr_err!("{event:?}: the read returned {result:?}\n");
            }
            assert!(result == Ok(MEM_START));
            assert!(got.get(..MEM_START) == own.get(..MEM_START));
            assert!(save_disabled(&save));
        }
        Ok(())
    }

    #[test]
    fn transfer_memory_is_allocated_on_use_and_freed_on_disable() -> Result {
        let src = fake(SMALL_MEM, 25)?;
        let stream = save_all(&src)?;
        let dev = fake(SMALL_MEM, 26)?;
        for _ in 0..3 {
            let _file = set(&dev, MigState::StopCopy.raw())?;
            let save = dev.mig.saving_file().ok_or(EINVAL)?;
            assert!(!save.holds_buffer());
            assert!(save_enabled(&save));
            assert!(save.holds_buffer());
            assert!(set(&dev, MigState::Stop.raw())?.is_none());
            // Freed although the file is still open.
            assert!(!save.holds_buffer());
            assert!(save_disabled(&save));
            assert!(!save.holds_buffer());

            let _file = set(&dev, MigState::Resuming.raw())?;
            let resume = dev.mig.resuming_file().ok_or(EINVAL)?;
            assert!(!resume.holds_buffers());
            feed(&resume, stream.get(..MEM_START).ok_or(EINVAL)?, &[7])?;
            assert!(resume.holds_buffers());
            dev.mig.reset_done();
            assert!(!resume.holds_buffers());
            assert!(set(&dev, MigState::Stop.raw())?.is_none());
        }

        // Disabled while a transfer holds the file: the transfer frees the memory as it ends.
        let _file = set(&dev, MigState::StopCopy.raw())?;
        let save = dev.mig.saving_file().ok_or(EINVAL)?;
        dev.hw.lock().on_access = Some(Event::Stop);
        let mut got = KVVec::new();
        let result = save.read_into(
            &mut VecSink {
                out: &mut got,
                room: usize::MAX,
            },
            false,
        );
        assert!(result == Ok(MEM_START));
        assert_eq!(dev.mig.get_state()?, MigState::Stop.raw());
        assert!(!save.holds_buffer());

        let _file = set(&dev, MigState::Resuming.raw())?;
        let resume = dev.mig.resuming_file().ok_or(EINVAL)?;
        dev.hw.lock().on_access = Some(Event::Reset);
        let result = resume.write_from(&mut SliceSource { data: &stream }, false);
        assert!(result == Ok(MEM_START + RECORD_HEADER));
        assert!(!resume.holds_buffers());
        Ok(())
    }

    /// An END record for a stream of `records` records and `bytes` bytes before it.
    fn end_record(records: u64, bytes: u64) -> Result<KVVec<u8>> {
        let mut out = KVVec::from_elem(0u8, 64, GFP_KERNEL)?;
        let n = crate::stream::encoder::encode_end(
            records,
            bytes,
            &crate::vfio::crc::KernelCrc32c,
            &mut out,
        )
        .map_err(|_| EINVAL)?;
        out.truncate(n);
        Ok(out)
    }

    #[test]
    fn end_needs_every_page_of_memory() -> Result {
        let src = fake(BIG_MEM, 27)?;
        let stream = save_all(&src)?;
        // The record starts: HEADER, DEVICE_REGS, three MEMORY records, END.
        let rec1 = MEM_START;
        let rec2 = rec1 + 36 + MAX_CHUNK;
        let rec3 = rec2 + 36 + MAX_CHUNK;
        let end = stream.len() - 44;
        // The stream's bytes `[start, end)` of each part in turn, and an END that counts them.
        let cut = |parts: &[(usize, usize)], records: u64| -> Result<KVVec<u8>> {
            let mut out = KVVec::new();
            for &(start, end) in parts {
                out.extend_from_slice(stream.get(start..end).ok_or(EINVAL)?, GFP_KERNEL)?;
            }
            let bytes = u64::try_from(out.len())?;
            out.extend_from_slice(&end_record(records, bytes)?, GFP_KERNEL)?;
            Ok(out)
        };
        let no_memory = cut(&[(0, rec1)], 2)?;
        let no_middle = cut(&[(0, rec2), (rec3, end)], 4)?;
        let no_last = cut(&[(0, rec3)], 4)?;
        for bad in [&no_memory, &no_middle, &no_last] {
            let (fed, finished, untouched) = try_resume(bad, BIG_MEM)?;
            assert!(fed == Err(ENODATA));
            assert!(finished == Err(ENODATA));
            assert!(untouched);
        }
        // The same cut with its END rebuilt is accepted when it covers everything: the whole
        // stream, and the whole stream with its first record sent twice.
        let twice = cut(&[(0, rec2), (rec1, end)], 6)?;
        for good in [&stream, &twice] {
            let (fed, finished, untouched) = try_resume(good, BIG_MEM)?;
            assert!(fed.is_ok());
            assert!(finished.is_ok());
            assert!(!untouched);
        }
        Ok(())
    }

    #[test]
    fn migration_data_size_does_not_touch_the_device() -> Result {
        let dev = fake(BIG_MEM, 28)?;
        let opened = dev.hw.lock().identities;
        assert_eq!(opened, 1);
        let size = Migration::<Fake>::data_size(&dev)?;
        for _ in 0..10 {
            assert_eq!(Migration::<Fake>::data_size(&dev)?, size);
        }
        let _file = set(&dev, MigState::StopCopy.raw())?;
        assert_eq!(Migration::<Fake>::data_size(&dev)?, size);
        assert_eq!(dev.hw.lock().identities, opened);
        // Known again from the next open.
        dev.mig.close();
        Migration::open(&**dev)?;
        assert_eq!(dev.hw.lock().identities, opened + 1);
        Ok(())
    }

    /// A [`VecSink`] that raises a fatal signal on the current task (the test's) once it took a
    /// first chunk: `kill -9` arriving during a long `read()`.
    struct KillSink<'a> {
        out: VecSink<'a>,
        signal: Option<FatalSignal>,
    }

    impl ByteSink for KillSink<'_> {
        fn room(&self) -> usize {
            self.out.room()
        }

        fn put(&mut self, data: &[u8]) -> Result {
            self.out.put(data)?;
            if self.signal.is_none() {
                self.signal = Some(FatalSignal::raise()?);
            }
            Ok(())
        }
    }

    /// A [`SliceSource`] that raises a fatal signal once it gave a first chunk.
    struct KillSource<'a> {
        input: SliceSource<'a>,
        signal: Option<FatalSignal>,
    }

    impl ByteSource for KillSource<'_> {
        fn left(&self) -> usize {
            self.input.left()
        }

        fn take(&mut self, out: &mut [u8]) -> Result {
            self.input.take(out)?;
            if self.signal.is_none() {
                self.signal = Some(FatalSignal::raise()?);
            }
            Ok(())
        }
    }

    /// Length of the HEADER record: 24 bytes of record header, 32 of payload, 4 of CRC.
    const HEADER_RECORD: usize = 60;

    #[test]
    fn a_fatal_signal_ends_a_long_transfer_between_records() -> Result {
        let src = fake(BIG_MEM, 29)?;
        let stream = save_all(&src)?;

        // Save: one read with room for everything stops after the first record; with the signal
        // pending before it starts, it moves nothing (`EINTR`). The stream goes on intact.
        let _file = set(&src, MigState::StopCopy.raw())?;
        let save = src.mig.saving_file().ok_or(EINVAL)?;
        {
            let _signal = FatalSignal::raise()?;
            let mut got = KVVec::new();
            let result = save.read_into(
                &mut VecSink {
                    out: &mut got,
                    room: usize::MAX,
                },
                false,
            );
            assert!(result == Err(EINTR));
            assert!(got.is_empty());
        }
        let mut got = KVVec::new();
        let result = save.read_into(
            &mut KillSink {
                out: VecSink {
                    out: &mut got,
                    room: usize::MAX,
                },
                signal: None,
            },
            false,
        );
        if result != Ok(HEADER_RECORD) {
            pr_err!("the killed read returned {result:?}\n");
        }
        assert!(result == Ok(HEADER_RECORD));
        got.extend_from_slice(&read_stream(&save, &[usize::MAX])?, GFP_KERNEL)?;
        assert!(got[..] == stream[..]);
        assert!(set(&src, MigState::Stop.raw())?.is_none());

        // Resume: one write of the whole stream stops after the first piece it moved; with the
        // signal pending before it starts, it consumes nothing. The rest resumes the device.
        let dst = fake(BIG_MEM, 30)?;
        let _file = set(&dst, MigState::Resuming.raw())?;
        let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
        {
            let _signal = FatalSignal::raise()?;
            let result = resume.write_from(&mut SliceSource { data: &stream }, false);
            assert!(result == Err(EINTR));
        }
        let mut input = KillSource {
            input: SliceSource { data: &stream },
            signal: None,
        };
        let result = resume.write_from(&mut input, false);
        drop(input);
        if result != Ok(RECORD_HEADER) {
            pr_err!("the killed write returned {result:?}\n");
        }
        assert!(result == Ok(RECORD_HEADER));
        feed(
            &resume,
            stream.get(RECORD_HEADER..).ok_or(EINVAL)?,
            &[usize::MAX],
        )?;
        assert!(set(&dst, MigState::Stop.raw())?.is_none());
        assert!(mem_eq(&src, &dst)?);
        assert_eq!(regs(&src), regs(&dst));
        Ok(())
    }

    // PRE_COPY.

    /// One `read()` of up to `room` bytes, appended to `out`.
    fn read_some(file: &SaveFile<Fake>, out: &mut KVVec<u8>, room: usize) -> Result<usize> {
        file.read_into(&mut VecSink { out, room }, false)
    }

    /// `MIG_DATA_SIZE` as a `u64`.
    fn data_size_of(dev: &Arc<Fake>) -> Result<u64> {
        Ok(u64::try_from(Migration::<Fake>::data_size(dev)?)?)
    }

    /// The bytes of a MEMORY record with `len` bytes of data.
    const fn mem_rec(len: u64) -> u64 {
        36 + len
    }

    /// DEVICE_REGS and END: what STOP_COPY adds after the memory.
    const TAIL: u64 = 28 + REGS_LEN as u64 + 44;

    /// The initial bytes of a [`BIG_MEM`] stream: HEADER and three MEMORY records.
    const BIG_INITIAL: u64 = 60 + 3 * 36 + BIG_MEM as u64;

    /// A page of the memory, in bytes.
    const PAGE: usize = 4096;

    #[test]
    fn precopy_accounting_is_exact() -> Result {
        let dev = fake_precopy(BIG_MEM, 40)?;
        assert!(set(&dev, MigState::PreCopy.raw())?.is_some());
        assert!(dev.armed());
        let file = dev.mig.saving_file().ok_or(EINVAL)?;
        let chunk = u64::try_from(MAX_CHUNK)?;
        let mut stream = KVVec::new();

        // At entry: everything is initial; MIG_DATA_SIZE is the whole stop-copy stream.
        assert_eq!(file.precopy_info()?, (BIG_INITIAL, 0));
        assert_eq!(data_size_of(&dev)?, BIG_INITIAL + TAIL);
        assert!(poll_ready(&file));
        // Pages ahead of the initial pass are part of it.
        dev.guest_write(5 * PAGE, &[1, 2, 3])?;
        assert_eq!(file.precopy_info()?, (BIG_INITIAL, 0));

        // Part of the HEADER: the unread rest of the staged record is initial.
        assert_eq!(read_some(&file, &mut stream, 10)?, 10);
        assert_eq!(file.precopy_info()?, (BIG_INITIAL - 10, 0));
        // The rest of the HEADER and the first chunk.
        let first = usize::try_from(50 + mem_rec(chunk))?;
        assert_eq!(read_some(&file, &mut stream, first)?, first);
        let left = BIG_INITIAL - 60 - mem_rec(chunk);
        assert_eq!(file.precopy_info()?, (left, 0));

        // Pages behind the pass are dirty; a page written twice counts once; a page ahead is
        // part of the pass still.
        dev.guest_write(3 * PAGE + 7, &[9])?;
        dev.guest_write(3 * PAGE + 100, &[8, 8])?;
        dev.guest_write(70 * PAGE, &[7])?;
        assert_eq!(file.precopy_info()?, (left, mem_rec(4096)));
        assert_eq!(data_size_of(&dev)?, left + mem_rec(4096) + TAIL);

        // The rest of the initial pass, in one read: page 70 went with it.
        let rest = usize::try_from(left)?;
        assert_eq!(read_some(&file, &mut stream, rest)?, rest);
        assert_eq!(file.precopy_info()?, (0, mem_rec(4096)));

        // A page written while the run of page 3 is read: dirty again afterwards.
        dev.hw.lock().write_on_take = Some((5 * PAGE, 0x55));
        let run = usize::try_from(mem_rec(4096))?;
        assert_eq!(read_some(&file, &mut stream, run)?, run);
        assert_eq!(file.precopy_info()?, (0, mem_rec(4096)));
        assert_eq!(read_some(&file, &mut stream, run)?, run);

        // Caught up: ENOMSG on a read that copies nothing, not readable.
        assert_eq!(file.precopy_info()?, (0, 0));
        assert_eq!(data_size_of(&dev)?, TAIL);
        assert_eq!(read_some(&file, &mut stream, 100), Err(ENOMSG));
        assert!(!poll_ready(&file));

        // Two runs, read in one call: a short count at the temporary end, then ENOMSG.
        dev.guest_write(10 * PAGE, &[1])?;
        dev.guest_write(20 * PAGE, &[2])?;
        assert_eq!(file.precopy_info()?, (0, 2 * mem_rec(4096)));
        assert!(poll_ready(&file));
        let two = usize::try_from(2 * mem_rec(4096))?;
        assert_eq!(read_some(&file, &mut stream, two + 1000)?, two);
        assert_eq!(read_some(&file, &mut stream, 1), Err(ENOMSG));

        // The last, partial page; a staged record's unread part is dirty.
        dev.guest_write(BIG_MEM - 1, &[3])?;
        let last = mem_rec(u64::try_from(BIG_MEM % PAGE)?);
        assert_eq!(file.precopy_info()?, (0, last));
        assert_eq!(read_some(&file, &mut stream, 10)?, 10);
        assert_eq!(file.precopy_info()?, (0, last - 10));
        assert_eq!(data_size_of(&dev)?, last - 10 + TAIL);
        assert!(poll_ready(&file));
        Ok(())
    }

    /// Whether a saving file polls readable.
    fn poll_ready(file: &SaveFile<Fake>) -> bool {
        file.poll_mask() & crate::vfio::data_file::poll_mask::READABLE != 0
    }

    #[test]
    fn every_precopy_arc() -> Result {
        let dev = fake_precopy(SMALL_MEM, 41)?;
        let mut out = KVVec::new();

        // RUNNING -> PRE_COPY -> PRE_COPY_P2P -> PRE_COPY: one file, reads go on.
        assert!(set(&dev, MigState::PreCopy.raw())?.is_some());
        let file = dev.mig.saving_file().ok_or(EINVAL)?;
        assert!(dev.armed());
        assert_eq!(read_some(&file, &mut out, 30)?, 30);
        assert!(set(&dev, MigState::PreCopyP2p.raw())?.is_none());
        let same = dev.mig.saving_file().ok_or(EINVAL)?;
        assert!(Arc::ptr_eq(&file, &same));
        assert_eq!(read_some(&file, &mut out, 30)?, 30);
        assert!(file.precopy_info().is_ok());
        assert!(set(&dev, MigState::PreCopy.raw())?.is_none());
        assert!(dev.armed());
        assert!(save_enabled(&file));
        // PRE_COPY -> RUNNING: the session ends.
        assert!(set(&dev, MigState::Running.raw())?.is_none());
        assert!(dev.mig.saving_file().is_none());
        assert!(!dev.armed());
        assert!(save_disabled(&file));
        assert_eq!(file.precopy_info(), Err(EINVAL));
        // A new session: the old file stays dead.
        assert!(set(&dev, MigState::PreCopy.raw())?.is_some());
        assert!(dev.armed());
        assert_eq!(file.precopy_info(), Err(ENODEV));
        assert!(save_disabled(&file));

        // RUNNING_P2P -> PRE_COPY_P2P -> RUNNING_P2P.
        assert!(set(&dev, MigState::RunningP2p.raw())?.is_none());
        assert!(!dev.armed());
        assert!(set(&dev, MigState::PreCopyP2p.raw())?.is_some());
        let file = dev.mig.saving_file().ok_or(EINVAL)?;
        assert!(dev.armed());
        assert!(save_enabled(&file));
        assert!(set(&dev, MigState::RunningP2p.raw())?.is_none());
        assert_eq!(dev.mig.get_state()?, MigState::RunningP2p.raw());
        assert!(!dev.armed());
        assert!(save_disabled(&file));

        // PRE_COPY -> STOP_COPY (via PRE_COPY_P2P): the same file, no new one.
        assert!(set(&dev, MigState::PreCopy.raw())?.is_some());
        let file = dev.mig.saving_file().ok_or(EINVAL)?;
        assert!(set(&dev, MigState::StopCopy.raw())?.is_none());
        let same = dev.mig.saving_file().ok_or(EINVAL)?;
        assert!(Arc::ptr_eq(&file, &same));
        assert!(save_enabled(&file));
        assert_eq!(file.precopy_info(), Err(EINVAL));
        // STOP_COPY -> PRE_COPY is refused and changes nothing.
        assert_eq!(set(&dev, MigState::PreCopy.raw()).err(), Some(EINVAL));
        assert_eq!(set(&dev, MigState::PreCopyP2p.raw()).err(), Some(EINVAL));
        assert_eq!(dev.mig.get_state()?, MigState::StopCopy.raw());
        assert!(save_enabled(&file));
        // STOP_COPY -> STOP ends it.
        assert!(set(&dev, MigState::Stop.raw())?.is_none());
        assert!(!dev.armed());
        assert!(save_disabled(&file));

        // A reset and a close in PRE_COPY and PRE_COPY_P2P end the session.
        for state in [MigState::PreCopy, MigState::PreCopyP2p] {
            for close in [false, true] {
                set(&dev, MigState::Running.raw())?;
                assert!(set(&dev, state.raw())?.is_some());
                let file = dev.mig.saving_file().ok_or(EINVAL)?;
                assert!(dev.armed());
                if close {
                    dev.mig.close();
                    Migration::open(&**dev)?;
                } else {
                    dev.mig.reset_done();
                }
                assert_eq!(dev.mig.get_state()?, MigState::Running.raw());
                assert!(dev.mig.saving_file().is_none());
                assert!(!dev.armed());
                assert!(save_disabled(&file));
                assert_eq!(file.precopy_info(), Err(EINVAL));
                assert!(!file.holds_buffer());
            }
        }
        Ok(())
    }

    #[test]
    fn precopy_pollers_are_woken() -> Result {
        let dev = fake_precopy(SMALL_MEM, 44)?;
        let wakes = || dev.wakes.load(Relaxed);
        assert!(set(&dev, MigState::PreCopy.raw())?.is_some());
        let file = dev.mig.saving_file().ok_or(EINVAL)?;
        let mut out = KVVec::new();
        // Caught up: nothing to read, not readable.
        loop {
            match read_some(&file, &mut out, 65_536) {
                Ok(_) => {}
                Err(e) if e == ENOMSG => break,
                Err(e) => return Err(e),
            }
        }
        assert!(!poll_ready(&file));
        // A page dirtied wakes a poller, and the file is readable.
        let before = wakes();
        dev.guest_write(PAGE + 1, &[7])?;
        assert!(wakes() > before);
        assert!(poll_ready(&file));
        // So does entering STOP_COPY (readable for good) and the end of the session.
        let before = wakes();
        assert!(set(&dev, MigState::StopCopy.raw())?.is_none());
        assert!(wakes() > before);
        assert!(poll_ready(&file));
        let before = wakes();
        assert!(set(&dev, MigState::Stop.raw())?.is_none());
        assert!(wakes() > before);
        assert!(save_disabled(&file));
        Ok(())
    }

    #[test]
    fn precopy_stream_resumes_into_a_second_fake() -> Result {
        let src = fake_precopy(BIG_MEM, 42)?;
        let dst = fake(BIG_MEM, 43)?;
        let mut stream = KVVec::new();
        assert!(set(&src, MigState::PreCopy.raw())?.is_some());
        let file = src.mig.saving_file().ok_or(EINVAL)?;

        // Part of the initial pass; writes behind and ahead of it, one page twice.
        assert_eq!(read_some(&file, &mut stream, 300_001)?, 300_001);
        src.guest_write(2 * PAGE + 1, &[0xA1; 300])?;
        src.guest_write(100 * PAGE, &KVVec::from_elem(0xA2u8, 5000, GFP_KERNEL)?)?;
        src.guest_write(2 * PAGE + 2000, &[0xA3; 10])?;
        // Up to the temporary end, in odd pieces.
        loop {
            match read_some(&file, &mut stream, 65_537) {
                Ok(_) => {}
                Err(e) if e == ENOMSG => break,
                Err(e) => return Err(e),
            }
        }
        assert_eq!(file.precopy_info()?, (0, 0));
        // More writes, one during a read, then PRE_COPY_P2P: reads go on.
        src.guest_write(0, &KVVec::from_elem(0xB1u8, 70 * PAGE, GFP_KERNEL)?)?;
        src.hw.lock().write_on_take = Some((129 * PAGE + 3, 0xB2));
        assert!(set(&src, MigState::PreCopyP2p.raw())?.is_none());
        assert_eq!(read_some(&file, &mut stream, 1000)?, 1000);
        src.guest_write(64 * PAGE - 1, &[0xB3; 2])?;
        // What STOP_COPY will yield.
        let size = usize::try_from(data_size_of(&src)?)?;
        assert!(set(&src, MigState::StopCopy.raw())?.is_none());
        let before = stream.len();
        let mut i = 0usize;
        loop {
            // Never ENOMSG in STOP_COPY.
            let n = read_some(&file, &mut stream, [7usize, 4093, 65_537][i % 3])?;
            if n == 0 {
                break;
            }
            i += 1;
        }
        assert_eq!(stream.len() - before, size);
        assert_eq!(read_some(&file, &mut stream, 10)?, 0);

        // The destination gets the source's final memory and registers.
        assert!(set(&dst, MigState::Stop.raw())?.is_none());
        assert!(set(&dst, MigState::Resuming.raw())?.is_some());
        let resume = dst.mig.resuming_file().ok_or(EINVAL)?;
        feed(&resume, &stream, &[3, 262_147, 11, 99_999])?;
        assert!(set(&dst, MigState::Stop.raw())?.is_none());
        assert!(mem_eq(&src, &dst)?);
        assert!(regs(&dst) == regs(&src));
        Ok(())
    }
}
