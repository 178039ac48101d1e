//! What the handlers need from the outside world, as traits; adapters implement them.

use crate::domain::job::JobRef;
use crate::domain::lifecycle::{Happening, JobState, Position};
use crate::domain::waits::{Signal, Signals, Wait};
use crate::error::StepError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A credential that must never reach logs, state or task overrides in plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A job as stored: where it stands, what it is waiting for, and what it has been told.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: JobRef,
    pub position: Position,
    pub seq: u32,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub deadline: u64,
    pub execution_arn: Option<String>,
    pub task_arn: Option<String>,
    pub runner_name: Option<String>,
    pub runner_id: Option<u64>,
    pub conclusion: Option<String>,
    pub reason: Option<String>,
    pub wait: Option<Wait>,
    pub signals: Signals,
    pub last_happening: Option<Happening>,
}

/// One row of a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub seq: u32,
    pub at: String,
    pub event: String,
    pub state: JobState,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A transition to commit: the new position, its event row, and the job attributes it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub to: Position,
    pub happening: Happening,
    pub candidate: Option<String>,
    pub deadline: u64,
    pub task_arn: Option<String>,
    pub runner: Option<(String, u64)>,
    pub conclusion: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the job since it was read.
    #[error("the job changed since it was read")]
    Conflict,
    #[error("job {0} not found")]
    NotFound(u64),
    #[error("store throttled: {0}")]
    Throttled(String),
    #[error("store failure: {0}")]
    Failure(String),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => StepError::LifecycleConflict(error.to_string()),
            StoreError::NotFound(_) => StepError::LifecycleConflict(error.to_string()),
            StoreError::Throttled(m) => StepError::Throttled(m),
            StoreError::Failure(m) => StepError::Transient(m),
        }
    }
}

#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Writes the job as `received` with its first event; `false` when it already exists.
    async fn create(&self, job: &JobRef, execution_arn: &str) -> Result<bool, StoreError>;
    async fn get(&self, job_id: u64) -> Result<Option<JobRecord>, StoreError>;
    /// Writes the transition on the condition that the job is still as `from` was read.
    async fn commit(&self, from: &JobRecord, commit: &Commit) -> Result<(), StoreError>;
    /// Stores the task token an execution waits on and returns the job as it is now.
    async fn arm(&self, job_id: u64, wait: &Wait) -> Result<JobRecord, StoreError>;
    /// Forgets a task token once its wait is over.
    async fn disarm(&self, job_id: u64, token: &str) -> Result<(), StoreError>;
    /// Records a signal and returns the job as it is now; `None` for a job we never saw.
    async fn signal(&self, job_id: u64, signal: &Signal) -> Result<Option<JobRecord>, StoreError>;
    async fn timeline(&self, job_id: u64) -> Result<Vec<LifecycleEvent>, StoreError>;
    /// Most recent jobs first, at most `limit`.
    async fn list(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError>;
}

/// Step Functions, as the webhook and callbacks use it.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Starts the job's execution; starting it again with the same name and input is a no-op.
    async fn start(&self, name: &str, input: &str) -> Result<String, StepError>;
    /// `false` when the wait was already over (a redelivered callback).
    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<bool, StepError>;
    async fn fail(&self, token: &str, error: &StepError) -> Result<bool, StepError>;
}

/// An ECS RunTask, fully decided by the pure planner.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub cluster: String,
    pub task_definition: String,
    pub capacity_provider: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub cpu_units: u32,
    pub memory_mib: u32,
    pub container_name: String,
    pub environment: Vec<(String, String)>,
    pub started_by: String,
    pub tags: Vec<(String, String)>,
}

/// ECS's limit on RunTask `overrides`: "A total of 8192 characters are allowed for overrides. This
/// limit includes the JSON formatting characters of the override structure."
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html>)
pub const MAX_OVERRIDES_CHARS: usize = 8192;

impl LaunchRequest {
    /// The `overrides` structure as RunTask receives it (what the 8 192-character limit counts).
    pub fn overrides_json(&self) -> String {
        let environment: Vec<serde_json::Value> = self
            .environment
            .iter()
            .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
            .collect();
        serde_json::json!({
            "containerOverrides": [{"name": self.container_name, "environment": environment}],
            "cpu": self.cpu_units.to_string(),
            "memory": self.memory_mib.to_string(),
        })
        .to_string()
    }
}

#[async_trait]
pub trait TaskLauncher: Send + Sync {
    /// The task ARN, or a classified error (`CapacityUnavailable`, `Throttled`, `LaunchConfigError`).
    async fn run(&self, request: &LaunchRequest) -> Result<String, StepError>;
    async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), StepError>;
}

/// A runner's single-use registration, from GitHub.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner_id: u64,
    pub encoded: Sensitive,
}

#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    async fn issue_jit_config(
        &self,
        job: &JobRef,
        runner_name: &str,
        labels: &[String],
    ) -> Result<JitConfig, StepError>;
    /// Removes a runner; one that is already gone is not an error.
    async fn delete_runner(&self, job: &JobRef, runner_id: u64) -> Result<(), StepError>;
}

/// A JIT config sealed for one job ([`crate::runner_contract`]) and the KMS grant that lets the
/// runner task role open it, for that job only, until the grant is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedConfig {
    pub sealed: String,
    pub grant_id: String,
}

/// Seals a runner credential so only that job's task can read it.
#[async_trait]
pub trait CredentialSealer: Send + Sync {
    async fn seal(
        &self,
        job_id: u64,
        attempt: u32,
        plaintext: &Sensitive,
    ) -> Result<SealedConfig, StepError>;
    /// Ends the job's grant; one already gone is not an error.
    async fn revoke(&self, grant_id: &str) -> Result<(), StepError>;
}
