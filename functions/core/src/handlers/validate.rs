//! Validate: the repository allowlist and visibility; a refusal is recorded with its reason.

use super::state::{Limits, NewJob, StepInput};
use super::step::Step;
use super::Lifecycle;
use crate::domain::access::refusal_for_repository;
use crate::domain::config::Config;
use crate::error::StepError;
use async_trait::async_trait;
use std::sync::Arc;

pub struct Validate {
    pub config: Arc<Config>,
    pub lifecycle: Lifecycle,
}

#[async_trait]
impl Step for Validate {
    const NAME: &'static str = "validate";
    type Input = StepInput<NewJob>;
    type Output = Limits;

    async fn run(&self, input: Self::Input) -> Result<Limits, StepError> {
        let job = &input.state.job;
        if let Some(reason) = refusal_for_repository(&self.config, job) {
            return Err(self.lifecycle.refuse(job.job_id, reason).await);
        }
        Ok(self.config.timeouts.into())
    }
}
