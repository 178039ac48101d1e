//! Callbacks into waiting executions.
//!
//! A webhook (or ECS event) may arrive before the execution has stored its task token, or after.
//! Both sides write to the same job item and read back the whole item atomically: the signal
//! writer sees the token if the waiter came first, the waiter sees the signal otherwise — so the
//! callback is sent exactly by whichever side came second, and never lost.

use crate::domain::job::parse_runner_name;
use crate::error::StepError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitPhase {
    Registration,
    Completion,
}

/// The task token an execution is waiting on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub token: String,
    pub phase: WaitPhase,
    pub attempt: u32,
}

/// What GitHub and ECS have told us about a job, whether or not anyone was waiting yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals {
    pub registered: Option<Registered>,
    pub conclusion: Option<String>,
    pub stopped: Option<Stopped>,
    pub cancelled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub runner_name: String,
    pub runner_id: u64,
    /// The job the runner actually took: GitHub may hand it any job whose labels match.
    pub job_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub attempt: u32,
    pub reason: String,
    /// The runner exited by itself (its job is done); not a failure of a running job.
    pub clean_exit: bool,
}

/// One signal, as recorded on the job item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Registered(Registered),
    Completed { conclusion: String },
    Stopped(Stopped),
    Cancelled,
}

/// The callback a wait resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    Success(serde_json::Value),
    Failure(StepError),
}

/// Whether the signals recorded so far resolve this wait.
pub fn resolve(wait: &Wait, signals: &Signals) -> Option<Callback> {
    let stopped_now = signals
        .stopped
        .as_ref()
        .filter(|s| s.attempt == wait.attempt);
    match wait.phase {
        WaitPhase::Registration => {
            if signals.cancelled {
                return Some(Callback::Failure(StepError::JobCancelled(
                    "cancelled on GitHub before a runner took it".into(),
                )));
            }
            if let Some(registered) = signals
                .registered
                .as_ref()
                .filter(|r| parse_runner_name(&r.runner_name).map(|(_, a)| a) == Some(wait.attempt))
            {
                return Some(Callback::Success(serde_json::json!({
                    "runner_name": registered.runner_name,
                    "runner_id": registered.runner_id,
                    "job_id": registered.job_id,
                })));
            }
            stopped_now.map(|s| Callback::Failure(StepError::TaskStopped(s.reason.clone())))
        }
        WaitPhase::Completion => {
            if let Some(conclusion) = &signals.conclusion {
                return Some(Callback::Success(
                    serde_json::json!({ "conclusion": conclusion }),
                ));
            }
            stopped_now
                .filter(|s| !s.clean_exit)
                .map(|s| Callback::Failure(StepError::TaskStopped(s.reason.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(phase: WaitPhase, attempt: u32) -> Wait {
        Wait {
            token: "t".into(),
            phase,
            attempt,
        }
    }

    fn registered(attempt: u32) -> Option<Registered> {
        Some(Registered {
            runner_name: format!("tasuki-7-{attempt}"),
            runner_id: 9,
            job_id: 7,
        })
    }

    fn stopped(attempt: u32, clean_exit: bool) -> Option<Stopped> {
        Some(Stopped {
            attempt,
            reason: "Essential container in task exited".into(),
            clean_exit,
        })
    }

    #[test]
    fn nothing_recorded_resolves_nothing() {
        assert_eq!(
            resolve(&wait(WaitPhase::Registration, 1), &Signals::default()),
            None
        );
        assert_eq!(
            resolve(&wait(WaitPhase::Completion, 1), &Signals::default()),
            None
        );
    }

    #[test]
    fn registration_of_this_attempts_runner_succeeds() {
        let signals = Signals {
            registered: registered(2),
            ..Default::default()
        };
        let Some(Callback::Success(output)) = resolve(&wait(WaitPhase::Registration, 2), &signals)
        else {
            panic!("expected success");
        };
        assert_eq!(output["runner_id"], 9);
        assert_eq!(
            resolve(&wait(WaitPhase::Registration, 3), &signals),
            None,
            "an older runner is not ours"
        );
    }

    #[test]
    fn a_stop_fails_only_the_attempt_it_belongs_to() {
        let signals = Signals {
            stopped: stopped(1, false),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&wait(WaitPhase::Registration, 1), &signals),
            Some(Callback::Failure(StepError::TaskStopped(_)))
        ));
        assert_eq!(resolve(&wait(WaitPhase::Registration, 2), &signals), None);
    }

    #[test]
    fn cancellation_wins_while_waiting_for_a_runner() {
        let signals = Signals {
            cancelled: true,
            stopped: stopped(1, false),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&wait(WaitPhase::Registration, 1), &signals),
            Some(Callback::Failure(StepError::JobCancelled(_)))
        ));
    }

    #[test]
    fn a_clean_exit_does_not_fail_a_running_job_but_a_crash_does() {
        let clean = Signals {
            stopped: stopped(1, true),
            ..Default::default()
        };
        assert_eq!(resolve(&wait(WaitPhase::Completion, 1), &clean), None);
        let crash = Signals {
            stopped: stopped(1, false),
            ..Default::default()
        };
        assert!(matches!(
            resolve(&wait(WaitPhase::Completion, 1), &crash),
            Some(Callback::Failure(_))
        ));
        let done = Signals {
            conclusion: Some("success".into()),
            ..crash
        };
        assert_eq!(
            resolve(&wait(WaitPhase::Completion, 1), &done),
            Some(Callback::Success(
                serde_json::json!({"conclusion": "success"})
            ))
        );
    }
}
