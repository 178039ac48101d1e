//! What follows a failed attempt: the next candidate, a new round of every candidate after a wait
//! (when capacity or quota was the problem, which time may fix), or giving up.
//!
//! GitHub keeps a job queued for 24 hours, and Fargate never falls back from Spot or waits for
//! capacity by itself, so an account at its vCPU quota or a region short of Spot capacity should
//! make a job wait, not fail: rounds repeat with backoff until `capacity_wait_seconds` is spent.

use crate::domain::ids::Attempt;
use serde::{Deserialize, Serialize};

/// Why an attempt failed, as far as the next step cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No capacity, or an account quota reached: worth waiting for.
    Capacity,
    /// Anything else (registration timeout, task stopped, runner taken).
    Other,
}

/// What the state machine does after `CleanupAttempt` (the ASL's `$.next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAttempt {
    /// The attempt to start next (attempts count on across rounds).
    pub number: Attempt,
    /// Seconds to wait before it (a new round after capacity failures), 0 for none.
    pub wait_seconds: u32,
    /// No attempt follows: the job has failed.
    pub exhausted: bool,
}

/// The first wait of a new round; each later one doubles, up to [`MAX_WAIT_SECONDS`].
pub const FIRST_WAIT_SECONDS: u32 = 30;
pub const MAX_WAIT_SECONDS: u32 = 300;

/// Candidate index (0-based) of an attempt (1-based) in a plan of `count` candidates.
pub fn candidate_index(attempt: Attempt, count: u32) -> usize {
    ((attempt.get() - 1) % count.max(1)) as usize
}

/// The round (1-based) an attempt belongs to.
pub fn round_of(attempt: Attempt, count: u32) -> u32 {
    (attempt.get() - 1) / count.max(1) + 1
}

/// The wait before round `round + 1`, given the horizon; `None` when the horizon is spent.
pub fn wait_before_next_round(round: u32, horizon_seconds: u32) -> Option<u32> {
    let mut spent: u32 = 0;
    let mut wait = 0;
    for r in 1..=round {
        let remaining = horizon_seconds.saturating_sub(spent);
        if remaining == 0 {
            return None;
        }
        let step = FIRST_WAIT_SECONDS
            .saturating_mul(1u32.checked_shl(r - 1).unwrap_or(u32::MAX))
            .min(MAX_WAIT_SECONDS);
        wait = step.min(remaining);
        spent = spent.saturating_add(wait);
    }
    Some(wait)
}

/// After attempt `attempt` of a plan of `count` candidates failed with `failure`.
pub fn next_attempt(
    attempt: Attempt,
    count: u32,
    failure: Failure,
    horizon_seconds: u32,
) -> NextAttempt {
    let count = count.max(1);
    let next = attempt.next();
    if !attempt.get().is_multiple_of(count) {
        return NextAttempt {
            number: next,
            wait_seconds: 0,
            exhausted: false,
        };
    }
    let wait = match failure {
        Failure::Capacity => wait_before_next_round(round_of(attempt, count), horizon_seconds),
        Failure::Other => None,
    };
    match wait {
        Some(wait_seconds) => NextAttempt {
            number: next,
            wait_seconds,
            exhausted: false,
        },
        None => NextAttempt {
            number: next,
            wait_seconds: 0,
            exhausted: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(attempt: u32) -> Attempt {
        Attempt::new(attempt).unwrap()
    }

    #[test]
    fn within_a_round_the_next_candidate_follows_at_once() {
        assert_eq!(
            next_attempt(n(1), 4, Failure::Capacity, 900),
            NextAttempt {
                number: n(2),
                wait_seconds: 0,
                exhausted: false
            }
        );
        assert_eq!(next_attempt(n(3), 4, Failure::Other, 0).wait_seconds, 0);
    }

    #[test]
    fn a_round_lost_to_capacity_waits_with_backoff_until_the_horizon_is_spent() {
        let waits: Vec<Option<u32>> = (1..=7).map(|r| wait_before_next_round(r, 900)).collect();
        // 30 + 60 + 120 + 240 + 300 = 750; the sixth round gets the 150 s left.
        assert_eq!(
            waits,
            vec![
                Some(30),
                Some(60),
                Some(120),
                Some(240),
                Some(300),
                Some(150),
                None
            ]
        );
        assert_eq!(
            next_attempt(n(4), 4, Failure::Capacity, 900),
            NextAttempt {
                number: n(5),
                wait_seconds: 30,
                exhausted: false
            }
        );
        assert!(next_attempt(n(4 * 7), 4, Failure::Capacity, 900).exhausted);
    }

    #[test]
    fn a_round_lost_otherwise_or_with_no_horizon_gives_up() {
        assert!(next_attempt(n(4), 4, Failure::Other, 900).exhausted);
        assert!(next_attempt(n(4), 4, Failure::Capacity, 0).exhausted);
        assert_eq!(next_attempt(n(2), 2, Failure::Capacity, 3).wait_seconds, 3);
        assert!(next_attempt(n(4), 2, Failure::Capacity, 3).exhausted);
    }

    #[test]
    fn attempts_map_to_candidates_round_after_round() {
        assert_eq!((candidate_index(n(1), 3), round_of(n(1), 3)), (0, 1));
        assert_eq!((candidate_index(n(3), 3), round_of(n(3), 3)), (2, 1));
        assert_eq!((candidate_index(n(4), 3), round_of(n(4), 3)), (0, 2));
    }

    proptest! {
        #[test]
        fn total_waiting_never_exceeds_the_horizon(horizon in 0u32..100_000, count in 1u32..8) {
            let mut attempt = Attempt::FIRST;
            let mut waited: u64 = 0;
            for _ in 0..10_000 {
                let next = next_attempt(attempt, count, Failure::Capacity, horizon);
                if next.exhausted { break; }
                waited += u64::from(next.wait_seconds);
                attempt = next.number;
            }
            prop_assert!(waited <= u64::from(horizon));
            prop_assert!(next_attempt(attempt, count, Failure::Capacity, horizon).exhausted
                || !attempt.get().is_multiple_of(count));
        }
    }
}
