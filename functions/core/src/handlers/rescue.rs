//! The rescue sweep: jobs past their deadline, read from the state/deadline index, checked against
//! GitHub and rescued (`domain::rescue`); then `queued` deliveries GitHub failed to make, found in
//! the App's delivery log and redelivered (`domain::deliveries`); then runner tasks whose job
//! finished or moved on, stopped unless their runner runs a job. Run by the scheduled `rescue`
//! Lambda and by `tasuki rescue [--dry-run]`; safe next to callbacks and another sweep, as every
//! write is a signal (idempotent), a StartExecution (idempotent by name), a conditional transition
//! or a redelivery (the webhook starts one execution per job, however often `queued` arrives).

use super::{deliver, Effects, Lifecycle};
use crate::domain::deliveries::{self, LostDelivery};
use crate::domain::figures;
use crate::domain::ids::{JobId, RunnerName};
use crate::domain::labels::is_ours;
use crate::domain::lifecycle::{Happening, JobState};
use crate::domain::record::{self, JobRecord};
use crate::domain::rescue::{self, Rescue, TaskCheck};
use crate::domain::waits::JobOnGitHub;
use crate::error::StepError;
use crate::metrics::{Datum, Dimension, Metric};
use crate::ports::{Executions, RunnerRegistry, RunningTask, TaskLauncher, WebhookDeliveries};
use serde::Serialize;
use std::sync::Arc;

/// Jobs examined per sweep: a sweep runs every minute, so a backlog drains over a few.
pub const SWEEP_LIMIT: usize = 50;

/// How far back each sweep reads the delivery log. A sweep runs every minute, so half an hour
/// covers half an hour of sweeps failing in a row; GitHub keeps three days
/// (<https://docs.github.com/en/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks>).
pub const DELIVERY_LOOKBACK_SECONDS: u64 = 30 * 60;
/// Delivery attempts read per sweep (five pages of 100).
pub const DELIVERY_READ_LIMIT: usize = 500;
/// Lost deliveries redelivered per sweep: each costs GitHub calls, and the next sweep goes on.
pub const REDELIVERY_LIMIT: usize = 10;
/// Running runner tasks checked per sweep (two ListTasks pages).
pub const TASK_CHECK_LIMIT: usize = 200;

pub struct RescueSweep {
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub deliveries: Arc<dyn WebhookDeliveries>,
    /// Stops the task of a job whose execution ended without finishing it.
    pub launcher: Arc<dyn TaskLauncher>,
}

/// What a sweep did, job by job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sweep {
    pub dry_run: bool,
    pub overdue: usize,
    pub jobs: Vec<Rescued>,
    /// Lost `queued` deliveries and what was done with each.
    pub lost_queued: Vec<Redelivery>,
    /// Runner tasks nothing else will stop, and what was done with each.
    pub orphans: Vec<Orphan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// `None` when ECS could not be read.
    pub task_arn: Option<String>,
    pub job_id: Option<JobId>,
    /// `stop`, `leave`, or `error`.
    pub action: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redelivery {
    /// The delivery attempt asked again; `None` when the delivery log could not be read.
    pub delivery_id: Option<u64>,
    pub job_id: Option<JobId>,
    /// `redeliver`, `leave`, or `error`.
    pub action: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rescued {
    pub job_id: JobId,
    pub state: JobState,
    /// `start-execution`, `signal`, `finish`, `leave`, or `error`.
    pub action: &'static str,
    pub reason: String,
}

/// Seconds since the oldest of `overdue` still waiting for a runner was received; 0 when none is.
/// The sweep sees a job once it is a grace period past its last change, so a job waiting longer
/// than that is always among them.
pub fn oldest_queued(overdue: &[JobRecord], now: u64) -> f64 {
    overdue
        .iter()
        .filter(|r| {
            matches!(
                r.position.state,
                JobState::Received
                    | JobState::Planned
                    | JobState::Launching
                    | JobState::WaitingForRegistration
            )
        })
        .filter_map(|r| figures::epoch(&r.created_at))
        .map(|received| (now as f64 - received).max(0.0))
        .fold(0.0, f64::max)
}

impl Sweep {
    /// One `RescueActions` datum per thing the sweep did (what it left is not an action).
    pub fn actions(&self) -> Vec<Datum> {
        let jobs = self.jobs.iter().map(|j| j.action);
        let redeliveries = self.lost_queued.iter().map(|r| r.action);
        let tasks = self.orphans.iter().map(|o| match o.action {
            "stop" => "stop-task",
            other => other,
        });
        jobs.chain(redeliveries)
            .chain(tasks)
            .filter(|&action| action != "leave")
            .map(|action| Datum::new(Metric::RescueActions, 1.0).by(Dimension::Action, action))
            .collect()
    }
}

impl RescueSweep {
    pub async fn sweep(&self, dry_run: bool) -> Result<Sweep, StepError> {
        let now = self.lifecycle.clock.now().epoch_seconds;
        let overdue = self.lifecycle.store.overdue(now, SWEEP_LIMIT).await?;
        let mut jobs = Vec::with_capacity(overdue.len());
        for record in &overdue {
            let job_id = record.job.job_id;
            let rescued = match self.rescue(record, dry_run).await {
                Ok((action, reason)) => Rescued {
                    job_id,
                    state: record.position.state,
                    action,
                    reason,
                },
                // One job's trouble does not stop the sweep; the next sweep tries again.
                Err(error) => Rescued {
                    job_id,
                    state: record.position.state,
                    action: "error",
                    reason: error.to_string(),
                },
            };
            tracing::info!(job_id = job_id.get(), action = rescued.action, reason = %rescued.reason, dry_run, "rescue");
            jobs.push(rescued);
        }
        let sweep = Sweep {
            dry_run,
            overdue: overdue.len(),
            jobs,
            lost_queued: self.recover_lost_queued(dry_run).await,
            orphans: self.stop_orphans(dry_run).await,
        };
        if !dry_run {
            let mut data = sweep.actions();
            data.push(Datum::new(
                Metric::OldestQueuedSeconds,
                oldest_queued(&overdue, now),
            ));
            self.lifecycle.metrics.emit(&data, now * 1000, None);
        }
        Ok(sweep)
    }

    /// Stops runner tasks whose job finished or moved on, unless GitHub says their runner runs a
    /// job (a runner taken by another job finishes it), and deletes their idle runners.
    async fn stop_orphans(&self, dry_run: bool) -> Vec<Orphan> {
        let tasks = match self.launcher.running(TASK_CHECK_LIMIT).await {
            Ok(tasks) => tasks,
            Err(error) => {
                tracing::warn!(%error, "could not list the runner tasks");
                return vec![Orphan {
                    task_arn: None,
                    job_id: None,
                    action: "error",
                    reason: format!("could not list the runner tasks: {error}"),
                }];
            }
        };
        let mut orphans = vec![];
        for task in tasks {
            let (action, reason) = match self.check_orphan(&task, dry_run).await {
                Ok(Some(done)) => done,
                Ok(None) => continue,
                Err(error) => ("error", error.to_string()),
            };
            tracing::info!(task_arn = %task.task_arn, job_id = task.started_by.job.get(), action, %reason, dry_run, "runner task");
            orphans.push(Orphan {
                task_arn: Some(task.task_arn),
                job_id: Some(task.started_by.job),
                action,
                reason,
            });
        }
        orphans
    }

    /// `None` for a task its job's execution owns.
    async fn check_orphan(
        &self,
        task: &RunningTask,
        dry_run: bool,
    ) -> Result<Option<(&'static str, String)>, StepError> {
        let record = self.lifecycle.store.get(task.started_by.job).await?;
        let why = match rescue::check_task(task.started_by, record.as_ref()) {
            TaskCheck::Owned => return Ok(None),
            TaskCheck::Unknown => {
                return Ok(Some(("leave", "its job is not recorded".into())));
            }
            TaskCheck::Suspect(why) => why,
        };
        let Some(record) = record else {
            return Ok(None);
        };
        let name = RunnerName::new(task.started_by.job, task.started_by.attempt);
        let runner = self.registry.runner(&record.job, name).await?;
        if runner.is_some_and(|r| r.busy) {
            return Ok(Some((
                "leave",
                format!("{why}, but its runner {name} runs a job: left to finish it"),
            )));
        }
        let reason = format!("rescue: {why} and its runner {name} runs no job: stopped");
        if !dry_run {
            self.launcher.stop(&task.task_arn, &reason).await?;
            if let Some(runner) = runner {
                self.registry.delete_runner(&record.job, runner.id).await?;
            }
        }
        Ok(Some(("stop", reason)))
    }

    /// Redelivers `queued` deliveries that never reached the webhook, for jobs of ours that are
    /// not recorded and that GitHub still has queued.
    async fn recover_lost_queued(&self, dry_run: bool) -> Vec<Redelivery> {
        let now = self.lifecycle.clock.now().epoch_seconds;
        let since = now.saturating_sub(DELIVERY_LOOKBACK_SECONDS);
        let attempts = match self.deliveries.recent(since, DELIVERY_READ_LIMIT).await {
            Ok(attempts) => attempts,
            Err(error) => {
                tracing::warn!(%error, "could not read the App's delivery log");
                return vec![Redelivery {
                    delivery_id: None,
                    job_id: None,
                    action: "error",
                    reason: format!("could not read the App's delivery log: {error}"),
                }];
            }
        };
        let mut done = vec![];
        for lost in deliveries::lost_queued(&attempts)
            .into_iter()
            .take(REDELIVERY_LIMIT)
        {
            let redelivery = match self.redeliver(&lost, dry_run).await {
                Ok(redelivery) => redelivery,
                Err(error) => Redelivery {
                    delivery_id: Some(lost.id),
                    job_id: None,
                    action: "error",
                    reason: error.to_string(),
                },
            };
            tracing::info!(delivery_id = lost.id, guid = %lost.guid, job_id = ?redelivery.job_id, action = redelivery.action, reason = %redelivery.reason, dry_run, "lost queued delivery");
            done.push(redelivery);
        }
        done
    }

    async fn redeliver(&self, lost: &LostDelivery, dry_run: bool) -> Result<Redelivery, StepError> {
        let answer = |job_id, action, reason: String| Redelivery {
            delivery_id: Some(lost.id),
            job_id,
            action,
            reason,
        };
        let Some(job) = self.deliveries.job_of(lost.id).await? else {
            return Ok(answer(
                None,
                "leave",
                "not a workflow_job delivery with an installation".into(),
            ));
        };
        let job_id = Some(job.job_id);
        if !is_ours(&job.labels) {
            return Ok(answer(job_id, "leave", "no tasuki label".into()));
        }
        if self.lifecycle.store.get(job.job_id).await?.is_some() {
            return Ok(answer(
                job_id,
                "leave",
                "the job is recorded: it arrived some other way".into(),
            ));
        }
        if let state @ (JobOnGitHub::Running(_) | JobOnGitHub::Completed { .. }) =
            self.registry.job(&job).await?
        {
            let now = match state {
                JobOnGitHub::Running(on) => format!("runs on {}", on.runner_name),
                _ => "is finished".into(),
            };
            return Ok(answer(
                job_id,
                "leave",
                format!("GitHub says the job {now}: no runner needed"),
            ));
        }
        let reason = format!(
            "the queued delivery {} never reached the webhook ({} failed attempt(s)); GitHub still has the job queued",
            lost.guid, lost.attempts
        );
        if !dry_run {
            self.deliveries.redeliver(lost.id).await?;
        }
        Ok(answer(job_id, "redeliver", reason))
    }

    async fn rescue(
        &self,
        record: &JobRecord,
        dry_run: bool,
    ) -> Result<(&'static str, String), StepError> {
        if record.position.state == JobState::Interrupted {
            return self.rerun(record, dry_run).await;
        }
        let github = if rescue::needs_github(record) {
            Some(self.registry.job(&record.job).await?)
        } else {
            None
        };
        let execution = if rescue::needs_github(record) {
            Some(self.executions.status(&record.job).await?)
        } else {
            None
        };
        let rescue = rescue::decide(record, github.as_ref(), execution);
        let reason = rescue.reason();
        let action = match &rescue {
            Rescue::StartExecution => "start-execution",
            Rescue::Signal(_) => "signal",
            Rescue::Finish { .. } => "finish",
            Rescue::Rerun => "rerun",
            Rescue::Leave(_) => "leave",
        };
        if dry_run {
            return Ok((action, reason));
        }
        let job_id = record.job.job_id;
        if let Rescue::Leave(_) = rescue {
            let next = record::deadline(&self.lifecycle.timeouts, &self.lifecycle.clock.now());
            self.lifecycle.store.postpone(job_id, next).await?;
            return Ok((action, reason));
        }
        // The row first, on the job exactly as the sweep read it: if anything changed since (a
        // callback, another sweep, the job finishing), nothing is done and the next sweep looks
        // again. The row also moves the deadline on, so the next sweep does not act again.
        let happening = match &rescue {
            Rescue::Finish { .. } => Happening::Fail {
                reason: reason.clone(),
            },
            _ => Happening::Rescue {
                reason: reason.clone(),
            },
        };
        if let Some(changed) = self.claim(record, happening).await? {
            return Ok(("leave", changed));
        }
        match &rescue {
            Rescue::StartExecution => {
                self.executions.start(&record.job).await?;
            }
            Rescue::Signal(signals) => {
                for signal in signals {
                    if let Some(now) = self.lifecycle.store.signal(job_id, signal).await? {
                        deliver(&*self.executions, &now).await?;
                    }
                }
            }
            Rescue::Finish { busy, .. } => {
                if !busy {
                    if let Some(task_arn) = &record.task_arn {
                        self.launcher.stop(task_arn, &reason).await?;
                    }
                    if let Some(runner) = &record.runner {
                        self.registry.delete_runner(&record.job, runner.id).await?;
                    }
                }
            }
            Rescue::Rerun | Rescue::Leave(_) => {}
        }
        Ok((action, reason))
    }

    /// Commits `happening` on the job exactly as the sweep read it; `Some(why)` when something
    /// changed it since (a callback, another sweep): then it is left to whoever changed it.
    async fn claim(
        &self,
        record: &JobRecord,
        happening: Happening,
    ) -> Result<Option<String>, StepError> {
        match self
            .lifecycle
            .commit(record, happening, &Effects::default())
            .await
        {
            Ok(_) => Ok(None),
            Err(StepError::LifecycleConflict(_)) => {
                let now = self.lifecycle.job(record.job.job_id).await?;
                Ok(Some(format!(
                    "changed since the sweep read it (now {}): left to whoever changed it",
                    now.position.state
                )))
            }
            Err(error) => Err(error),
        }
    }

    /// An `interrupted` job: once its workflow run completed, the re-run is marked (so the new
    /// job's ResolveLabels plans no Spot) and asked of GitHub. The claim row first, so of two
    /// sweeps only one asks; a GitHub refusal fails the job, anything else is retried next sweep.
    async fn rerun(
        &self,
        record: &JobRecord,
        dry_run: bool,
    ) -> Result<(&'static str, String), StepError> {
        let rescue = rescue::rerun(self.registry.run_completed(&record.job).await?);
        let reason = rescue.reason();
        let Rescue::Rerun = rescue else {
            if !dry_run {
                let next = record::deadline(&self.lifecycle.timeouts, &self.lifecycle.clock.now());
                self.lifecycle
                    .store
                    .postpone(record.job.job_id, next)
                    .await?;
            }
            return Ok(("leave", reason));
        };
        if dry_run {
            return Ok(("rerun", reason));
        }
        let claim = Happening::Rescue {
            reason: reason.clone(),
        };
        if let Some(changed) = self.claim(record, claim).await? {
            return Ok(("leave", changed));
        }
        self.lifecycle
            .store
            .mark_rerun(&record.job.rerun_key())
            .await?;
        let ended = match self.registry.rerun(&record.job).await {
            Ok(()) => Happening::Rerun {
                reason: "GitHub re-runs the job in its run's next attempt, without Spot".into(),
            },
            Err(StepError::GitHubError(why)) => Happening::Fail {
                reason: format!("Spot interrupted the job and GitHub refused to re-run it: {why}"),
            },
            Err(error) => return Err(error),
        };
        self.lifecycle
            .transition(record.job.job_id, ended, Effects::default())
            .await?;
        Ok(("rerun", reason))
    }
}
