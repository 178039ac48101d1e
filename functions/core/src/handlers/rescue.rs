//! The rescue sweep: jobs past their deadline, read from the state/deadline index, checked against
//! GitHub and rescued (`domain::rescue`). Run by the scheduled `rescue` Lambda and by
//! `tasuki rescue [--dry-run]`; safe next to callbacks and another sweep, as every write is a
//! signal (idempotent), a StartExecution (idempotent by name) or a conditional transition.

use super::{deliver, Effects, Lifecycle};
use crate::domain::ids::JobId;
use crate::domain::lifecycle::{Happening, JobState};
use crate::domain::record::{self, JobRecord};
use crate::domain::rescue::{self, Rescue};
use crate::error::StepError;
use crate::ports::{Executions, RunnerRegistry};
use serde::Serialize;
use std::sync::Arc;

/// Jobs examined per sweep: a sweep runs every minute, so a backlog drains over a few.
pub const SWEEP_LIMIT: usize = 50;

pub struct RescueSweep {
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
    pub registry: Arc<dyn RunnerRegistry>,
}

/// What a sweep did, job by job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sweep {
    pub dry_run: bool,
    pub overdue: usize,
    pub jobs: Vec<Rescued>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rescued {
    pub job_id: JobId,
    pub state: JobState,
    /// `start-execution`, `signal`, `leave`, or `error`.
    pub action: &'static str,
    pub reason: String,
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
        Ok(Sweep {
            dry_run,
            overdue: overdue.len(),
            jobs,
        })
    }

    async fn rescue(
        &self,
        record: &JobRecord,
        dry_run: bool,
    ) -> Result<(&'static str, String), StepError> {
        let github = if rescue::needs_github(record) {
            Some(self.registry.job(&record.job).await?)
        } else {
            None
        };
        let rescue = rescue::decide(record, github.as_ref());
        let reason = rescue.reason();
        let action = match &rescue {
            Rescue::StartExecution => "start-execution",
            Rescue::Signal(_) => "signal",
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
        // The row first: if the job finished meanwhile, the transition is refused and nothing is
        // done; the row also moves the deadline on, so the next sweep does not act again.
        let happening = Happening::Rescue {
            reason: reason.clone(),
        };
        if let Err(error) = self
            .lifecycle
            .transition(job_id, happening, Effects::default())
            .await
        {
            let now = self.lifecycle.job(job_id).await?;
            if now.position.state.is_terminal() {
                return Ok((
                    "leave",
                    format!("finished meanwhile ({})", now.position.state),
                ));
            }
            return Err(error);
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
            Rescue::Leave(_) => {}
        }
        Ok((action, reason))
    }
}
