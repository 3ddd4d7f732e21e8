// SPDX-License-Identifier: GPL-2.0

//! The current task, for transfers that may run long: fatal signals and rescheduling.
//!
//! C headers: [`include/linux/sched/signal.h`](srctree/include/linux/sched/signal.h),
//! [`include/linux/sched.h`](srctree/include/linux/sched.h)

use super::bindings;

/// Whether the current task has a fatal signal pending (`fatal_signal_pending(current)`): a
/// long read or write stops early, so that `kill -9` ends it promptly.
pub(crate) fn fatal_signal_pending() -> bool {
    // SAFETY: The helper only looks at the current task, which is always valid.
    unsafe { bindings::qvp_fatal_signal_pending() }
}

/// Gives the CPU away if a reschedule is due (`cond_resched()`). Must be called where sleeping
/// is allowed.
pub(crate) fn cond_resched() {
    // SAFETY: `cond_resched()` has no requirement beyond process context, which every caller of
    // this function (a read or write system call) runs in.
    unsafe { bindings::qvp_cond_resched() }
}

/// A fatal signal pending on the current task, for the KUnit tests: [`FatalSignal::raise`] queues
/// `SIGKILL` on the test's kernel thread, and dropping the guard flushes it again.
///
/// # Invariants
///
/// While the guard exists, the current task (which created it: the guard is neither `Send` nor
/// `Sync`) is a kernel thread that lets `SIGKILL` in.
#[cfg(CONFIG_KUNIT = "y")]
pub(crate) struct FatalSignal {
    _not_send: core::marker::PhantomData<*mut ()>,
}

#[cfg(CONFIG_KUNIT = "y")]
impl FatalSignal {
    /// Makes [`fatal_signal_pending`] true for the current task until the guard is dropped.
    /// `EPERM` on a user task, which the signal would kill.
    pub(crate) fn raise() -> kernel::error::Result<Self> {
        // SAFETY: The helper acts on the current task only, and refuses a user task.
        kernel::error::to_result(unsafe { bindings::qvp_test_raise_fatal_signal() })?;
        // INVARIANT: The helper succeeded, so the current task is a kernel thread that lets
        // `SIGKILL` in, and the guard stays on this task.
        Ok(Self {
            _not_send: core::marker::PhantomData,
        })
    }
}

#[cfg(CONFIG_KUNIT = "y")]
impl Drop for FatalSignal {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, the current task is the kernel thread that raised the
        // signal; flushing its signals and ignoring `SIGKILL` again returns it to how it was.
        unsafe { bindings::qvp_test_clear_fatal_signal() }
    }
}
