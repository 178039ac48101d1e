//! RunTask: one ECS task on the attempt's candidate.

use super::state::{Issued, LaunchedTask, StepInput};
use super::step::Step;
use crate::domain::config::Config;
use crate::domain::launch::{launch_request, Launch};
use crate::error::StepError;
use crate::ports::TaskLauncher;
use async_trait::async_trait;
use std::sync::Arc;

pub struct RunTask {
    pub config: Arc<Config>,
    pub launcher: Arc<dyn TaskLauncher>,
}

#[async_trait]
impl Step for RunTask {
    const NAME: &'static str = "run-task";
    type Input = StepInput<Issued>;
    type Output = LaunchedTask;

    async fn run(&self, input: Self::Input) -> Result<LaunchedTask, StepError> {
        let state = &input.state;
        let launch = Launch {
            job: &state.job,
            attempt: state.attempt.number,
            candidate: state.plan.candidate(state.attempt.try_),
            runner: state.runner.name,
            jit_config_sealed: &state.runner.jit_config_sealed,
        };
        let request = launch_request(&self.config, &launch)?;
        let task_arn = self.launcher.run(&request).await?;
        tracing::info!(%task_arn, capacity_provider = %request.capacity, subnet = %request.subnet, "task started");
        Ok(LaunchedTask { task_arn })
    }
}
