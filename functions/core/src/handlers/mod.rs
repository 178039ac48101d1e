//! The Lambdas' logic, over ports: each handler is a thin sequence of pure decisions and I/O.

pub mod ecs_events;
pub mod steps;
pub mod webhook;

use crate::domain::config::Config;
use crate::domain::lifecycle::{self, Happening, JobState, Position};
use crate::domain::waits::{self, Callback};
use crate::error::StepError;
use crate::ports::{Commit, Executions, JobRecord, LifecycleStore, StoreError};
use std::time::{SystemTime, UNIX_EPOCH};

const COMMIT_TRIES: usize = 5;

pub fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// When a job in `state` should have moved on; the rescue sweep reads it from the GSI.
pub fn deadline(config: &Config, state: JobState, now: u64) -> u64 {
    const GRACE: u64 = 300;
    let t = config.timeouts;
    now + GRACE
        + match state {
            JobState::WaitingForRegistration => u64::from(t.registration_seconds),
            JobState::Running => u64::from(t.job_seconds),
            _ => 0,
        }
}

/// Attributes a transition sets besides the state.
#[derive(Debug, Default)]
pub struct Effects {
    pub candidate: Option<String>,
    pub task_arn: Option<String>,
    pub runner: Option<(String, u64)>,
    pub conclusion: Option<String>,
}

/// The job as stored; a job the store does not know is a lifecycle conflict.
pub async fn existing_job(store: &dyn LifecycleStore, job_id: u64) -> Result<JobRecord, StepError> {
    Ok(store
        .get(job_id)
        .await?
        .ok_or(StoreError::NotFound(job_id))?)
}

/// Applies one lifecycle transition with a conditional write, re-reading on a lost race, and
/// returns where the job now stands. A retried step repeating the transition it already made is
/// a no-op.
pub async fn transition(
    store: &dyn LifecycleStore,
    config: &Config,
    job_id: u64,
    happening: Happening,
    effects: Effects,
) -> Result<Position, StepError> {
    for _ in 0..COMMIT_TRIES {
        let record = existing_job(store, job_id).await?;
        if record.last_happening.as_ref() == Some(&happening) {
            return Ok(record.position);
        }
        let to = lifecycle::next(record.position, &happening)
            .map_err(|e| StepError::LifecycleConflict(format!("job {job_id}: {e}")))?;
        let commit = Commit {
            to,
            happening: happening.clone(),
            candidate: effects.candidate.clone(),
            deadline: deadline(config, to.state, now_epoch()),
            task_arn: effects.task_arn.clone(),
            runner: effects.runner.clone(),
            conclusion: effects.conclusion.clone(),
        };
        match store.commit(&record, &commit).await {
            Ok(()) => {
                tracing::info!(job_id, state = %to.state, attempt = to.attempt, "transition");
                return Ok(to);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StepError::LifecycleConflict(format!(
        "job {job_id}: still changing after {COMMIT_TRIES} tries"
    )))
}

/// Sends the callback a job's current wait resolves to, if its signals resolve it.
pub async fn deliver(
    executions: &dyn Executions,
    record: &JobRecord,
) -> Result<Option<Callback>, StepError> {
    let Some(wait) = &record.wait else {
        return Ok(None);
    };
    let Some(callback) = waits::resolve(record.job.job_id, wait, &record.signals) else {
        return Ok(None);
    };
    let delivered = match &callback {
        Callback::Success(output) => executions.succeed(&wait.token, output).await?,
        Callback::Failure(error) => executions.fail(&wait.token, error).await?,
    };
    tracing::info!(
        job_id = record.job.job_id,
        attempt = wait.attempt,
        phase = ?wait.phase,
        delivered,
        "callback"
    );
    Ok(Some(callback))
}
