//! Step errors: each carries a stable name the state machine's `Retry`/`Catch` match on.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "cause")]
pub enum StepError {
    /// The job cannot be served; its `refused` row is already written.
    #[error("job refused: {0}")]
    JobRefused(String),
    /// No capacity on this candidate: clean up and try the next.
    #[error("capacity unavailable: {0}")]
    CapacityUnavailable(String),
    /// An account quota (vCPUs, Fargate resource count) refused the launch: like capacity, try the
    /// next candidate; when none is left, wait and try another round.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// AWS or GitHub asked us to slow down: retry the same step.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The launch request itself is wrong (task definition, subnet, role): no candidate will do better.
    #[error("launch configuration error: {0}")]
    LaunchConfigError(String),
    /// GitHub refused or failed a runner operation.
    #[error("GitHub error: {0}")]
    GitHubError(String),
    /// The runner's task stopped (sent to a waiting execution by `ecs-events`).
    #[error("task stopped: {0}")]
    TaskStopped(String),
    /// The runner launched for this job took another job (sent by `webhook`): launch another.
    #[error("runner taken: {0}")]
    RunnerTaken(String),
    /// The job was cancelled on GitHub (sent to a waiting execution by `webhook`).
    #[error("job cancelled: {0}")]
    JobCancelled(String),
    /// A lifecycle write lost a race or was illegal; never applied silently.
    #[error("lifecycle conflict: {0}")]
    LifecycleConflict(String),
    /// A transient AWS failure that is worth retrying.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl StepError {
    /// Every error name a step can raise; the ASL test checks this against `Retry`/`Catch`.
    pub const NAMES: [&'static str; 11] = [
        "JobRefused",
        "CapacityUnavailable",
        "QuotaExceeded",
        "Throttled",
        "LaunchConfigError",
        "GitHubError",
        "TaskStopped",
        "RunnerTaken",
        "JobCancelled",
        "LifecycleConflict",
        "Transient",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            StepError::JobRefused(_) => "JobRefused",
            StepError::CapacityUnavailable(_) => "CapacityUnavailable",
            StepError::QuotaExceeded(_) => "QuotaExceeded",
            StepError::Throttled(_) => "Throttled",
            StepError::LaunchConfigError(_) => "LaunchConfigError",
            StepError::GitHubError(_) => "GitHubError",
            StepError::TaskStopped(_) => "TaskStopped",
            StepError::RunnerTaken(_) => "RunnerTaken",
            StepError::JobCancelled(_) => "JobCancelled",
            StepError::LifecycleConflict(_) => "LifecycleConflict",
            StepError::Transient(_) => "Transient",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            StepError::JobRefused(d)
            | StepError::CapacityUnavailable(d)
            | StepError::QuotaExceeded(d)
            | StepError::Throttled(d)
            | StepError::LaunchConfigError(d)
            | StepError::GitHubError(d)
            | StepError::TaskStopped(d)
            | StepError::RunnerTaken(d)
            | StepError::JobCancelled(d)
            | StepError::LifecycleConflict(d)
            | StepError::Transient(d) => d,
        }
    }
}

#[cfg(feature = "aws")]
impl From<StepError> for lambda_runtime::Diagnostic {
    fn from(error: StepError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.name().to_string(),
            error_message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_variant() -> Vec<StepError> {
        let d = || "d".to_string();
        vec![
            StepError::JobRefused(d()),
            StepError::CapacityUnavailable(d()),
            StepError::QuotaExceeded(d()),
            StepError::Throttled(d()),
            StepError::LaunchConfigError(d()),
            StepError::GitHubError(d()),
            StepError::TaskStopped(d()),
            StepError::RunnerTaken(d()),
            StepError::JobCancelled(d()),
            StepError::LifecycleConflict(d()),
            StepError::Transient(d()),
        ]
    }

    #[test]
    fn names_are_the_serde_tags_and_the_diagnostic_error_type() {
        let variants = every_variant();
        assert_eq!(variants.len(), StepError::NAMES.len());
        for (error, name) in variants.into_iter().zip(StepError::NAMES) {
            assert_eq!(error.name(), name);
            assert_eq!(serde_json::to_value(&error).unwrap()["error"], name);
            #[cfg(feature = "aws")]
            {
                let diagnostic: lambda_runtime::Diagnostic = error.into();
                assert_eq!(diagnostic.error_type, name);
            }
        }
    }
}
