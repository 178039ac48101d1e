//! Finalize: the job's last transition, after releasing whatever its attempt still holds — or,
//! for a job that opted in (`spot=rerun`) and lost its runner to Spot mid-job, `interrupted`,
//! which the rescue sweep takes on once the job's workflow run completes.

use super::cleanup::{taken_by_another, Release};
use super::state::{ExecutionState, FinalizeInput, Finalized};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::config::Config;
use crate::domain::labels::{self, LabelVerdict};
use crate::domain::lifecycle::Happening;
use crate::domain::outcome::{self, final_happening, Ending, Outcome};
use crate::domain::waits::{Signals, Stopped};
use crate::error::StepError;
use async_trait::async_trait;
use std::sync::Arc;

pub struct Finalize {
    pub config: Arc<Config>,
    pub lifecycle: Lifecycle,
    pub release: Release,
}

impl Finalize {
    /// [`outcome::interrupted`], for a `spot=rerun` job. GitHub's `completed` (the runner was
    /// lost) may come before ECS's stop event; then the task itself says whether Spot stops it.
    async fn interrupted(
        &self,
        ending: &Ending<'_>,
        ended: &Happening,
        task_arn: Option<&str>,
    ) -> Result<Option<Happening>, StepError> {
        if let Some(interrupted) = outcome::interrupted(ending, ended) {
            return Ok(Some(interrupted));
        }
        let (Some(task_arn), Some(attempt)) = (task_arn, ending.attempt) else {
            return Ok(None);
        };
        let stop_known = ending
            .signals
            .stopped
            .as_ref()
            .is_some_and(|s| s.attempt == attempt);
        if stop_known {
            return Ok(None);
        }
        let Some(reason) = self.release.launcher.stop_reason(task_arn).await? else {
            return Ok(None);
        };
        let signals = Signals {
            stopped: Some(Stopped {
                attempt,
                reason,
                clean_exit: false,
            }),
            ..ending.signals.clone()
        };
        Ok(outcome::interrupted(
            &Ending {
                signals: &signals,
                ..*ending
            },
            ended,
        ))
    }
}

#[async_trait]
impl Step for Finalize {
    const NAME: &'static str = "finalize";
    type Input = FinalizeInput;
    type Output = Finalized;

    async fn run(&self, input: Self::Input) -> Result<Finalized, StepError> {
        let FinalizeInput { state, outcome } = input;
        let ExecutionState {
            job,
            plan,
            attempt,
            runner,
            task,
            completion,
            error,
            ..
        } = &state;
        let record = self.lifecycle.job(job.job_id).await?;
        let ending = Ending {
            completion: *completion,
            error: error.as_ref(),
            attempt: attempt.map(|a| a.number),
            signals: &record.signals,
        };
        let rerun = matches!(
            labels::resolve(&job.labels, &self.config),
            LabelVerdict::Accepted(spec) if spec.rerun_if_interrupted
        );
        let happening = match outcome {
            Outcome::Exhausted => {
                let timeline = self.lifecycle.store.timeline(job.job_id).await?;
                outcome::exhausted(&timeline, plan.as_ref().map_or(1, |p| p.count()))
            }
            outcome => {
                let ended = final_happening(outcome, &ending, &self.config);
                let interrupted = if rerun {
                    self.interrupted(&ending, &ended, task.as_ref().map(|t| t.task_arn.as_str()))
                        .await?
                } else {
                    None
                };
                interrupted.unwrap_or(ended)
            }
        };
        let why = happening.reason().unwrap_or("job finished").to_string();
        // The last attempt's resources were already released by Cleanup when candidates ran out.
        if outcome != Outcome::Exhausted {
            self.release
                .release(
                    job,
                    runner.as_ref(),
                    task.as_ref().map(|t| t.task_arn.as_str()),
                    taken_by_another(runner.as_ref(), &record.signals),
                    &why,
                )
                .await?;
        }
        if let Some(wait) = &record.wait {
            self.lifecycle.store.disarm(job.job_id, &wait.token).await?;
        }
        let done = self
            .lifecycle
            .transition(
                job.job_id,
                happening,
                Effects {
                    conclusion: completion.map(|c| c.conclusion),
                    ..Effects::default()
                },
            )
            .await?;
        tracing::info!(state = %done.state, %why, "finalized");
        Ok(Finalized {
            state: done.state,
            reason: Some(why),
        })
    }
}
