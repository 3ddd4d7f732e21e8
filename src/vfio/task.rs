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
