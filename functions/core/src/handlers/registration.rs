//! The two `.waitForTaskToken` steps. Each records its transition, then arms its wait — and
//! answers it at once if GitHub or ECS already said how it ends.

use super::state::{Launched, Registering, WaitInput};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::ids::JobId;
use crate::domain::lifecycle::Happening;
use crate::domain::record::RunnerRef;
use crate::domain::waits::{Wait, WaitPhase};
use crate::error::StepError;
use crate::ports::Executions;
use async_trait::async_trait;
use std::sync::Arc;

/// What both waits need: the lifecycle to record the transition, Step Functions to answer early.
pub struct Waiting {
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
}

impl Waiting {
    async fn enter(
        &self,
        job_id: JobId,
        happening: Happening,
        effects: Effects,
        wait: Wait,
    ) -> Result<(), StepError> {
        self.lifecycle
            .transition(job_id, happening, effects)
            .await?;
        self.lifecycle.arm(&*self.executions, job_id, &wait).await
    }
}

/// WaitForRegistration: the task started; wait for GitHub to give the job to a runner.
pub struct WaitForRegistration(pub Waiting);

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
        } = input.state;
        let happening = Happening::AwaitRegistration {
            attempt: attempt.number,
            task_arn: task.task_arn.clone(),
        };
        let effects = Effects {
            task_arn: Some(task.task_arn),
            runner: Some(RunnerRef {
                name: runner.name.to_string(),
                id: runner.id,
            }),
            ..Effects::default()
        };
        let wait = Wait {
            token: input.token,
            phase: WaitPhase::Registration,
            attempt: attempt.number,
        };
        self.0.enter(job.job_id, happening, effects, wait).await
    }
}

/// Confirm: the job runs on a runner; record it running and wait for its completion.
pub struct Confirm(pub Waiting);

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
        } = input.state;
        if registration.job_id != job.job_id {
            tracing::info!(
                took_job = registration.job_id.get(),
                "runner took another queued job with matching labels"
            );
        }
        let happening = Happening::Register {
            runner_name: registration.runner_name.clone(),
        };
        let effects = Effects {
            runner: Some(RunnerRef {
                name: registration.runner_name,
                id: registration.runner_id,
            }),
            ..Effects::default()
        };
        let wait = Wait {
            token: input.token,
            phase: WaitPhase::Completion,
            attempt: attempt.number,
        };
        self.0.enter(job.job_id, happening, effects, wait).await
    }
}
