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
    /// GitHub gave the job to a runner before tasuki launched one (its `in_progress` or
    /// `completed` came first): nothing is launched.
    #[error("job already started: {0}")]
    JobStarted(String),
    /// A lifecycle write lost a race or was illegal; never applied silently.
    #[error("lifecycle conflict: {0}")]
    LifecycleConflict(String),
    /// A transient AWS failure that is worth retrying.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The step's input lacks what the state machine always provides: a contract bug between the
    /// ASL and the Lambda, which no retry can fix.
    #[error("malformed step input: {0}")]
    MalformedInput(String),
}

/// The stable name of each [`StepError`]: the Lambda's `errorType`, what the ASL matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorName {
    JobRefused,
    CapacityUnavailable,
    QuotaExceeded,
    Throttled,
    LaunchConfigError,
    GitHubError,
    TaskStopped,
    RunnerTaken,
    JobCancelled,
    JobStarted,
    LifecycleConflict,
    Transient,
    MalformedInput,
}

impl ErrorName {
    /// Every error name a step can raise; the ASL test checks this against `Retry`/`Catch`.
    pub const ALL: [ErrorName; 13] = [
        ErrorName::JobRefused,
        ErrorName::CapacityUnavailable,
        ErrorName::QuotaExceeded,
        ErrorName::Throttled,
        ErrorName::LaunchConfigError,
        ErrorName::GitHubError,
        ErrorName::TaskStopped,
        ErrorName::RunnerTaken,
        ErrorName::JobCancelled,
        ErrorName::JobStarted,
        ErrorName::LifecycleConflict,
        ErrorName::Transient,
        ErrorName::MalformedInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::JobRefused => "JobRefused",
            ErrorName::CapacityUnavailable => "CapacityUnavailable",
            ErrorName::QuotaExceeded => "QuotaExceeded",
            ErrorName::Throttled => "Throttled",
            ErrorName::LaunchConfigError => "LaunchConfigError",
            ErrorName::GitHubError => "GitHubError",
            ErrorName::TaskStopped => "TaskStopped",
            ErrorName::RunnerTaken => "RunnerTaken",
            ErrorName::JobCancelled => "JobCancelled",
            ErrorName::JobStarted => "JobStarted",
            ErrorName::LifecycleConflict => "LifecycleConflict",
            ErrorName::Transient => "Transient",
            ErrorName::MalformedInput => "MalformedInput",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

impl std::fmt::Display for ErrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The `Error` a `Catch` put in the execution state: one of ours, the state's own timeout, or
/// something else Step Functions or Lambda raised (`Lambda.Unknown`, `States.TaskFailed`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Caught {
    Step(ErrorName),
    Timeout,
    Other(String),
}

impl Caught {
    pub const TIMEOUT: &'static str = "States.Timeout";

    pub fn as_str(&self) -> &str {
        match self {
            Caught::Step(name) => name.as_str(),
            Caught::Timeout => Self::TIMEOUT,
            Caught::Other(name) => name,
        }
    }
}

impl From<String> for Caught {
    fn from(name: String) -> Self {
        match ErrorName::parse(&name) {
            Some(step) => Caught::Step(step),
            None if name == Self::TIMEOUT => Caught::Timeout,
            None => Caught::Other(name),
        }
    }
}

impl From<Caught> for String {
    fn from(caught: Caught) -> String {
        caught.as_str().to_string()
    }
}

impl StepError {
    pub fn name(&self) -> ErrorName {
        match self {
            StepError::JobRefused(_) => ErrorName::JobRefused,
            StepError::CapacityUnavailable(_) => ErrorName::CapacityUnavailable,
            StepError::QuotaExceeded(_) => ErrorName::QuotaExceeded,
            StepError::Throttled(_) => ErrorName::Throttled,
            StepError::LaunchConfigError(_) => ErrorName::LaunchConfigError,
            StepError::GitHubError(_) => ErrorName::GitHubError,
            StepError::TaskStopped(_) => ErrorName::TaskStopped,
            StepError::RunnerTaken(_) => ErrorName::RunnerTaken,
            StepError::JobCancelled(_) => ErrorName::JobCancelled,
            StepError::JobStarted(_) => ErrorName::JobStarted,
            StepError::LifecycleConflict(_) => ErrorName::LifecycleConflict,
            StepError::Transient(_) => ErrorName::Transient,
            StepError::MalformedInput(_) => ErrorName::MalformedInput,
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
            | StepError::JobStarted(d)
            | StepError::LifecycleConflict(d)
            | StepError::Transient(d)
            | StepError::MalformedInput(d) => d,
        }
    }
}

#[cfg(feature = "aws")]
impl From<StepError> for lambda_runtime::Diagnostic {
    fn from(error: StepError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.name().as_str().to_string(),
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
            StepError::JobStarted(d()),
            StepError::LifecycleConflict(d()),
            StepError::Transient(d()),
            StepError::MalformedInput(d()),
        ]
    }

    #[test]
    fn names_are_the_serde_tags_and_the_diagnostic_error_type() {
        let variants = every_variant();
        assert_eq!(variants.len(), ErrorName::ALL.len());
        for (error, name) in variants.into_iter().zip(ErrorName::ALL) {
            assert_eq!(error.name(), name);
            assert_eq!(ErrorName::parse(name.as_str()), Some(name));
            assert_eq!(
                serde_json::to_value(&error).unwrap()["error"],
                name.as_str()
            );
            #[cfg(feature = "aws")]
            {
                let diagnostic: lambda_runtime::Diagnostic = error.into();
                assert_eq!(diagnostic.error_type, name.as_str());
            }
        }
    }

    #[test]
    fn caught_errors_are_ours_the_states_timeout_or_named_as_caught() {
        let caught: Vec<Caught> =
            serde_json::from_str(r#"["TaskStopped", "States.Timeout", "Lambda.Unknown"]"#).unwrap();
        assert_eq!(
            caught,
            [
                Caught::Step(ErrorName::TaskStopped),
                Caught::Timeout,
                Caught::Other("Lambda.Unknown".into())
            ]
        );
        assert_eq!(serde_json::to_value(&caught[1]).unwrap(), "States.Timeout");
    }
}
