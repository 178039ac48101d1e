//! The Lambdas' logic, over ports: each handler is a thin sequence of pure decisions and I/O.
//! Every state machine step is a [`step::Step`]: a typed input parsed from the execution state,
//! a typed output the ASL places with `ResultPath`, one span and one error mapping for all.

pub mod cleanup;
pub mod ecs_events;
pub mod finalize;
pub mod issue_token;
pub mod registration;
pub mod rescue;
pub mod resolve_labels;
pub mod run_task;
pub mod state;
pub mod step;
pub mod validate;
pub mod webhook;

use crate::domain::config::Timeouts;
use crate::domain::figures::JobFigures;
use crate::domain::ids::JobId;
use crate::domain::job::Conclusion;
use crate::domain::lifecycle::{self, Happening, JobState, Position};
use crate::domain::record::{self, Commit, JobRecord, Now, RunnerRef};
use crate::domain::waits::{self, Callback, Wait};
use crate::error::StepError;
use crate::metrics::{self, MetricSink};
use crate::ports::{Clock, Executions, LifecycleStore, StoreError};
use std::sync::Arc;

const COMMIT_TRIES: usize = 5;

/// Attributes a transition sets besides the state.
#[derive(Debug, Default)]
pub struct Effects {
    pub candidate: Option<String>,
    pub task_arn: Option<String>,
    pub runner: Option<RunnerRef>,
    pub conclusion: Option<Conclusion>,
}

/// The job's lifecycle as the steps write it: the store, the clock, the deadline policy's limits,
/// and where each transition's metrics go.
#[derive(Clone)]
pub struct Lifecycle {
    pub store: Arc<dyn LifecycleStore>,
    pub clock: Arc<dyn Clock>,
    pub timeouts: Timeouts,
    pub metrics: Arc<dyn MetricSink>,
}

impl Lifecycle {
    /// The job as stored; a job the store does not know is a lifecycle conflict.
    pub async fn job(&self, job_id: JobId) -> Result<JobRecord, StepError> {
        Ok(self
            .store
            .get(job_id)
            .await?
            .ok_or(StoreError::NotFound(job_id))?)
    }

    /// Applies one lifecycle transition with a conditional write, re-reading on a lost race, and
    /// returns where the job now stands. A retried step repeating the transition it already made
    /// is a no-op.
    pub async fn transition(
        &self,
        job_id: JobId,
        happening: Happening,
        effects: Effects,
    ) -> Result<Position, StepError> {
        for _ in 0..COMMIT_TRIES {
            let from = self.job(job_id).await?;
            if from.last_happening.as_ref() == Some(&happening) {
                return Ok(from.position);
            }
            // An illegal transition is not retried: reading again would not make it legal.
            lifecycle::next(from.position, &happening)
                .map_err(|e| StepError::LifecycleConflict(format!("job {job_id}: {e}")))?;
            match self.commit(&from, happening.clone(), &effects).await {
                Err(StepError::LifecycleConflict(_)) => continue,
                other => return other,
            }
        }
        Err(StepError::LifecycleConflict(format!(
            "job {job_id}: still changing after {COMMIT_TRIES} tries"
        )))
    }

    /// Applies `happening` to the job exactly as `from` was read, once: `LifecycleConflict` when
    /// it changed since (the rescue sweep acts only on what it checked).
    pub async fn commit(
        &self,
        from: &JobRecord,
        happening: Happening,
        effects: &Effects,
    ) -> Result<Position, StepError> {
        let job_id = from.job.job_id;
        let to = lifecycle::next(from.position, &happening)
            .map_err(|e| StepError::LifecycleConflict(format!("job {job_id}: {e}")))?;
        let now = self.clock.now();
        let commit = Commit {
            to,
            happening,
            candidate: effects.candidate.clone(),
            deadline: record::deadline(&self.timeouts, &now),
            task_arn: effects.task_arn.clone(),
            runner: effects.runner.clone(),
            conclusion: effects.conclusion,
        };
        match self.store.commit(from, &from.apply(&commit, &now)).await {
            Ok(()) => {
                tracing::info!(job_id = job_id.get(), state = %to.state, attempt = to.attempt, "transition");
                self.measure(job_id, &commit.happening, to.state, &now)
                    .await;
                Ok(to)
            }
            Err(StoreError::Conflict) => Err(StepError::LifecycleConflict(format!(
                "job {job_id} changed since it was read"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Emits the metrics of a committed transition. Metrics never fail a step: a timeline that
    /// cannot be read costs the figures of this transition only.
    async fn measure(&self, job_id: JobId, happening: &Happening, to: JobState, now: &Now) {
        let figures = if metrics::needs_figures(to) {
            match self.store.timeline(job_id).await {
                Ok(timeline) => JobFigures::of(&timeline, &now.rfc3339),
                Err(error) => {
                    tracing::warn!(job_id = job_id.get(), %error, "no figures: the timeline could not be read");
                    None
                }
            }
        } else {
            None
        };
        let data = metrics::of_transition(happening, to, figures.as_ref());
        self.metrics
            .emit(&data, now.epoch_seconds * 1000, Some(job_id));
    }

    /// Records the job refused and returns the error that ends its execution as `Refused`.
    pub async fn refuse(&self, job_id: JobId, reason: String) -> StepError {
        tracing::warn!(job_id = job_id.get(), %reason, "refused");
        let happening = Happening::Refuse {
            reason: reason.clone(),
        };
        match self.transition(job_id, happening, Effects::default()).await {
            Ok(_) => StepError::JobRefused(reason),
            Err(e) => e,
        }
    }

    /// Stores the task token, then answers it at once if a signal already came in.
    pub async fn arm(
        &self,
        executions: &dyn Executions,
        job_id: JobId,
        wait: &Wait,
    ) -> Result<(), StepError> {
        let record = self.store.arm(job_id, wait).await?;
        deliver(executions, &record).await?;
        Ok(())
    }
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
        job_id = record.job.job_id.get(),
        attempt = wait.attempt.get(),
        phase = ?wait.phase,
        delivered,
        "callback"
    );
    Ok(Some(callback))
}
