//! CleanupAttempt: an attempt failed; release what it started, record why, and say what comes
//! next (the next candidate, a new round after a wait, or nothing).

use super::state::{AfterCleanup, FailedAttempt, IssuedRunner, LaunchedTask, StepInput};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::config::Config;
use crate::domain::job::JobRef;
use crate::domain::job::JobRef as Job;
use crate::domain::lifecycle::Happening;
use crate::domain::outcome::failure_reason;
use crate::domain::record::JobRecord;
use crate::domain::rounds::{self, Failure};
use crate::domain::waits::{Completion, JobOnGitHub, Registered, Signal, Signals};
use crate::error::{Caught, ErrorName, StepError};
use crate::ports::{CredentialSealer, RunnerRegistry, TaskLauncher};
use async_trait::async_trait;
use std::sync::Arc;

/// What an attempt holds until it ends: the KMS grant, the task, the registered runner.
pub struct Release {
    pub launcher: Arc<dyn TaskLauncher>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub sealer: Arc<dyn CredentialSealer>,
}

/// Whether GitHub gave the attempt's runner another job, which it is now serving.
pub fn taken_by_another(runner: Option<&IssuedRunner>, signals: &Signals) -> bool {
    match (runner, &signals.taken) {
        (Some(runner), Some(taken)) => taken.runner_name == runner.name,
        _ => false,
    }
}

impl Release {
    /// Revokes the attempt's KMS grant (its task opened its config at boot already), then stops
    /// its task and deletes its runner — unless that runner is `busy` with a job, which its task
    /// is left to finish.
    pub async fn release(
        &self,
        job: &JobRef,
        runner: Option<&IssuedRunner>,
        task_arn: Option<&str>,
        busy: bool,
        why: &str,
    ) -> Result<(), StepError> {
        if let Some(runner) = runner {
            self.sealer.revoke(&runner.grant_id).await?;
        }
        if busy {
            tracing::info!("the runner runs a job; its task is left to finish it");
            return Ok(());
        }
        if let Some(task_arn) = task_arn {
            self.launcher.stop(task_arn, why).await?;
        }
        if let Some(runner) = runner {
            self.registry.delete_runner(job, runner.id).await?;
        }
        Ok(())
    }
}

pub struct Cleanup {
    pub config: Arc<Config>,
    pub lifecycle: Lifecycle,
    pub release: Release,
}

#[async_trait]
impl Step for Cleanup {
    const NAME: &'static str = "cleanup";
    type Input = StepInput<FailedAttempt>;
    type Output = AfterCleanup;

    async fn run(&self, input: Self::Input) -> Result<AfterCleanup, StepError> {
        let FailedAttempt {
            job,
            plan,
            attempt,
            runner,
            task,
            error,
        } = &input.state;
        let progress = *attempt;
        let attempt = progress.number;
        let failure = if error.is_capacity() {
            Failure::Capacity
        } else if error.error == Caught::Step(ErrorName::RunnerTaken) {
            Failure::Taken
        } else {
            Failure::Other
        };
        let horizon = self.config.timeouts.capacity_wait_seconds;
        let next = rounds::next_attempt(progress, plan.count(), failure, horizon);
        let record = self.lifecycle.job(job.job_id).await?;
        // Before giving up on a runner that did not register or a task that stopped, ask GitHub:
        // a lost `in_progress` delivery must not get a running job killed.
        if matches!(
            error.error,
            Caught::Timeout | Caught::Step(ErrorName::TaskStopped)
        ) {
            let now = self.release.registry.job(job).await?;
            if let Some(registered) = now.runner().cloned() {
                let attempt = Attempt {
                    runner,
                    task: task.as_ref(),
                };
                self.carry_on(job, attempt, &record, &registered, &now)
                    .await?;
                return Ok(AfterCleanup {
                    next,
                    running: Some(registered),
                });
            }
        }
        let mut reason = failure_reason(error, Some(attempt), &self.config, &record.signals);
        self.release
            .release(
                job,
                Some(runner),
                task.as_ref().map(|t| t.task_arn.as_str()),
                taken_by_another(Some(runner), &record.signals),
                &reason,
            )
            .await?;
        if let Some(wait) = &record.wait {
            self.lifecycle.store.disarm(job.job_id, &wait.token).await?;
        }
        if next.try_ == progress.try_ {
            reason = format!(
                "{reason}; relaunching on the same candidate ({} of {} relaunches)",
                next.relaunches,
                rounds::MAX_RELAUNCHES_AFTER_THEFT
            );
        } else if next.wait_seconds > 0 {
            reason = format!(
                "{reason}; every candidate tried: round {} starts in {} s",
                rounds::round_of(next.try_, plan.count()),
                next.wait_seconds
            );
        }
        tracing::warn!(%reason, "attempt failed");
        self.lifecycle
            .transition(
                job.job_id,
                Happening::AttemptFailed { attempt, reason },
                Effects::default(),
            )
            .await?;
        Ok(AfterCleanup {
            next,
            running: None,
        })
    }
}

/// What an attempt launched.
struct Attempt<'a> {
    runner: &'a IssuedRunner,
    task: Option<&'a LaunchedTask>,
}

impl Cleanup {
    /// The job runs (or ran) on `registered` although its registration wait ended: record what
    /// GitHub said, and release only what the job does not use.
    async fn carry_on(
        &self,
        job: &Job,
        attempt: Attempt<'_>,
        record: &JobRecord,
        registered: &Registered,
        now: &JobOnGitHub,
    ) -> Result<(), StepError> {
        tracing::warn!(
            runner_name = %registered.runner_name,
            "GitHub says the job runs: its in_progress delivery was lost; waiting for its completion"
        );
        let store = &self.lifecycle.store;
        store
            .signal(job.job_id, &Signal::Registered(registered.clone()))
            .await?;
        if let JobOnGitHub::Completed { conclusion, .. } = now {
            let completed = Signal::Completed(Completion {
                conclusion: *conclusion,
            });
            store.signal(job.job_id, &completed).await?;
        }
        if let Some(wait) = &record.wait {
            store.disarm(job.job_id, &wait.token).await?;
        }
        // On its own runner the job keeps it; on another runner, the one launched for it is idle.
        let busy = attempt.runner.name == *registered.runner_name.as_str();
        self.release
            .release(
                job,
                Some(attempt.runner),
                attempt.task.map(|t| t.task_arn.as_str()),
                busy,
                "the job runs on another runner",
            )
            .await
    }
}
