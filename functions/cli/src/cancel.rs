//! `tasuki cancel <job-id>`: ends tasuki's handling of a job the way GitHub's `completed`
//! (cancelled) delivery does, so the job's own execution cleans up after it — stops the task,
//! deletes the runner, revokes the KMS grant — instead of an abrupt StopExecution, which would skip
//! all three and leave a runner task behind.
//!
//! GitHub's cancel signal is recorded: `cancelled` ends a registration wait (the job never got a
//! runner). A wait already armed is answered at once; a job between waits finds the signal when its
//! execution arms the next one, as with a webhook that arrives early. A job that runs on its
//! runner is refused: GitHub still runs it there, the runner stays busy (GitHub refuses to delete
//! a busy runner, so the execution's release would fail — the e2e found it), and the way to stop it
//! is to cancel its workflow run on GitHub, whose `completed` delivery ends it in tasuki too.

use serde::Serialize;
use tasuki_core::domain::ids::JobId;
use tasuki_core::domain::lifecycle::JobState;
use tasuki_core::domain::waits::Signal;
use tasuki_core::handlers::deliver;
use tasuki_core::ports::{Executions, LifecycleStore, StoreError};
use tasuki_core::StepError;

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no job {0} in the lifecycle table")]
    Unknown(JobId),
    #[error("job {job_id} already finished: {state}")]
    Finished { job_id: JobId, state: JobState },
    /// Spot took its runner and its execution ended; the rescue sweep re-runs it on GitHub once
    /// its workflow run completes. No task or runner of tasuki's is left to clean up.
    #[error(
        "job {0} is interrupted: its execution ended and nothing of tasuki's runs for it; \
         the rescue sweep asks GitHub to re-run it once its workflow run completes"
    )]
    Interrupted(JobId),
    #[error(
        "job {0} runs on its runner: cancel its workflow run on GitHub; \
         tasuki stops the runner when GitHub reports the job completed"
    )]
    Running(JobId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the cancel is recorded but its callback failed ({0}); run `tasuki cancel` again")]
    Callback(StepError),
}

/// What the cancel did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Cancelled {
    pub job_id: JobId,
    /// The job's state when it was cancelled; its execution moves it on.
    pub state: JobState,
    /// A waiting execution was answered now (otherwise it finds the cancel at its next wait).
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub async fn cancel(
    store: &dyn LifecycleStore,
    executions: &dyn Executions,
    job_id: JobId,
    reason: Option<String>,
) -> Result<Cancelled, CancelError> {
    let record = store
        .get(job_id)
        .await?
        .ok_or(CancelError::Unknown(job_id))?;
    let state = record.position.state;
    if state.is_terminal() {
        return Err(CancelError::Finished { job_id, state });
    }
    if state == JobState::Interrupted {
        return Err(CancelError::Interrupted(job_id));
    }
    if state == JobState::Running {
        return Err(CancelError::Running(job_id));
    }
    let now = store
        .signal(job_id, &Signal::Cancelled)
        .await?
        .ok_or(CancelError::Unknown(job_id))?;
    let delivered = deliver(executions, &now)
        .await
        .map_err(CancelError::Callback)?
        .is_some();
    Ok(Cancelled {
        job_id,
        state: now.position.state,
        delivered,
        reason,
    })
}

pub fn render(cancelled: &Cancelled) -> String {
    let what = if cancelled.delivered {
        "its execution was told and now stops the task, deletes the runner and revokes the grant"
    } else {
        "recorded: its execution stops at its next wait and cleans up"
    };
    let reason = cancelled
        .reason
        .as_deref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    format!(
        "cancelled job {} ({}){reason}: {what}\n",
        cancelled.job_id, cancelled.state
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_core::domain::config::Timeouts;
    use tasuki_core::domain::ids::Attempt;
    use tasuki_core::domain::job::JobRef;
    use tasuki_core::domain::lifecycle::{Happening, Position};
    use tasuki_core::domain::record::{Commit, JobRecord, Now};
    use tasuki_core::domain::waits::{TaskToken, Wait, WaitPhase};
    use tasuki_core::fakes::{MemoryStore, RecordingExecutions};

    const TIMEOUTS: Timeouts = Timeouts {
        registration_seconds: 300,
        job_seconds: 3600,
        capacity_wait_seconds: 900,
        rescue_grace_seconds: 300,
    };

    fn now() -> Now {
        Now {
            epoch_seconds: 1_795_392_000,
            rfc3339: "2026-11-23T00:00:00Z".into(),
        }
    }

    async fn received(store: &MemoryStore, job_id: u64) -> JobRecord {
        let job = JobRef {
            job_id: JobId::new(job_id),
            run_id: 9,
            run_attempt: 1,
            repository: "octo-org/app".into(),
            private: true,
            workflow: "CI".into(),
            job_name: "build".into(),
            labels: vec!["tasuki".into()],
            installation_id: 1,
        };
        let change = JobRecord::received(job, "arn:exec".into(), &TIMEOUTS, &now());
        store.create(&change).await.unwrap();
        change.record
    }

    fn waiting(phase: WaitPhase) -> Wait {
        Wait {
            token: TaskToken::new("tok"),
            phase,
            attempt: Attempt::FIRST,
        }
    }

    #[tokio::test]
    async fn a_job_waiting_for_its_runner_fails_its_wait_as_cancelled() {
        let (store, executions) = (MemoryStore::default(), RecordingExecutions::default());
        received(&store, 7).await;
        store
            .arm(JobId::new(7), &waiting(WaitPhase::Registration))
            .await
            .unwrap();
        let done = cancel(&store, &executions, JobId::new(7), Some("stuck".into()))
            .await
            .unwrap();
        assert!(done.delivered);
        let failed = executions.failed.lock().unwrap();
        assert!(
            matches!(failed.as_slice(), [(_, StepError::JobCancelled(_))]),
            "{failed:?}"
        );
        assert!(executions.succeeded.lock().unwrap().is_empty());
        assert_eq!(
            render(&done),
            "cancelled job 7 (received) (stuck): its execution was told and now stops the task, \
             deletes the runner and revokes the grant\n"
        );
    }

    #[tokio::test]
    async fn a_job_running_on_its_runner_is_refused_and_nothing_is_recorded() {
        let (store, executions) = (MemoryStore::default(), RecordingExecutions::default());
        let record = received(&store, 8).await;
        store.race_next_commit(|r| r.position.state = JobState::Running);
        let refuse = Commit {
            to: Position {
                state: JobState::Refused,
                attempt: 0,
            },
            happening: Happening::Refuse { reason: "x".into() },
            candidate: None,
            deadline: 1,
            task_arn: None,
            runner: None,
            conclusion: None,
        };
        let lost = store.commit(&record, &record.apply(&refuse, &now())).await;
        assert!(matches!(lost, Err(StoreError::Conflict)));
        store
            .arm(JobId::new(8), &waiting(WaitPhase::Completion))
            .await
            .unwrap();
        let error = cancel(&store, &executions, JobId::new(8), None)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("job 8 runs on its runner: cancel its workflow run on GitHub"),
            "{error}"
        );
        let after = store.record(JobId::new(8)).unwrap();
        assert!(!after.signals.cancelled && after.signals.conclusion.is_none());
        assert!(executions.succeeded.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_job_between_waits_finds_the_cancel_when_it_next_waits() {
        let (store, executions) = (MemoryStore::default(), RecordingExecutions::default());
        received(&store, 9).await;
        let done = cancel(&store, &executions, JobId::new(9), None)
            .await
            .unwrap();
        assert!(!done.delivered);
        assert!(render(&done).contains("recorded: its execution stops at its next wait"));
        let armed = store
            .arm(JobId::new(9), &waiting(WaitPhase::Registration))
            .await
            .unwrap();
        assert!(armed.signals.cancelled);
        assert_eq!(
            armed.signals.conclusion, None,
            "GitHub's own conclusion is GitHub's"
        );
    }

    #[tokio::test]
    async fn a_finished_interrupted_or_unknown_job_is_refused_with_one_line_and_nothing_changes() {
        let (store, executions) = (MemoryStore::default(), RecordingExecutions::default());
        let record = received(&store, 10).await;
        let refuse = Commit {
            to: Position {
                state: JobState::Refused,
                attempt: 0,
            },
            happening: Happening::Refuse {
                reason: "gpu".into(),
            },
            candidate: None,
            deadline: 1,
            task_arn: None,
            runner: None,
            conclusion: None,
        };
        store
            .commit(&record, &record.apply(&refuse, &now()))
            .await
            .unwrap();
        let finished = cancel(&store, &executions, JobId::new(10), None)
            .await
            .unwrap_err();
        assert_eq!(finished.to_string(), "job 10 already finished: refused");
        assert!(!store.record(JobId::new(10)).unwrap().signals.cancelled);
        // Where Spot leaves a `spot=rerun` job: the fake's other writer puts it there first.
        let record = received(&store, 11).await;
        store.race_next_commit(|r| r.position.state = JobState::Interrupted);
        let lost = store.commit(&record, &record.apply(&refuse, &now())).await;
        assert!(matches!(lost, Err(StoreError::Conflict)));
        let error = cancel(&store, &executions, JobId::new(11), None)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("job 11 is interrupted: its execution ended"),
            "{error}"
        );
        assert!(!store.record(JobId::new(11)).unwrap().signals.cancelled);
        assert!(executions.failed.lock().unwrap().is_empty());
        let unknown = cancel(&store, &executions, JobId::new(404), None)
            .await
            .unwrap_err();
        assert_eq!(unknown.to_string(), "no job 404 in the lifecycle table");
        assert!(store.record(JobId::new(404)).is_none());
    }
}
