//! How an attempt or a job ended, in words an operator can act on: from the error a `Catch`
//! caught, what ECS and GitHub told us (signals), and the attempts already recorded.

use crate::domain::config::Config;
use crate::domain::ids::Attempt;
use crate::domain::job::Conclusion;
use crate::domain::lifecycle::Happening;
use crate::domain::record::{Event, LifecycleEvent};
use crate::domain::waits::{Completion, Signals};
use crate::error::{Caught, ErrorName};
use serde::{Deserialize, Serialize};

/// What a `Catch` put in the execution state (`$.error`, `$.cleanup_error`, `$.finalize_error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: Caught,
    #[serde(rename = "Cause", default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// A Lambda error's cause, as Step Functions passes it on: `{"errorType":..,"errorMessage":..}`.
#[derive(Deserialize)]
struct LambdaCause {
    #[serde(rename = "errorMessage")]
    error_message: String,
}

impl CaughtError {
    /// The message inside a Lambda error's cause, or the cause as is.
    pub fn message(&self) -> Option<String> {
        let cause = self.cause.as_deref().filter(|c| !c.is_empty())?;
        Some(
            serde_json::from_str::<LambdaCause>(cause)
                .map(|c| c.error_message)
                .unwrap_or_else(|_| cause.to_string()),
        )
    }

    /// Whether waiting may help: no capacity, or an account quota reached.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self.error,
            Caught::Step(ErrorName::CapacityUnavailable | ErrorName::QuotaExceeded)
        )
    }
}

/// How the state machine reached Finalize (the ASL passes it as `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    Failed,
    Exhausted,
    Cancelled,
    TimedOut,
    Skipped,
}

/// Why no runner is needed: GitHub gave the job to a runner (or finished it) before tasuki
/// launched one — its `in_progress`/`completed` delivery came before `queued`, or a runner took it
/// meanwhile. `None` while the job still waits for a runner.
pub fn started_elsewhere(signals: &Signals) -> Option<String> {
    let ran = match (&signals.registered, signals.conclusion) {
        (Some(on), None) => format!("runs on runner {}", on.runner_name),
        (Some(on), Some(conclusion)) => {
            format!(
                "ran on runner {} and completed ({conclusion})",
                on.runner_name
            )
        }
        (None, Some(conclusion)) => format!("completed ({conclusion})"),
        (None, None) => return None,
    };
    Some(format!(
        "GitHub says the job {ran} before tasuki launched a runner for it; none launched"
    ))
}

/// A readable reason for a failed attempt or job.
pub fn failure_reason(
    error: &CaughtError,
    attempt: Option<Attempt>,
    config: &Config,
    signals: &Signals,
) -> String {
    let stop_reason = signals
        .stopped
        .as_ref()
        .filter(|s| Some(s.attempt) == attempt)
        .map(|s| s.reason.clone());
    match &error.error {
        Caught::Timeout => format!(
            "RegistrationTimeout: the runner did not register within {} s",
            config.timeouts.registration_seconds
        ),
        // Step Functions may drop a callback's cause; ECS told us the stop reason directly.
        Caught::Step(ErrorName::TaskStopped) => format!(
            "TaskStopped: {}",
            stop_reason
                .or_else(|| error.message())
                .unwrap_or_else(|| "the task stopped before its runner registered".into())
        ),
        Caught::Step(ErrorName::RunnerTaken) => match &signals.taken {
            Some(taken) => format!(
                "RunnerTaken: runner {} took job {} instead",
                taken.runner_name, taken.by_job
            ),
            None => "RunnerTaken".to_string(),
        },
        name => match error.message() {
            Some(message) => format!("{}: {message}", name.as_str()),
            None => name.as_str().to_string(),
        },
    }
}

/// What Finalize knows of the job's end, from the execution state and the signals.
pub struct Ending<'a> {
    pub completion: Option<Completion>,
    pub error: Option<&'a CaughtError>,
    pub attempt: Option<Attempt>,
    pub signals: &'a Signals,
}

/// The terminal transition for an outcome other than exhaustion.
pub fn final_happening(outcome: Outcome, ending: &Ending, config: &Config) -> Happening {
    match outcome {
        Outcome::Completed => match ending.completion.map(|c| c.conclusion) {
            Some(Conclusion::Cancelled) => Happening::Cancel {
                reason: "cancelled on GitHub while running".into(),
            },
            Some(conclusion) => Happening::Complete { conclusion },
            None => Happening::Fail {
                reason: "completion without a conclusion".into(),
            },
        },
        Outcome::Cancelled => Happening::Cancel {
            reason: "cancelled on GitHub before a runner took it".into(),
        },
        Outcome::Skipped => Happening::Skip {
            reason: started_elsewhere(ending.signals)
                .unwrap_or_else(|| "GitHub started the job before tasuki launched a runner".into()),
        },
        Outcome::TimedOut => Happening::TimeOut {
            reason: format!(
                "the job did not complete within {} s",
                config.timeouts.job_seconds
            ),
        },
        Outcome::Failed | Outcome::Exhausted => Happening::Fail {
            reason: match ending.error {
                Some(error) => failure_reason(error, ending.attempt, config, ending.signals),
                None => "failed for an unknown reason".into(),
            },
        },
    }
}

/// The `interrupted` transition instead of `ending_as`, for a job that opted in to a re-run
/// (`spot=rerun`) and whose runner Spot took mid-job: the attempt's task stopped with ECS's
/// `SpotInterruption` and the job failed (or GitHub concluded it other than `success`). A job that
/// finished well within the stop grace needs no re-run.
pub fn interrupted(ending: &Ending, ending_as: &Happening) -> Option<Happening> {
    ending
        .signals
        .stopped
        .as_ref()
        .filter(|s| Some(s.attempt) == ending.attempt && is_spot_interruption(&s.reason))?;
    let ended = match ending_as {
        Happening::Fail { reason } => reason.clone(),
        Happening::Complete { conclusion } if *conclusion != Conclusion::Success => {
            format!("GitHub concluded {conclusion}")
        }
        _ => return None,
    };
    Some(Happening::Interrupt {
        reason: format!(
            "{ended}; Spot took its runner mid-job: it is re-run without Spot once its workflow run completes"
        ),
    })
}

/// Whether a stop reason carries ECS's `SpotInterruption` stop code: as is (`<stopCode>: <why>`),
/// or after what tasuki-boot's exit said (`… (runner exit 82; <stopCode>: <why>)`, `ecs_events`).
fn is_spot_interruption(reason: &str) -> bool {
    reason.starts_with("SpotInterruption") || reason.contains("; SpotInterruption")
}

/// The job's failure when every candidate failed, round after round: each attempt's reason is
/// already in the timeline; the last round says what to fix.
pub fn exhausted(timeline: &[LifecycleEvent], candidates: u32) -> Happening {
    let reasons: Vec<String> = timeline
        .iter()
        .filter(|e| e.event == Event::AttemptFailed)
        .map(|e| {
            format!(
                "attempt {}: {}",
                e.attempt,
                e.reason.clone().unwrap_or_default()
            )
        })
        .collect();
    let count = candidates.max(1) as usize;
    let rounds = reasons.len().div_ceil(count);
    let last_round = reasons[reasons.len().saturating_sub(count)..].join("; ");
    Happening::Fail {
        reason: if rounds > 1 {
            format!(
                "all {count} launch candidates failed in each of {rounds} rounds (last round: {last_round})"
            )
        } else {
            format!(
                "all {} launch candidates failed ({last_round})",
                reasons.len()
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::lifecycle::JobState;
    use crate::domain::waits::Stopped;

    fn caught(name: &str, cause: &str) -> CaughtError {
        CaughtError {
            error: Caught::from(name.to_string()),
            cause: Some(cause.into()),
        }
    }

    fn second() -> Option<Attempt> {
        Attempt::new(2)
    }

    #[test]
    fn failure_reasons_read_lambda_causes_and_ecs_stop_reasons() {
        let cause = r#"{"errorType":"CapacityUnavailable","errorMessage":"capacity unavailable: FARGATE_SPOT in us-east-1b"}"#;
        let reason = failure_reason(
            &caught("CapacityUnavailable", cause),
            second(),
            &example(),
            &Signals::default(),
        );
        assert_eq!(
            reason,
            "CapacityUnavailable: capacity unavailable: FARGATE_SPOT in us-east-1b"
        );
        let timeout = failure_reason(
            &caught("States.Timeout", ""),
            second(),
            &example(),
            &Signals::default(),
        );
        assert_eq!(
            timeout,
            "RegistrationTimeout: the runner did not register within 300 s"
        );
        let signals = Signals {
            stopped: Some(Stopped {
                attempt: Attempt::new(2).unwrap(),
                reason: "TaskFailedToStart: CannotPullContainerError".into(),
                clean_exit: false,
            }),
            ..Signals::default()
        };
        let stopped = failure_reason(&caught("TaskStopped", ""), second(), &example(), &signals);
        assert_eq!(
            stopped,
            "TaskStopped: TaskFailedToStart: CannotPullContainerError"
        );
        let other_attempt = failure_reason(
            &caught("TaskStopped", ""),
            Attempt::new(3),
            &example(),
            &signals,
        );
        assert_eq!(
            other_attempt,
            "TaskStopped: the task stopped before its runner registered"
        );
    }

    fn spot_stopped(attempt: u32) -> Signals {
        Signals {
            stopped: Some(Stopped {
                attempt: Attempt::new(attempt).unwrap(),
                reason: "SpotInterruption: Your Spot Task was interrupted.".into(),
                clean_exit: false,
            }),
            ..Signals::default()
        }
    }

    fn ending(signals: &Signals, attempt: u32) -> Ending<'_> {
        Ending {
            completion: None,
            error: None,
            attempt: Attempt::new(attempt),
            signals,
        }
    }

    #[test]
    fn a_job_spot_took_mid_job_is_interrupted_unless_it_succeeded_or_another_attempt_stopped() {
        let signals = spot_stopped(2);
        let failed = Happening::Fail {
            reason: "TaskStopped: SpotInterruption: Your Spot Task was interrupted.".into(),
        };
        let Some(Happening::Interrupt { reason }) = interrupted(&ending(&signals, 2), &failed)
        else {
            panic!("expected an interruption");
        };
        assert!(
            reason.starts_with("TaskStopped: SpotInterruption"),
            "{reason}"
        );
        assert!(reason.ends_with("re-run without Spot once its workflow run completes"));
        let failure = Happening::Complete {
            conclusion: Conclusion::Failure,
        };
        assert!(interrupted(&ending(&signals, 2), &failure).is_some());
        let success = Happening::Complete {
            conclusion: Conclusion::Success,
        };
        assert_eq!(interrupted(&ending(&signals, 2), &success), None);
        assert_eq!(
            interrupted(&ending(&signals, 3), &failed),
            None,
            "an older attempt's stop"
        );
        // As ecs_events records it when tasuki-boot exited 82 after the stop grace.
        let after_grace = Signals {
            stopped: Some(Stopped {
                reason: "the task was stopped while its job ran and the job did not finish within \
                         the grace period (runner exit 82; SpotInterruption: Your Spot Task was interrupted.)"
                    .into(),
                ..spot_stopped(2).stopped.unwrap()
            }),
            ..Signals::default()
        };
        assert!(interrupted(&ending(&after_grace, 2), &failed).is_some());
        let plain = Signals {
            stopped: Some(Stopped {
                reason: "UserInitiated: stopped by tasuki".into(),
                ..spot_stopped(2).stopped.unwrap()
            }),
            ..Signals::default()
        };
        assert_eq!(interrupted(&ending(&plain, 2), &failed), None);
    }

    #[test]
    fn a_cancelled_conclusion_finalizes_as_cancelled() {
        let signals = Signals::default();
        let ending = |conclusion| Ending {
            completion: Some(Completion { conclusion }),
            error: None,
            attempt: second(),
            signals: &signals,
        };
        assert!(matches!(
            final_happening(
                Outcome::Completed,
                &ending(Conclusion::Cancelled),
                &example()
            ),
            Happening::Cancel { .. }
        ));
        assert_eq!(
            final_happening(Outcome::Completed, &ending(Conclusion::Failure), &example()),
            Happening::Complete {
                conclusion: Conclusion::Failure
            }
        );
    }

    #[test]
    fn exhaustion_names_the_last_rounds_reasons() {
        let failed = |attempt: u32, reason: &str| LifecycleEvent {
            seq: attempt + 3,
            at: "t".into(),
            event: Event::AttemptFailed,
            state: JobState::Launching,
            attempt,
            candidate: None,
            reason: Some(reason.into()),
        };
        let timeline = [
            failed(1, "a"),
            failed(2, "b"),
            failed(3, "c"),
            failed(4, "d"),
        ];
        let Happening::Fail { reason } = exhausted(&timeline, 2) else {
            panic!()
        };
        assert_eq!(
            reason,
            "all 2 launch candidates failed in each of 2 rounds (last round: attempt 3: c; attempt 4: d)"
        );
        let Happening::Fail { reason } = exhausted(&timeline[..2], 2) else {
            panic!()
        };
        assert_eq!(
            reason,
            "all 2 launch candidates failed (attempt 1: a; attempt 2: b)"
        );
    }
}
