//! What the rescue sweep does for a job past its deadline (`by-state-deadline`): GitHub's view
//! of the job decides. A webhook GitHub failed to deliver is never redelivered by itself, so a job
//! can sit in `received` (StartExecution failed) or wait for a callback that will never come.

use crate::domain::ids::StartedBy;
use crate::domain::lifecycle::JobState;
use crate::domain::record::JobRecord;
use crate::domain::waits::{Completion, JobOnGitHub, Signal};
use serde::Serialize;

/// A job's execution as Step Functions describes it (`DescribeExecution`'s `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    Running,
    /// Being redriven: running again.
    PendingRedrive,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
    /// No execution by the job's name.
    Missing,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "RUNNING",
            ExecutionStatus::PendingRedrive => "PENDING_REDRIVE",
            ExecutionStatus::Succeeded => "SUCCEEDED",
            ExecutionStatus::Failed => "FAILED",
            ExecutionStatus::TimedOut => "TIMED_OUT",
            ExecutionStatus::Aborted => "ABORTED",
            ExecutionStatus::Missing => "MISSING",
        }
    }

    /// Still in charge of its job.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive
        )
    }
}

/// The rescue of one overdue job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rescue {
    /// Recorded but never started: start its execution (a no-op if it exists after all).
    StartExecution,
    /// Webhooks were lost: record what GitHub says; the waiting execution gets its callback.
    Signal(Vec<Signal>),
    /// The execution ended (aborted, failed in Finalize, timed out) with the job unfinished:
    /// nobody else will end it. Fail it and release what it holds — unless the job runs on it.
    Finish {
        execution: ExecutionStatus,
        busy: bool,
    },
    /// Spot interrupted the job mid-job and its workflow run has completed: ask GitHub to re-run
    /// it (the re-run avoids Spot).
    Rerun,
    /// Nothing to do: why.
    Leave(String),
}

impl Rescue {
    /// The lifecycle row's reason for an action.
    pub fn reason(&self) -> String {
        match self {
            Rescue::StartExecution => {
                "rescue: the job was recorded but its execution had not started; started it".into()
            }
            Rescue::Signal(signals) => format!(
                "rescue: GitHub says {}; the webhook was lost",
                signals
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
            Rescue::Finish { execution, busy } => format!(
                "rescue: its execution ended {} without finishing the job; {}",
                execution.as_str(),
                if *busy {
                    "its runner runs the job and is left to finish it"
                } else {
                    "its task is stopped and its runner deleted"
                }
            ),
            Rescue::Rerun => {
                "rescue: Spot interrupted the job and its workflow run has completed; \
                 GitHub is asked to re-run it, without Spot"
                    .into()
            }
            Rescue::Leave(why) => why.clone(),
        }
    }
}

fn describe(signal: &Signal) -> String {
    match signal {
        Signal::Registered(r) => format!("the job runs on {}", r.runner_name),
        Signal::Completed(c) => format!("the job completed ({})", c.conclusion),
        Signal::Cancelled => "the job was cancelled before a runner took it".into(),
        Signal::Stopped(s) => format!("attempt {} stopped", s.attempt),
        Signal::RunnerTaken(t) => format!("runner {} took job {}", t.runner_name, t.by_job),
    }
}

/// A runner task ECS runs (`tasuki/<job>/<attempt>`), checked against its job's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCheck {
    /// The current attempt of an unfinished job: its execution owns it.
    Owned,
    /// Its job is not recorded: nobody knows its repository to ask GitHub; left alone.
    Unknown,
    /// Its job finished or moved to a later attempt, so nothing will stop it — unless GitHub
    /// gave its runner a job (a runner taken by another job runs on): why it is suspect.
    Suspect(String),
}

/// What the sweep makes of a running task, from its job's record.
pub fn check_task(task: StartedBy, record: Option<&JobRecord>) -> TaskCheck {
    let Some(record) = record else {
        return TaskCheck::Unknown;
    };
    let state = record.position.state;
    if state.is_terminal() {
        return TaskCheck::Suspect(format!("its job is {state}"));
    }
    if task.attempt.get() < record.position.attempt {
        return TaskCheck::Suspect(format!(
            "its job moved on to attempt {}",
            record.position.attempt
        ));
    }
    TaskCheck::Owned
}

/// The rescue of an `interrupted` job: GitHub re-runs jobs of completed workflow runs only.
pub fn rerun(run_completed: bool) -> Rescue {
    if run_completed {
        Rescue::Rerun
    } else {
        Rescue::Leave(
            "Spot interrupted the job; its workflow run has not completed yet, so it is re-run later"
                .into(),
        )
    }
}

/// Whether `decide` needs GitHub's view of the job (every state but `received`).
pub fn needs_github(record: &JobRecord) -> bool {
    record.position.state != JobState::Received
}

/// The rescue of an overdue, unfinished job, given what GitHub says of it and how its execution
/// stands (`None` when not asked: a job still `received` may have no execution).
pub fn decide(
    record: &JobRecord,
    github: Option<&JobOnGitHub>,
    execution: Option<ExecutionStatus>,
) -> Rescue {
    if record.position.state == JobState::Received {
        return Rescue::StartExecution;
    }
    if let Some(execution) = execution.filter(|e| !e.is_running()) {
        let ours = record.runner.as_ref().map(|r| r.name.as_str());
        // A finished job's runner has exited already: only a running one is spared.
        let busy = matches!(github, Some(JobOnGitHub::Running(on)) if Some(on.runner_name.as_str()) == ours);
        return Rescue::Finish { execution, busy };
    }
    let known = &record.signals;
    let mut signals = vec![];
    match github {
        None | Some(JobOnGitHub::NotStarted) => {
            return Rescue::Leave(
                "GitHub has not started the job; its execution is still in charge".into(),
            )
        }
        Some(JobOnGitHub::Running(registered)) => {
            if known.registered.as_ref() != Some(registered) {
                signals.push(Signal::Registered(registered.clone()));
            }
        }
        Some(JobOnGitHub::Completed { conclusion, ran_on }) => match ran_on {
            Some(registered) => {
                if known.registered.as_ref() != Some(registered) {
                    signals.push(Signal::Registered(registered.clone()));
                }
                if known.conclusion.is_none() {
                    signals.push(Signal::Completed(Completion {
                        conclusion: *conclusion,
                    }));
                }
            }
            // Ended before any runner took it: cancelled (or skipped).
            None if !known.cancelled => signals.push(Signal::Cancelled),
            None => {}
        },
    }
    if signals.is_empty() {
        return Rescue::Leave(
            "GitHub agrees with what is recorded; the execution is still in charge".into(),
        );
    }
    Rescue::Signal(signals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::ids::JobId;
    use crate::domain::job::tests::job_ref;
    use crate::domain::job::Conclusion;
    use crate::domain::lifecycle::Position;
    use crate::domain::record::Now;
    use crate::domain::waits::Registered;

    fn record(state: JobState) -> JobRecord {
        let now = Now {
            epoch_seconds: 1,
            rfc3339: "t".into(),
        };
        let mut record = JobRecord::received(
            job_ref(&["tasuki"]),
            "arn".into(),
            &example().timeouts,
            &now,
        )
        .record;
        record.position = Position { state, attempt: 1 };
        record
    }

    fn on(runner: &str) -> Registered {
        Registered {
            runner_name: runner.into(),
            runner_id: 3,
            job_id: JobId::new(7),
        }
    }

    #[test]
    fn a_job_never_started_gets_its_execution_started_without_asking_github() {
        let received = record(JobState::Received);
        assert!(!needs_github(&received));
        assert_eq!(decide(&received, None, None), Rescue::StartExecution);
    }

    #[test]
    fn lost_in_progress_and_completed_deliveries_become_the_signals_they_would_have_been() {
        let waiting = record(JobState::WaitingForRegistration);
        let done = JobOnGitHub::Completed {
            conclusion: Conclusion::Success,
            ran_on: Some(on("tasuki-7-1")),
        };
        assert_eq!(
            decide(&waiting, Some(&done), Some(ExecutionStatus::Running)),
            Rescue::Signal(vec![
                Signal::Registered(on("tasuki-7-1")),
                Signal::Completed(Completion {
                    conclusion: Conclusion::Success
                })
            ])
        );
        let mut running = record(JobState::Running);
        running.signals.registered = Some(on("tasuki-7-1"));
        assert_eq!(
            decide(&running, Some(&done), Some(ExecutionStatus::Running)),
            Rescue::Signal(vec![Signal::Completed(Completion {
                conclusion: Conclusion::Success
            })]),
            "what is recorded is not recorded twice"
        );
        let cancelled = JobOnGitHub::Completed {
            conclusion: Conclusion::Cancelled,
            ran_on: None,
        };
        assert_eq!(
            decide(&waiting, Some(&cancelled), Some(ExecutionStatus::Running)),
            Rescue::Signal(vec![Signal::Cancelled])
        );
    }

    #[test]
    fn a_job_github_has_not_started_or_that_is_as_recorded_is_left_to_its_execution() {
        let waiting = record(JobState::WaitingForRegistration);
        assert!(matches!(
            decide(
                &waiting,
                Some(&JobOnGitHub::NotStarted),
                Some(ExecutionStatus::Running)
            ),
            Rescue::Leave(_)
        ));
        let mut running = record(JobState::Running);
        running.signals.registered = Some(on("tasuki-7-1"));
        assert!(matches!(
            decide(
                &running,
                Some(&JobOnGitHub::Running(on("tasuki-7-1"))),
                Some(ExecutionStatus::Running)
            ),
            Rescue::Leave(_)
        ));
    }

    #[test]
    fn a_job_whose_execution_ended_is_finished_and_its_runner_spared_only_if_it_runs_the_job() {
        let mut waiting = record(JobState::WaitingForRegistration);
        waiting.runner = Some(crate::domain::record::RunnerRef {
            name: "tasuki-7-1".into(),
            id: 3,
        });
        for (github, busy) in [
            (JobOnGitHub::NotStarted, false),
            (JobOnGitHub::Running(on("tasuki-7-1")), true),
            (JobOnGitHub::Running(on("someone-else")), false),
        ] {
            assert_eq!(
                decide(&waiting, Some(&github), Some(ExecutionStatus::Aborted)),
                Rescue::Finish {
                    execution: ExecutionStatus::Aborted,
                    busy
                }
            );
        }
        assert_eq!(
            Rescue::Finish { execution: ExecutionStatus::Failed, busy: false }.reason(),
            "rescue: its execution ended FAILED without finishing the job; its task is stopped and its runner deleted"
        );
        assert!(matches!(
            decide(
                &waiting,
                Some(&JobOnGitHub::NotStarted),
                Some(ExecutionStatus::PendingRedrive)
            ),
            Rescue::Leave(_)
        ));
    }

    #[test]
    fn a_task_is_suspect_only_once_its_job_finished_or_moved_on() {
        let task = |attempt| StartedBy {
            job: JobId::new(7),
            attempt: crate::domain::ids::Attempt::new(attempt).unwrap(),
        };
        let mut waiting = record(JobState::WaitingForRegistration);
        waiting.position.attempt = 2;
        assert_eq!(check_task(task(2), Some(&waiting)), TaskCheck::Owned);
        assert_eq!(
            check_task(task(1), Some(&waiting)),
            TaskCheck::Suspect("its job moved on to attempt 2".into())
        );
        let mut done = record(JobState::Completed);
        done.position.attempt = 2;
        assert_eq!(
            check_task(task(2), Some(&done)),
            TaskCheck::Suspect("its job is completed".into())
        );
        assert_eq!(check_task(task(1), None), TaskCheck::Unknown);
    }

    #[test]
    fn the_reason_says_what_github_said() {
        let rescue = Rescue::Signal(vec![
            Signal::Registered(on("tasuki-7-1")),
            Signal::Completed(Completion {
                conclusion: Conclusion::Failure,
            }),
        ]);
        assert_eq!(
            rescue.reason(),
            "rescue: GitHub says the job runs on tasuki-7-1 and the job completed (failure); the webhook was lost"
        );
    }
}
