//! Callbacks into waiting executions.
//!
//! A webhook (or ECS event) may arrive before the execution has stored its task token, or after.
//! Both sides write to the same job item and read back the whole item atomically: the signal
//! writer sees the token if the waiter came first, the waiter sees the signal otherwise — so the
//! callback is sent exactly by whichever side came second, and never lost.

use crate::domain::ids::{Attempt, JobId, RunnerName};
use crate::domain::job::Conclusion;
use crate::error::StepError;
use serde::{Deserialize, Serialize};

/// The token of a `.waitForTaskToken` state: whoever holds it can resume the execution.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskToken(String);

impl TaskToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskToken({} chars)", self.0.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitPhase {
    Registration,
    Completion,
}

/// The task token an execution is waiting on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub token: TaskToken,
    pub phase: WaitPhase,
    pub attempt: Attempt,
}

/// What GitHub and ECS have told us about a job, whether or not anyone was waiting yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signals {
    pub registered: Option<Registered>,
    pub conclusion: Option<Conclusion>,
    pub stopped: Option<Stopped>,
    pub cancelled: bool,
    pub taken: Option<Taken>,
}

/// The job is running: GitHub gave it to this runner (ours or not, launched for it or not).
/// Also the registration wait's callback output, which the ASL puts at `$.registration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub runner_name: String,
    pub runner_id: u64,
    pub job_id: JobId,
}

/// The completion wait's callback output, which the ASL puts at `$.completion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    pub conclusion: Conclusion,
}

/// The runner launched for this job was given another queued job with matching labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    pub runner_name: RunnerName,
    pub by_job: JobId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub attempt: Attempt,
    pub reason: String,
    /// The runner exited by itself (its job is done); not a failure of a running job.
    pub clean_exit: bool,
}

/// One signal, as recorded on the job item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    Registered(Registered),
    Completed(Completion),
    Stopped(Stopped),
    Cancelled,
    RunnerTaken(Taken),
}

/// What a resumed wait returns to its execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum CallbackOutput {
    Registered(Registered),
    Completed(Completion),
}

/// The callback a wait resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    Success(CallbackOutput),
    Failure(StepError),
}

/// Whether the signals recorded so far resolve this wait.
///
/// Lifecycles pair by job id, as GitHub does: a job is running when GitHub says *it* is in progress,
/// on whichever runner. A runner launched for this job that took another job is lost to this job.
pub fn resolve(job_id: JobId, wait: &Wait, signals: &Signals) -> Option<Callback> {
    let own_runner = RunnerName::new(job_id, wait.attempt);
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
            if let Some(registered) = &signals.registered {
                return Some(Callback::Success(CallbackOutput::Registered(
                    registered.clone(),
                )));
            }
            if let Some(taken) = signals
                .taken
                .as_ref()
                .filter(|t| t.runner_name == own_runner)
            {
                return Some(Callback::Failure(StepError::RunnerTaken(format!(
                    "runner {} took job {} instead",
                    taken.runner_name, taken.by_job
                ))));
            }
            stopped_now.map(|s| Callback::Failure(StepError::TaskStopped(s.reason.clone())))
        }
        WaitPhase::Completion => {
            if let Some(conclusion) = signals.conclusion {
                return Some(Callback::Success(CallbackOutput::Completed(Completion {
                    conclusion,
                })));
            }
            // Only a crash of the runner this job is running on fails the job.
            let running_on_own = signals
                .registered
                .as_ref()
                .is_some_and(|r| own_runner == *r.runner_name.as_str());
            stopped_now
                .filter(|s| !s.clean_exit && running_on_own)
                .map(|s| Callback::Failure(StepError::TaskStopped(s.reason.clone())))
        }
    }
}

/// Where GitHub says a job is now (`GET /repos/{owner}/{repo}/actions/jobs/{job_id}`): the truth
/// when a webhook may have been lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOnGitHub {
    /// Queued, waiting or pending: no runner has it.
    NotStarted,
    Running(Registered),
    Completed {
        conclusion: Conclusion,
        ran_on: Option<Registered>,
    },
}

impl JobOnGitHub {
    /// The runner the job runs or ran on, if any.
    pub fn runner(&self) -> Option<&Registered> {
        match self {
            JobOnGitHub::Running(registered) => Some(registered),
            JobOnGitHub::Completed { ran_on, .. } => ran_on.as_ref(),
            JobOnGitHub::NotStarted => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: JobId = JobId::new(7);

    fn n(attempt: u32) -> Attempt {
        Attempt::new(attempt).unwrap()
    }

    fn wait(phase: WaitPhase, attempt: u32) -> Wait {
        Wait {
            token: TaskToken::new("t"),
            phase,
            attempt: n(attempt),
        }
    }

    fn on_runner(name: &str) -> Option<Registered> {
        Some(Registered {
            runner_name: name.into(),
            runner_id: 9,
            job_id: JOB,
        })
    }

    fn stopped(attempt: u32, clean_exit: bool) -> Option<Stopped> {
        Some(Stopped {
            attempt: n(attempt),
            reason: "Essential container in task exited".into(),
            clean_exit,
        })
    }

    #[test]
    fn nothing_recorded_resolves_nothing() {
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Registration, 1), &Signals::default()),
            None
        );
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Completion, 1), &Signals::default()),
            None
        );
    }

    #[test]
    fn the_job_running_on_any_runner_ends_the_registration_wait() {
        for runner in ["tasuki-7-2", "tasuki-8-1", "someone's runner"] {
            let signals = Signals {
                registered: on_runner(runner),
                ..Default::default()
            };
            let Some(Callback::Success(CallbackOutput::Registered(output))) =
                resolve(JOB, &wait(WaitPhase::Registration, 2), &signals)
            else {
                panic!("expected success on {runner}");
            };
            assert_eq!(output.runner_name, runner);
            assert_eq!(output.job_id, JOB);
        }
    }

    #[test]
    fn a_runner_taken_by_another_job_fails_only_its_own_attempt() {
        let taken = Signals {
            taken: Some(Taken {
                runner_name: RunnerName::new(JOB, n(1)),
                by_job: JobId::new(8),
            }),
            ..Default::default()
        };
        assert!(matches!(
            resolve(JOB, &wait(WaitPhase::Registration, 1), &taken),
            Some(Callback::Failure(StepError::RunnerTaken(_)))
        ));
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Registration, 2), &taken),
            None
        );
        let and_running = Signals {
            registered: on_runner("tasuki-8-1"),
            ..taken
        };
        assert!(matches!(
            resolve(JOB, &wait(WaitPhase::Registration, 1), &and_running),
            Some(Callback::Success(_))
        ));
    }

    #[test]
    fn a_stop_fails_only_the_attempt_it_belongs_to() {
        let signals = Signals {
            stopped: stopped(1, false),
            ..Default::default()
        };
        assert!(matches!(
            resolve(JOB, &wait(WaitPhase::Registration, 1), &signals),
            Some(Callback::Failure(StepError::TaskStopped(_)))
        ));
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Registration, 2), &signals),
            None
        );
    }

    #[test]
    fn cancellation_wins_while_waiting_for_a_runner() {
        let signals = Signals {
            cancelled: true,
            stopped: stopped(1, false),
            ..Default::default()
        };
        assert!(matches!(
            resolve(JOB, &wait(WaitPhase::Registration, 1), &signals),
            Some(Callback::Failure(StepError::JobCancelled(_)))
        ));
    }

    #[test]
    fn only_a_crash_of_the_runner_the_job_runs_on_fails_it() {
        let clean = Signals {
            stopped: stopped(1, true),
            registered: on_runner("tasuki-7-1"),
            ..Default::default()
        };
        assert_eq!(resolve(JOB, &wait(WaitPhase::Completion, 1), &clean), None);
        let crash = Signals {
            stopped: stopped(1, false),
            registered: on_runner("tasuki-7-1"),
            ..Default::default()
        };
        assert!(matches!(
            resolve(JOB, &wait(WaitPhase::Completion, 1), &crash),
            Some(Callback::Failure(_))
        ));
        let elsewhere = Signals {
            registered: on_runner("tasuki-8-1"),
            ..crash.clone()
        };
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Completion, 1), &elsewhere),
            None,
            "its own idle task is not the job's"
        );
        let done = Signals {
            conclusion: Some(Conclusion::Success),
            ..crash
        };
        assert_eq!(
            resolve(JOB, &wait(WaitPhase::Completion, 1), &done),
            Some(Callback::Success(CallbackOutput::Completed(Completion {
                conclusion: Conclusion::Success
            })))
        );
    }
}
