//! The two `.waitForTaskToken` steps: each records the transition, then arms its wait (and
//! answers it at once if GitHub or ECS already said how it ends).

use super::state::{Launched, Registering, WaitInput};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::lifecycle::Happening;
use crate::domain::record::RunnerRef;
use crate::domain::waits::{Wait, WaitPhase};
use crate::error::StepError;
use crate::ports::Executions;
use async_trait::async_trait;
use std::sync::Arc;

/// WaitForRegistration: the task started; wait for GitHub to give the job to a runner.
pub struct WaitForRegistration {
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
}

#[async_trait]
impl Step for WaitForRegistration {
    const NAME: &'static str = "wait-for-registration";
    type Input = WaitInput<Launched>;
    type Output = ();

    async fn run(&self, input: Self::Input) -> Result<(), StepError> {
        let Launched {
            job,
            attempt,
            runner,
            task,
        } = &input.state;
        let attempt = attempt.number;
        self.lifecycle
            .transition(
                job.job_id,
                Happening::AwaitRegistration {
                    attempt,
                    task_arn: task.task_arn.clone(),
                },
                Effects {
                    task_arn: Some(task.task_arn.clone()),
                    runner: Some(RunnerRef {
                        name: runner.name.to_string(),
                        id: runner.id,
                    }),
                    ..Effects::default()
                },
            )
            .await?;
        let wait = Wait {
            token: input.token,
            phase: WaitPhase::Registration,
            attempt,
        };
        self.lifecycle
            .arm(&*self.executions, job.job_id, &wait)
            .await
    }
}

/// Confirm: the job runs on a runner; record it running and wait for its completion.
pub struct Confirm {
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
}

#[async_trait]
impl Step for Confirm {
    const NAME: &'static str = "confirm";
    type Input = WaitInput<Registering>;
    type Output = ();

    async fn run(&self, input: Self::Input) -> Result<(), StepError> {
        let Registering {
            job,
            attempt,
            registration,
        } = &input.state;
        self.lifecycle
            .transition(
                job.job_id,
                Happening::Register {
                    runner_name: registration.runner_name.clone(),
                },
                Effects {
                    runner: Some(RunnerRef {
                        name: registration.runner_name.clone(),
                        id: registration.runner_id,
                    }),
                    ..Effects::default()
                },
            )
            .await?;
        if registration.job_id != job.job_id {
            tracing::info!(
                took_job = registration.job_id.get(),
                "runner took another queued job with matching labels"
            );
        }
        let wait = Wait {
            token: input.token,
            phase: WaitPhase::Completion,
            attempt: attempt.number,
        };
        self.lifecycle
            .arm(&*self.executions, job.job_id, &wait)
            .await
    }
}
