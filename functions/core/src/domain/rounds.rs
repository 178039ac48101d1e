//! What follows a failed attempt: the next candidate, a new round of every candidate after a wait
//! (when capacity or quota was the problem, which time may fix), the same candidate again (when
//! another job took the runner: nothing was wrong with the candidate), or giving up.
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
    /// GitHub gave the attempt's runner to another queued job: the candidate did its part.
    Taken,
    /// Anything else (registration timeout, task stopped).
    Other,
}

/// How many times a job's runner may be taken by other jobs and relaunched on the same candidate
/// before a theft spends the candidate like any other failure; a workflow whose jobs keep taking
/// each other's runners would otherwise relaunch forever (the unique `tasuki-run=` label stops theft).
pub const MAX_RELAUNCHES_AFTER_THEFT: u32 = 3;

/// A candidate try, counted from 1 across rounds: try `n` uses candidate `(n - 1) mod count`.
/// Attempts count every launch; tries advance only when a candidate failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Try(u32);

impl Try {
    pub const FIRST: Try = Try(1);

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Try {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        (n > 0)
            .then_some(Try(n))
            .ok_or_else(|| "candidate tries count from 1".to_string())
    }
}

impl From<Try> for u32 {
    fn from(t: Try) -> u32 {
        t.0
    }
}

/// Where a job stands in its plan (the ASL's `$.attempt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProgressDocument")]
pub struct Progress {
    /// The attempt: names its runner, its task and its lifecycle rows.
    pub number: Attempt,
    /// The candidate try it belongs to.
    #[serde(rename = "try")]
    pub try_: Try,
    /// Relaunches so far after another job took the runner.
    pub relaunches: u32,
}

/// `$.attempt` as executions wrote it: those started before tries existed carry only `number`,
/// which was then also the try.
#[derive(Deserialize)]
struct ProgressDocument {
    number: Attempt,
    #[serde(rename = "try")]
    try_: Option<Try>,
    relaunches: Option<u32>,
}

impl From<ProgressDocument> for Progress {
    fn from(d: ProgressDocument) -> Self {
        Progress {
            number: d.number,
            try_: d.try_.unwrap_or(Try(d.number.get())),
            relaunches: d.relaunches.unwrap_or(0),
        }
    }
}

impl Progress {
    pub const FIRST: Progress = Progress {
        number: Attempt::FIRST,
        try_: Try::FIRST,
        relaunches: 0,
    };
}

/// What the state machine does after `CleanupAttempt` (the ASL's `$.next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAttempt {
    /// The attempt to start next (attempts count on across rounds).
    pub number: Attempt,
    /// Its candidate try: the same one after a theft, the next one otherwise.
    #[serde(rename = "try")]
    pub try_: Try,
    pub relaunches: u32,
    /// Seconds to wait before it (a new round after capacity failures), 0 for none.
    pub wait_seconds: u32,
    /// No attempt follows: the job has failed.
    pub exhausted: bool,
}

/// The first wait of a new round; each later one doubles, up to [`MAX_WAIT_SECONDS`].
pub const FIRST_WAIT_SECONDS: u32 = 30;
pub const MAX_WAIT_SECONDS: u32 = 300;

/// Candidate index (0-based) of a try in a plan of `count` candidates.
pub fn candidate_index(try_: Try, count: u32) -> usize {
    ((try_.get() - 1) % count.max(1)) as usize
}

/// The round (1-based) a try belongs to.
pub fn round_of(try_: Try, count: u32) -> u32 {
    (try_.get() - 1) / count.max(1) + 1
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

/// After the attempt at `now` in a plan of `count` candidates failed with `failure`.
pub fn next_attempt(
    now: Progress,
    count: u32,
    failure: Failure,
    horizon_seconds: u32,
) -> NextAttempt {
    let count = count.max(1);
    let next = |try_: Try, relaunches, wait_seconds, exhausted| NextAttempt {
        number: now.number.next(),
        try_,
        relaunches,
        wait_seconds,
        exhausted,
    };
    if failure == Failure::Taken && now.relaunches < MAX_RELAUNCHES_AFTER_THEFT {
        return next(now.try_, now.relaunches + 1, 0, false);
    }
    let following = Try(now.try_.get().saturating_add(1));
    if !now.try_.get().is_multiple_of(count) {
        return next(following, now.relaunches, 0, false);
    }
    let wait = match failure {
        Failure::Capacity => wait_before_next_round(round_of(now.try_, count), horizon_seconds),
        Failure::Taken | Failure::Other => None,
    };
    match wait {
        Some(wait_seconds) => next(following, now.relaunches, wait_seconds, false),
        None => next(following, now.relaunches, 0, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Attempt `n` on try `n`: no theft so far.
    fn at(n: u32) -> Progress {
        Progress {
            number: Attempt::new(n).unwrap(),
            try_: Try(n),
            relaunches: 0,
        }
    }

    fn next(number: u32, wait_seconds: u32, exhausted: bool) -> NextAttempt {
        NextAttempt {
            number: Attempt::new(number).unwrap(),
            try_: Try(number),
            relaunches: 0,
            wait_seconds,
            exhausted,
        }
    }

    #[test]
    fn within_a_round_the_next_candidate_follows_at_once() {
        assert_eq!(
            next_attempt(at(1), 4, Failure::Capacity, 900),
            next(2, 0, false)
        );
        assert_eq!(next_attempt(at(3), 4, Failure::Other, 0).wait_seconds, 0);
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
            next_attempt(at(4), 4, Failure::Capacity, 900),
            next(5, 30, false)
        );
        assert!(next_attempt(at(4 * 7), 4, Failure::Capacity, 900).exhausted);
    }

    #[test]
    fn a_round_lost_otherwise_or_with_no_horizon_gives_up() {
        assert!(next_attempt(at(4), 4, Failure::Other, 900).exhausted);
        assert!(next_attempt(at(4), 4, Failure::Capacity, 0).exhausted);
        assert_eq!(next_attempt(at(2), 2, Failure::Capacity, 3).wait_seconds, 3);
        assert!(next_attempt(at(4), 2, Failure::Capacity, 3).exhausted);
    }

    #[test]
    fn attempts_map_to_candidates_round_after_round() {
        assert_eq!((candidate_index(Try(1), 3), round_of(Try(1), 3)), (0, 1));
        assert_eq!((candidate_index(Try(3), 3), round_of(Try(3), 3)), (2, 1));
        assert_eq!((candidate_index(Try(4), 3), round_of(Try(4), 3)), (0, 2));
    }

    #[test]
    fn an_attempt_written_before_tries_existed_is_its_own_try() {
        let old: Progress = serde_json::from_str(r#"{"number": 3}"#).unwrap();
        assert_eq!(old, at(3));
        let new: Progress =
            serde_json::from_str(r#"{"number": 3, "try": 2, "relaunches": 1}"#).unwrap();
        assert_eq!((new.try_, new.relaunches), (Try(2), 1));
        assert!(serde_json::from_str::<Progress>(r#"{"number": 3, "try": 0}"#).is_err());
    }

    proptest! {
        #[test]
        fn total_waiting_never_exceeds_the_horizon(horizon in 0u32..100_000, count in 1u32..8) {
            let mut now = Progress::FIRST;
            let mut waited: u64 = 0;
            for _ in 0..10_000 {
                let next = next_attempt(now, count, Failure::Capacity, horizon);
                if next.exhausted { break; }
                waited += u64::from(next.wait_seconds);
                now = Progress { number: next.number, try_: next.try_, relaunches: next.relaunches };
            }
            prop_assert!(waited <= u64::from(horizon));
            prop_assert!(next_attempt(now, count, Failure::Capacity, horizon).exhausted
                || !now.try_.get().is_multiple_of(count));
        }

        #[test]
        fn thefts_relaunch_on_the_same_candidate_a_bounded_number_of_times(count in 1u32..6, start in 1u32..20) {
            let mut now = Progress { number: Attempt::new(start).unwrap(), try_: Try(start), relaunches: 0 };
            for relaunch in 1..=MAX_RELAUNCHES_AFTER_THEFT {
                let next = next_attempt(now, count, Failure::Taken, 0);
                prop_assert_eq!((next.try_, next.relaunches, next.exhausted), (now.try_, relaunch, false));
                prop_assert_eq!(next.number, now.number.next());
                now = Progress { number: next.number, try_: next.try_, relaunches: next.relaunches };
            }
            let spent = next_attempt(now, count, Failure::Taken, 0);
            prop_assert_eq!(spent, next_attempt(now, count, Failure::Other, 0));
        }
    }
}
