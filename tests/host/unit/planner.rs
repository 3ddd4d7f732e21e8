// SPDX-License-Identifier: GPL-2.0

//! Tests of the migration state machine's arc planner against the uAPI's combination transitions.

use std::vec;

use crate::src::migration::state::{
    next_step,
    Arc,
    MigState::{self, *},
    FLAG_P2P,
    FLAG_PRE_COPY,
    FLAG_STOP_COPY, //
};

/// Follows the planner from `from` to `to`, returning the states visited after `from`.
fn path(flags: u32, from: MigState, to: MigState) -> Option<std::vec::Vec<MigState>> {
    let mut cur = from;
    let mut out = std::vec::Vec::new();
    while cur != to {
        cur = next_step(flags, cur, to.raw())?;
        out.push(cur);
        assert!(out.len() <= 8, "no path from {from:?} to {to:?} converges");
    }
    Some(out)
}

const P2P: u32 = FLAG_STOP_COPY | FLAG_P2P;
const ALL: u32 = FLAG_STOP_COPY | FLAG_P2P | FLAG_PRE_COPY;

#[test]
fn paths_with_p2p_are_the_uapi_shortest_paths() {
    assert_eq!(
        path(P2P, Running, StopCopy),
        Some(vec![RunningP2p, Stop, StopCopy])
    );
    assert_eq!(
        path(P2P, Running, Resuming),
        Some(vec![RunningP2p, Stop, Resuming])
    );
    assert_eq!(
        path(P2P, Resuming, Running),
        Some(vec![Stop, RunningP2p, Running])
    );
    assert_eq!(
        path(P2P, StopCopy, Running),
        Some(vec![Stop, RunningP2p, Running])
    );
    assert_eq!(path(P2P, StopCopy, Resuming), Some(vec![Stop, Resuming]));
    assert_eq!(path(P2P, Stop, Running), Some(vec![RunningP2p, Running]));
    assert_eq!(path(P2P, Running, Running), Some(vec![]));
}

#[test]
fn without_p2p_the_p2p_states_are_skipped() {
    assert_eq!(path(FLAG_STOP_COPY, Running, Stop), Some(vec![Stop]));
    assert_eq!(
        path(FLAG_STOP_COPY, Running, StopCopy),
        Some(vec![Stop, StopCopy])
    );
    assert_eq!(
        path(FLAG_STOP_COPY, Resuming, Running),
        Some(vec![Stop, Running])
    );
    assert_eq!(next_step(FLAG_STOP_COPY, Running, RunningP2p.raw()), None);
}

#[test]
fn pre_copy_paths() {
    assert_eq!(
        path(ALL, Running, StopCopy),
        Some(vec![RunningP2p, Stop, StopCopy])
    );
    assert_eq!(
        path(ALL, PreCopy, StopCopy),
        Some(vec![PreCopyP2p, StopCopy])
    );
    assert_eq!(
        path(ALL, PreCopyP2p, Running),
        Some(vec![RunningP2p, Running])
    );
    assert_eq!(
        path(FLAG_STOP_COPY | FLAG_PRE_COPY, PreCopy, StopCopy),
        Some(vec![StopCopy])
    );
    // STOP_COPY cannot go back to pre-copy.
    assert_eq!(next_step(ALL, StopCopy, PreCopy.raw()), None);
    assert_eq!(next_step(ALL, StopCopy, PreCopyP2p.raw()), None);
}

#[test]
fn illegal_requests_are_rejected() {
    for cur in [Running, Stop, StopCopy, Resuming, RunningP2p] {
        for bad in [Error.raw(), PreCopy.raw(), PreCopyP2p.raw(), 8, u32::MAX] {
            assert_eq!(next_step(P2P, cur, bad), None, "{cur:?} -> {bad}");
        }
    }
    // The current state itself must be supported (the kernel WARNs otherwise).
    assert_eq!(next_step(P2P, Error, Running.raw()), None);
    assert_eq!(next_step(P2P, PreCopy, Running.raw()), None);
}

#[test]
fn every_planned_step_is_a_single_step_arc_the_driver_handles() {
    for flags in [FLAG_STOP_COPY, P2P, FLAG_STOP_COPY | FLAG_PRE_COPY, ALL] {
        for from in MigState::ALL {
            for to in MigState::ALL {
                if from == to || !from.supported(flags) || !to.supported(flags) {
                    continue;
                }
                if from == StopCopy && matches!(to, PreCopy | PreCopyP2p) {
                    continue;
                }
                let steps = path(flags, from, to);
                let Some(steps) = steps else {
                    // Only ERROR is unreachable among supported states.
                    assert_eq!(to, Error, "{from:?} -> {to:?} with flags {flags:#x}");
                    continue;
                };
                let mut cur = from;
                for next in steps {
                    assert!(
                        Arc::of(cur, next).is_some(),
                        "{cur:?} -> {next:?} planned but not a single-step arc"
                    );
                    // Data states are never interior steps, except that a path that starts in
                    // pre-copy stays in the saving group.
                    if next != to {
                        assert!(!matches!(next, StopCopy | Resuming));
                        assert!(
                            !matches!(next, PreCopy | PreCopyP2p)
                                || matches!(from, PreCopy | PreCopyP2p)
                        );
                    }
                    cur = next;
                }
            }
        }
    }
}
