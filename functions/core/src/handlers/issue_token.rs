//! IssueToken: starts an attempt, asks GitHub for a JIT runner config and seals it for the job —
//! unless the job was cancelled meanwhile, or GitHub already gave it to a runner (its
//! `in_progress`/`completed` delivery came first): then nothing is launched.

use super::state::{AttemptStart, IssuedRunner, StepInput};
use super::step::Step;
use super::{Effects, Lifecycle};
use crate::domain::config::Config;
use crate::domain::ids::RunnerName;
use crate::domain::job::JobRef;
use crate::domain::lifecycle::Happening;
use crate::domain::outcome::started_elsewhere;
use crate::error::StepError;
use crate::ports::{CredentialSealer, RunnerRegistry};
use async_trait::async_trait;
use std::sync::Arc;

/// Where a runner's credential comes from: GitHub registers the runner, KMS seals its config.
pub struct RunnerCredentials {
    pub registry: Arc<dyn RunnerRegistry>,
    pub sealer: Arc<dyn CredentialSealer>,
}

impl RunnerCredentials {
    /// Registers runner `name` for the job and seals its JIT config for the job's task. A runner
    /// whose config cannot be sealed is deleted at once: nothing downstream knows its id.
    pub async fn issue(
        &self,
        job: &JobRef,
        name: RunnerName,
        labels: &[String],
    ) -> Result<IssuedRunner, StepError> {
        let jit = self.registry.issue_jit_config(job, name, labels).await?;
        let sealed = match self.sealer.seal(name, &jit.encoded).await {
            Ok(sealed) => sealed,
            Err(error) => {
                if let Err(delete) = self.registry.delete_runner(job, jit.runner_id).await {
                    tracing::warn!(runner_id = jit.runner_id, error = %delete, "could not delete the unsealed runner");
                }
                return Err(error);
            }
        };
        tracing::info!(runner_name = %name, runner_id = jit.runner_id, "runner credential issued and sealed");
        Ok(IssuedRunner {
            name,
            id: jit.runner_id,
            jit_config_sealed: sealed.sealed,
            grant_id: sealed.grant_id,
        })
    }
}

pub struct IssueToken {
    pub config: Arc<Config>,
    pub lifecycle: Lifecycle,
    pub credentials: RunnerCredentials,
}

#[async_trait]
impl Step for IssueToken {
    const NAME: &'static str = "issue-token";
    type Input = StepInput<AttemptStart>;
    type Output = IssuedRunner;

    async fn run(&self, input: Self::Input) -> Result<IssuedRunner, StepError> {
        let AttemptStart { job, plan, attempt } = &input.state;
        let signals = self.lifecycle.job(job.job_id).await?.signals;
        // A job cancelled on GitHub before this attempt starts gets no runner at all.
        if signals.cancelled {
            return Err(StepError::JobCancelled(
                "cancelled on GitHub before a runner was launched".into(),
            ));
        }
        if let Some(why) = started_elsewhere(&signals) {
            return Err(StepError::JobStarted(why));
        }
        let candidate = plan.candidate(attempt.try_).to_string();
        let launch = Happening::Launch {
            attempt: attempt.number,
            candidate: candidate.clone(),
        };
        let effects = Effects {
            candidate: Some(candidate),
            ..Effects::default()
        };
        self.lifecycle
            .transition(job.job_id, launch, effects)
            .await?;
        let mut labels = job.labels.clone();
        labels.extend(self.config.runner.extra_labels.iter().cloned());
        let name = RunnerName::new(job.job_id, attempt.number);
        self.credentials.issue(job, name, &labels).await
    }
}
