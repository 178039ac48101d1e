//! One shape for every state machine step: parse the payload into the step's typed input (a bad
//! one is `MalformedInput`), run it in a span that carries the job id and attempt, and log how
//! it failed. The Lambda binaries only hand their events to [`invoke`].

use super::state::Traced;
use crate::error::StepError;
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

#[async_trait]
pub trait Step: Send + Sync {
    /// The step's name in logs (the Lambda's, in kebab case).
    const NAME: &'static str;
    type Input: DeserializeOwned + Traced + Send;
    type Output: Serialize;

    async fn run(&self, input: Self::Input) -> Result<Self::Output, StepError>;
}

/// Parses `payload` as the step's input and runs the step.
pub async fn invoke<S: Step>(step: &S, payload: serde_json::Value) -> Result<S::Output, StepError> {
    let input: S::Input = serde_path_to_error::deserialize(payload).map_err(|e| {
        let error = StepError::MalformedInput(format!("{} input: {e}", S::NAME));
        tracing::error!(step = S::NAME, %error, "the state machine sent what this step cannot read");
        error
    })?;
    let job = input.job();
    let span = tracing::info_span!(
        "step",
        step = S::NAME,
        job_id = job.job_id.get(),
        run_attempt = job.run_attempt,
        execution = %job.execution_name(),
        attempt = input.attempt().map_or(0, |a| a.get()),
        candidate = input.candidate().unwrap_or_default(),
    );
    async move {
        let result = step.run(input).await;
        if let Err(error) = &result {
            tracing::warn!(error = %error.name(), detail = error.detail(), "step failed");
        }
        result
    }
    .instrument(span)
    .await
}
