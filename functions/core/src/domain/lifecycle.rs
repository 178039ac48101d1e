//! Job states and the only transitions allowed between them.

use crate::domain::ids::Attempt;
use crate::domain::job::Conclusion;
use crate::domain::record::Event;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Received,
    Refused,
    Planned,
    Launching,
    WaitingForRegistration,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
    /// GitHub gave the job to a runner before tasuki launched one: nothing was needed.
    Skipped,
    /// Spot took the job's runner mid-job and the job opted in to a re-run: it waits for its
    /// workflow run to complete (GitHub re-runs only completed runs), then the sweep re-runs it.
    Interrupted,
    /// GitHub was asked to re-run the job (a new job, in the run's next attempt, without Spot).
    Rerun,
}

impl JobState {
    pub const ALL: [JobState; 13] = [
        JobState::Received,
        JobState::Refused,
        JobState::Planned,
        JobState::Launching,
        JobState::WaitingForRegistration,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Skipped,
        JobState::Interrupted,
        JobState::Rerun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Received => "received",
            JobState::Refused => "refused",
            JobState::Planned => "planned",
            JobState::Launching => "launching",
            JobState::WaitingForRegistration => "waiting-for-registration",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timed-out",
            JobState::Skipped => "skipped",
            JobState::Interrupted => "interrupted",
            JobState::Rerun => "rerun",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Refused
                | JobState::Completed
                | JobState::Failed
                | JobState::Cancelled
                | JobState::TimedOut
                | JobState::Skipped
                | JobState::Rerun
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state `{s}`"))
    }
}

/// Where a job stands: its state and its current launch attempt (0 before the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub state: JobState,
    pub attempt: u32,
}

impl Position {
    pub const RECEIVED: Position = Position {
        state: JobState::Received,
        attempt: 0,
    };
}

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Happening {
    Refuse {
        reason: String,
    },
    Plan {
        candidates: u32,
    },
    Launch {
        attempt: Attempt,
        candidate: String,
    },
    AwaitRegistration {
        attempt: Attempt,
        task_arn: String,
    },
    AttemptFailed {
        attempt: Attempt,
        reason: String,
    },
    Register {
        runner_name: String,
    },
    Complete {
        conclusion: Conclusion,
    },
    Fail {
        reason: String,
    },
    Cancel {
        reason: String,
    },
    TimeOut {
        reason: String,
    },
    /// GitHub started or finished the job on some runner before tasuki launched one.
    Skip {
        reason: String,
    },
    /// Spot interrupted the job's runner mid-job; it is to be re-run once its run completes.
    Interrupt {
        reason: String,
    },
    /// The sweep asked GitHub to re-run the interrupted job.
    Rerun {
        reason: String,
    },
    /// The rescue sweep acted on a job past its deadline; the job stays where it is.
    Rescue {
        reason: String,
    },
}

impl Happening {
    /// What the lifecycle row records.
    pub fn event(&self, to: JobState) -> Event {
        match self {
            Happening::AttemptFailed { .. } => Event::AttemptFailed,
            Happening::Rescue { .. } => Event::Rescued,
            _ => Event::Entered(to),
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Happening::Refuse { reason }
            | Happening::AttemptFailed { reason, .. }
            | Happening::Fail { reason }
            | Happening::Cancel { reason }
            | Happening::TimeOut { reason }
            | Happening::Skip { reason }
            | Happening::Interrupt { reason }
            | Happening::Rerun { reason }
            | Happening::Rescue { reason } => Some(reason),
            Happening::Complete { conclusion } => Some(conclusion.as_str()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {happening} while {from} (attempt {attempt})")]
pub struct IllegalTransition {
    pub from: JobState,
    pub attempt: u32,
    pub happening: String,
}

/// The next position, or an error: an illegal transition is never silently applied.
pub fn next(from: Position, happening: &Happening) -> Result<Position, IllegalTransition> {
    use JobState::*;
    let at = |state, attempt| Ok(Position { state, attempt });
    let illegal = || {
        Err(IllegalTransition {
            from: from.state,
            attempt: from.attempt,
            happening: serde_json::to_value(happening)
                .ok()
                .and_then(|v| v["event"].as_str().map(str::to_string))
                .unwrap_or_default(),
        })
    };
    let current = from.attempt;
    match (from.state, happening) {
        (Received, Happening::Refuse { .. }) => at(Refused, current),
        (Received, Happening::Plan { candidates }) if *candidates > 0 => at(Planned, 0),
        (Planned, Happening::Launch { attempt, .. }) if *attempt == Attempt::FIRST => {
            at(Launching, 1)
        }
        (Launching | WaitingForRegistration, Happening::Launch { attempt, .. })
            if attempt.get() == current + 1 =>
        {
            at(Launching, attempt.get())
        }
        (Launching, Happening::AwaitRegistration { attempt, .. }) if attempt.get() == current => {
            at(WaitingForRegistration, current)
        }
        (Launching | WaitingForRegistration, Happening::AttemptFailed { attempt, .. })
            if attempt.get() == current =>
        {
            at(from.state, current)
        }
        (WaitingForRegistration, Happening::Register { .. }) => at(Running, current),
        (Running, Happening::Complete { .. }) => at(Completed, current),
        (state, Happening::Fail { .. }) if !state.is_terminal() => at(Failed, current),
        (state, Happening::Cancel { .. }) if !state.is_terminal() => at(Cancelled, current),
        (Running | WaitingForRegistration, Happening::TimeOut { .. }) => at(TimedOut, current),
        (Received | Planned | Launching | WaitingForRegistration, Happening::Skip { .. }) => {
            at(Skipped, current)
        }
        (Running | WaitingForRegistration, Happening::Interrupt { .. }) => at(Interrupted, current),
        (Interrupted, Happening::Rerun { .. }) => at(Rerun, current),
        (state, Happening::Rescue { .. }) if !state.is_terminal() => at(state, current),
        _ => illegal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn walk(steps: &[Happening]) -> Result<Position, IllegalTransition> {
        steps.iter().try_fold(Position::RECEIVED, next)
    }

    fn n(attempt: u32) -> Attempt {
        Attempt::new(attempt).unwrap()
    }

    fn launch(attempt: u32) -> Happening {
        Happening::Launch {
            attempt: n(attempt),
            candidate: "fargate-spot/us-east-1a/2cpu-4gb/x64".into(),
        }
    }

    fn await_reg(attempt: u32) -> Happening {
        Happening::AwaitRegistration {
            attempt: n(attempt),
            task_arn: "arn:task".into(),
        }
    }

    fn failed(attempt: u32) -> Happening {
        Happening::AttemptFailed {
            attempt: n(attempt),
            reason: "CapacityUnavailable".into(),
        }
    }

    /// A job whose first runner registered.
    fn running() -> Position {
        walk(&[
            Happening::Plan { candidates: 1 },
            launch(1),
            await_reg(1),
            Happening::Register {
                runner_name: "r".into(),
            },
        ])
        .unwrap()
    }

    #[test]
    fn the_happy_path_is_legal() {
        let end = walk(&[
            Happening::Plan { candidates: 4 },
            launch(1),
            await_reg(1),
            Happening::Register {
                runner_name: "r".into(),
            },
            Happening::Complete {
                conclusion: Conclusion::Success,
            },
        ])
        .unwrap();
        assert_eq!(
            end,
            Position {
                state: JobState::Completed,
                attempt: 1
            }
        );
    }

    #[test]
    fn a_failed_attempt_moves_on_to_the_next_one_only() {
        let before = walk(&[Happening::Plan { candidates: 4 }, launch(1), failed(1)]).unwrap();
        assert_eq!(
            before,
            Position {
                state: JobState::Launching,
                attempt: 1
            }
        );
        assert_eq!(next(before, &launch(2)).unwrap().attempt, 2);
        assert!(next(before, &launch(3)).is_err());
        assert!(next(before, &launch(1)).is_err());
        assert!(next(before, &failed(2)).is_err());
    }

    #[test]
    fn terminal_states_accept_nothing() {
        let refused = walk(&[Happening::Refuse {
            reason: "label `gpu`".into(),
        }])
        .unwrap();
        assert_eq!(refused.state, JobState::Refused);
        let err = next(refused, &Happening::Cancel { reason: "x".into() }).unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal transition: cancel while refused (attempt 0)"
        );
    }

    #[test]
    fn registration_needs_a_launched_task() {
        let planned = walk(&[Happening::Plan { candidates: 1 }]).unwrap();
        assert!(next(
            planned,
            &Happening::Register {
                runner_name: "r".into()
            }
        )
        .is_err());
        assert!(next(planned, &await_reg(1)).is_err());
        assert!(next(Position::RECEIVED, &Happening::Plan { candidates: 0 }).is_err());
    }

    #[test]
    fn a_job_github_started_elsewhere_is_skipped_before_it_runs_on_a_runner_of_ours_only() {
        let skip = Happening::Skip { reason: "r".into() };
        let planned = walk(&[Happening::Plan { candidates: 2 }]).unwrap();
        assert_eq!(next(planned, &skip).unwrap().state, JobState::Skipped);
        assert_eq!(
            next(Position::RECEIVED, &skip).unwrap().state,
            JobState::Skipped
        );
        let running = running();
        assert!(next(running, &skip).is_err());
        let skipped = next(planned, &skip).unwrap();
        assert!(next(skipped, &Happening::Cancel { reason: "x".into() }).is_err());
    }

    #[test]
    fn only_a_job_interrupted_on_its_runner_is_rerun_and_a_rerun_is_final() {
        let interrupt = Happening::Interrupt { reason: "r".into() };
        let rerun = Happening::Rerun { reason: "r".into() };
        let running = running();
        let interrupted = next(running, &interrupt).unwrap();
        assert_eq!(interrupted.state, JobState::Interrupted);
        assert!(
            !interrupted.state.is_terminal(),
            "the sweep still has work on it"
        );
        assert!(
            next(running, &rerun).is_err(),
            "no re-run without an interruption"
        );
        let planned = walk(&[Happening::Plan { candidates: 1 }]).unwrap();
        assert!(
            next(planned, &interrupt).is_err(),
            "nothing ran to be interrupted"
        );
        let rerun_done = next(interrupted, &rerun).unwrap();
        assert!(rerun_done.state.is_terminal());
        assert!(next(rerun_done, &rerun).is_err(), "one re-run per job");
        let refused = Happening::Fail {
            reason: "GitHub refused the re-run".into(),
        };
        assert_eq!(next(interrupted, &refused).unwrap().state, JobState::Failed);
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }

    fn any_happening() -> impl Strategy<Value = Happening> {
        prop_oneof![
            Just(Happening::Refuse { reason: "r".into() }),
            (0u32..4).prop_map(|candidates| Happening::Plan { candidates }),
            (1u32..5).prop_map(launch),
            (1u32..5).prop_map(await_reg),
            (1u32..5).prop_map(failed),
            Just(Happening::Register {
                runner_name: "r".into()
            }),
            Just(Happening::Complete {
                conclusion: Conclusion::Success
            }),
            Just(Happening::Fail { reason: "r".into() }),
            Just(Happening::Cancel { reason: "r".into() }),
            Just(Happening::TimeOut { reason: "r".into() }),
            Just(Happening::Rescue { reason: "r".into() }),
            Just(Happening::Skip { reason: "r".into() }),
            Just(Happening::Interrupt { reason: "r".into() }),
            Just(Happening::Rerun { reason: "r".into() }),
        ]
    }

    proptest! {
        #[test]
        fn any_sequence_keeps_the_invariants(happenings in prop::collection::vec(any_happening(), 0..20)) {
            let mut position = Position::RECEIVED;
            for happening in &happenings {
                match next(position, happening) {
                    Ok(after) => {
                        prop_assert!(!position.state.is_terminal(), "left terminal {:?}", position);
                        prop_assert!(after.attempt == position.attempt || after.attempt == position.attempt + 1);
                        if matches!(after.state, JobState::Running | JobState::Interrupted) {
                            prop_assert!(after.attempt >= 1);
                        }
                        if after.state == JobState::Rerun {
                            prop_assert_eq!(position.state, JobState::Interrupted);
                        }
                        position = after;
                    }
                    Err(err) => prop_assert_eq!(err.from, position.state),
                }
            }
        }
    }
}
