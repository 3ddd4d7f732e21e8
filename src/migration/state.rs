// SPDX-License-Identifier: GPL-2.0

//! The VFIO v2 migration states and the single-step arcs between them.
//!
//! Pure logic with no kernel types: it also builds as part of the host crate (`tests/host`).
//!
//! The uAPI (`include/uapi/linux/vfio.h`, `enum vfio_device_mig_state`) defines the states; the
//! VFIO core (`vfio_mig_get_next_state()`) splits a requested transition into single steps, and
//! [`Arc::of`] says what the driver does for each step it may be asked to take.

/// A migration state of `enum vfio_device_mig_state`; the discriminants are the uAPI values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum MigState {
    /// The device failed a transition; only a reset leaves this state.
    Error = 0,
    /// Stopped: no DMA, no interrupts, no internal state change.
    Stop = 1,
    /// Running normally.
    Running = 2,
    /// Stopped, and the saving data FD streams the complete device state.
    StopCopy = 3,
    /// Stopped, and the resuming data FD accepts a device state.
    Resuming = 4,
    /// Running, but initiating no peer-to-peer DMA.
    RunningP2p = 5,
    /// Running, and the saving data FD streams the state while it changes.
    PreCopy = 6,
    /// [`MigState::PreCopy`] without peer-to-peer DMA.
    PreCopyP2p = 7,
}

impl MigState {
    /// Every state, in uAPI order.
    pub(crate) const ALL: [MigState; 8] = [
        MigState::Error,
        MigState::Stop,
        MigState::Running,
        MigState::StopCopy,
        MigState::Resuming,
        MigState::RunningP2p,
        MigState::PreCopy,
        MigState::PreCopyP2p,
    ];

    /// Converts a uAPI value; `None` for values the uAPI does not define.
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| *s as u32 == raw)
    }

    /// The uAPI value.
    pub(crate) fn raw(self) -> u32 {
        self as u32
    }
}

/// What the driver does for one single-step arc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arc {
    /// `RUNNING -> RUNNING_P2P`, `PRE_COPY -> PRE_COPY_P2P`: stop initiating peer-to-peer DMA and
    /// wait for outstanding peer-to-peer DMA.
    QuiesceP2p,
    /// `RUNNING_P2P -> RUNNING`, `PRE_COPY_P2P -> PRE_COPY`: initiate peer-to-peer DMA again.
    ResumeP2p,
    /// `RUNNING_P2P -> STOP` (or `RUNNING -> STOP` without P2P): stop the device.
    Stop,
    /// `STOP -> RUNNING_P2P` (or `STOP -> RUNNING` without P2P): let the device run again.
    Start,
    /// `STOP -> STOP_COPY`: open a saving data FD with the complete state.
    BeginStopCopy,
    /// `RUNNING -> PRE_COPY`, `RUNNING_P2P -> PRE_COPY_P2P`: open a saving data FD while the
    /// device runs.
    BeginPreCopy,
    /// `PRE_COPY -> RUNNING`, `PRE_COPY_P2P -> RUNNING_P2P`: end the pre-copy session.
    EndPreCopy,
    /// `PRE_COPY(_P2P) -> STOP_COPY`: stop, and continue the same data FD up to the end of the
    /// state.
    PreCopyToStopCopy,
    /// `STOP_COPY -> STOP`: end the saving session.
    EndStopCopy,
    /// `STOP -> RESUMING`: open a resuming data FD.
    BeginResume,
    /// `RESUMING -> STOP`: validate everything written and apply it to the device.
    FinishResume,
}

impl Arc {
    /// The action for the single step `from -> to`, or `None` if it is not a single-step arc of the
    /// uAPI (the VFIO core never asks for one; the driver rejects it if it does).
    pub(crate) fn of(from: MigState, to: MigState) -> Option<Arc> {
        use MigState::*;
        Some(match (from, to) {
            (Running, RunningP2p) | (PreCopy, PreCopyP2p) => Arc::QuiesceP2p,
            (RunningP2p, Running) | (PreCopyP2p, PreCopy) => Arc::ResumeP2p,
            (RunningP2p, Stop) | (Running, Stop) => Arc::Stop,
            (Stop, RunningP2p) | (Stop, Running) => Arc::Start,
            (Stop, StopCopy) => Arc::BeginStopCopy,
            (Running, PreCopy) | (RunningP2p, PreCopyP2p) => Arc::BeginPreCopy,
            (PreCopy, Running) | (PreCopyP2p, RunningP2p) => Arc::EndPreCopy,
            (PreCopy, StopCopy) | (PreCopyP2p, StopCopy) => Arc::PreCopyToStopCopy,
            (StopCopy, Stop) => Arc::EndStopCopy,
            (Stop, Resuming) => Arc::BeginResume,
            (Resuming, Stop) => Arc::FinishResume,
            _ => return None,
        })
    }
}

/// `VFIO_MIGRATION_STOP_COPY`: STOP, STOP_COPY and RESUMING.
pub(crate) const FLAG_STOP_COPY: u32 = 1 << 0;
/// `VFIO_MIGRATION_P2P`: RUNNING_P2P (and PRE_COPY_P2P with PRE_COPY).
pub(crate) const FLAG_P2P: u32 = 1 << 1;
/// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY (and PRE_COPY_P2P with P2P).
pub(crate) const FLAG_PRE_COPY: u32 = 1 << 2;

#[cfg_attr(not(CONFIG_KUNIT = "y"), allow(dead_code))]
impl MigState {
    /// The `VFIO_MIGRATION_*` flags a device needs to support this state.
    fn required_flags(self) -> u32 {
        match self {
            MigState::Stop | MigState::Running | MigState::StopCopy | MigState::Resuming => {
                FLAG_STOP_COPY
            }
            MigState::RunningP2p => FLAG_STOP_COPY | FLAG_P2P,
            MigState::PreCopy => FLAG_STOP_COPY | FLAG_PRE_COPY,
            MigState::PreCopyP2p => FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY,
            MigState::Error => !0,
        }
    }

    /// Whether a device with migration `flags` supports this state.
    pub(crate) fn supported(self, flags: u32) -> bool {
        self.required_flags() & flags == self.required_flags()
    }
}

// The planner below is what the VFIO core does for the real device; the driver itself asks the
// core (`vfio_mig_get_next_state()`), and the planner serves the fake device of the KUnit tests
// and the host tests.
#[cfg_attr(not(CONFIG_KUNIT = "y"), allow(dead_code))]
/// The next step on the shortest path from `from` towards `to` with every state reachable, as the
/// uAPI defines the combination transitions (`vfio_from_fsm_table` in `drivers/vfio/vfio_main.c`).
fn full_table_step(from: MigState, to: MigState) -> MigState {
    use MigState::*;
    match (from, to) {
        _ if from == to => from,
        (Error, _) | (_, Error) => Error,
        (Stop, Running | PreCopy | PreCopyP2p | RunningP2p) => RunningP2p,
        (Stop, StopCopy) => StopCopy,
        (Stop, Resuming) => Resuming,
        (Stop, Stop) => Stop,
        (Running, PreCopy) => PreCopy,
        (Running, _) => RunningP2p,
        (PreCopy, PreCopyP2p | StopCopy) => PreCopyP2p,
        (PreCopy, _) => Running,
        (PreCopyP2p, PreCopy) => PreCopy,
        (PreCopyP2p, StopCopy) => StopCopy,
        (PreCopyP2p, _) => RunningP2p,
        (StopCopy, PreCopy | PreCopyP2p) => Error,
        (StopCopy, _) => Stop,
        (Resuming, _) => Stop,
        (RunningP2p, Running | PreCopy) => Running,
        (RunningP2p, PreCopyP2p) => PreCopyP2p,
        (RunningP2p, _) => Stop,
    }
}

/// The next single step from `cur` towards the uAPI state `new` for a device with migration
/// `flags`: the pure-Rust equivalent of `vfio_mig_get_next_state()`. Steps through unsupported
/// states are skipped; `None` where the kernel returns `-EINVAL` (unsupported or out-of-range
/// states, ERROR, and `STOP_COPY -> PRE_COPY(_P2P)`).
pub(crate) fn next_step(flags: u32, cur: MigState, new: u32) -> Option<MigState> {
    let new = MigState::from_raw(new)?;
    if !cur.supported(flags) || !new.supported(flags) {
        return None;
    }
    let mut next = full_table_step(cur, new);
    while next != MigState::Error && !next.supported(flags) {
        next = full_table_step(next, new);
    }
    (next != MigState::Error).then_some(next)
}
