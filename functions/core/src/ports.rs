//! What the handlers need from the outside world, as traits; `adapters` implements them against
//! AWS and GitHub, `fakes` in memory for the handler tests.

use crate::domain::deliveries::DeliveryAttempt;
use crate::domain::ids::{JobId, RunnerName, StartedBy};
use crate::domain::job::{JobRef, RerunKey};
use crate::domain::launch::LaunchRequest;
use crate::domain::listing::JobFilter;
use crate::domain::record::{Change, JobRecord, LifecycleEvent, Now};
use crate::domain::rescue::ExecutionStatus;
use crate::domain::waits::{CallbackOutput, JobOnGitHub, Signal, TaskToken, Wait};
use crate::error::StepError;
use async_trait::async_trait;

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

/// The time; a port so that deadlines and timestamps are testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the job since it was read.
    #[error("the job changed since it was read")]
    Conflict,
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("store throttled: {0}")]
    Throttled(String),
    /// No credentials to sign a request with: nothing was sent.
    #[error("no AWS credentials: {0}")]
    NoCredentials(String),
    /// Nothing answered at the store's endpoint (connection refused, name not resolved, timeout).
    #[error("store unreachable: {0}")]
    Unreachable(String),
    /// The table does not exist in this account and region.
    #[error("no such table: {0}")]
    NoTable(String),
    #[error("store failure: {0}")]
    Failure(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict => StepError::LifecycleConflict(error.to_string()),
            StoreError::NotFound(_) => StepError::LifecycleConflict(error.to_string()),
            StoreError::Throttled(m) => StepError::Throttled(m),
            StoreError::NoCredentials(_)
            | StoreError::Unreachable(_)
            | StoreError::NoTable(_)
            | StoreError::Failure(_) => StepError::Transient(error.to_string()),
        }
    }
}

/// The job records and their timelines. Records change only as `JobRecord::apply` says; a store
/// writes a new record and its event row together or not at all.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Writes a job just received with its first event; `false` when the job already exists.
    async fn create(&self, received: &Change) -> StoreResult<bool>;
    async fn get(&self, job_id: JobId) -> StoreResult<Option<JobRecord>>;
    /// Writes the change on the condition that the job is still as `from` was read (same
    /// version); `Conflict` otherwise.
    async fn commit(&self, from: &JobRecord, change: &Change) -> StoreResult<()>;
    /// Stores the task token an execution waits on and returns the job as it is now.
    async fn arm(&self, job_id: JobId, wait: &Wait) -> StoreResult<JobRecord>;
    /// Forgets a task token once its wait is over; a token already replaced is left alone.
    async fn disarm(&self, job_id: JobId, token: &TaskToken) -> StoreResult<()>;
    /// Records a signal and returns the job as it is now; `None` for a job we never saw. A stop
    /// of an older attempt than the one recorded is not recorded.
    async fn signal(&self, job_id: JobId, signal: &Signal) -> StoreResult<Option<JobRecord>>;
    async fn timeline(&self, job_id: JobId) -> StoreResult<Vec<LifecycleEvent>>;
    /// The jobs the filter selects, most recently received first, at most its limit (read from the
    /// index of jobs by the day they were received, one query per day of the window, never a
    /// scan).
    async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>>;
    /// Unfinished jobs whose deadline is before `now_epoch`, most overdue first, at most `limit`
    /// (read from the state/deadline index, never a scan).
    async fn overdue(&self, now_epoch: u64, limit: usize) -> StoreResult<Vec<JobRecord>>;
    /// Moves an unfinished job's deadline (the sweep checked it and found nothing to do); a job
    /// finished meanwhile is left alone.
    async fn postpone(&self, job_id: JobId, deadline: u64) -> StoreResult<()>;
    /// Remembers that tasuki re-ran this job of a workflow run after Spot interrupted it (kept
    /// for the table's retention); marking it again is a no-op.
    async fn mark_rerun(&self, key: &RerunKey) -> StoreResult<()>;
    async fn rerun_marked(&self, key: &RerunKey) -> StoreResult<bool>;
}

/// Step Functions, as the webhook and callbacks use it.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Starts the job's execution (named `JobRef::execution_name`) and returns its ARN; starting
    /// it again is a no-op that returns the same ARN.
    async fn start(&self, job: &JobRef) -> Result<String, StepError>;
    /// `false` when the wait was already over (a redelivered callback).
    async fn succeed(&self, token: &TaskToken, output: &CallbackOutput) -> Result<bool, StepError>;
    async fn fail(&self, token: &TaskToken, error: &StepError) -> Result<bool, StepError>;
    /// How the job's execution stands.
    async fn status(&self, job: &JobRef) -> Result<ExecutionStatus, StepError>;
}

#[async_trait]
pub trait TaskLauncher: Send + Sync {
    /// The task ARN, or a classified error (`CapacityUnavailable`, `QuotaExceeded`, `Throttled`,
    /// `LaunchConfigError`).
    async fn run(&self, request: &LaunchRequest) -> Result<String, StepError>;
    /// Stops a task; one already stopped is not an error.
    async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), StepError>;
    /// Runner tasks running now (`startedBy` `tasuki/<job>/<attempt>`), at most `limit`.
    async fn running(&self, limit: usize) -> Result<Vec<RunningTask>, StepError>;
    /// Why ECS stops or stopped a task (`<stopCode>: <stoppedReason>`), `None` while nothing
    /// stops it. ECS sets the stop code when it decides to stop a task (a Spot interruption's
    /// two-minute warning included), before the task's stop event.
    async fn stop_reason(&self, task_arn: &str) -> Result<Option<String>, StepError>;
}

/// A runner task ECS runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningTask {
    pub task_arn: String,
    pub started_by: StartedBy,
}

/// A registered runner, as GitHub lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerOnGitHub {
    pub id: u64,
    /// Running a job now.
    pub busy: bool,
}

/// A runner's single-use registration, from GitHub.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner_id: u64,
    pub encoded: Sensitive,
}

#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    /// The job as GitHub sees it now.
    async fn job(&self, job: &JobRef) -> Result<JobOnGitHub, StepError>;
    async fn issue_jit_config(
        &self,
        job: &JobRef,
        runner_name: RunnerName,
        labels: &[String],
    ) -> Result<JitConfig, StepError>;
    /// Removes a runner; one that is already gone is not an error.
    async fn delete_runner(&self, job: &JobRef, runner_id: u64) -> Result<(), StepError>;
    /// The runner of that name registered for the job's repository, if any.
    async fn runner(
        &self,
        job: &JobRef,
        name: RunnerName,
    ) -> Result<Option<RunnerOnGitHub>, StepError>;
    /// Whether the job's workflow run has completed: GitHub re-runs jobs of completed runs only.
    async fn run_completed(&self, job: &JobRef) -> Result<bool, StepError>;
    /// Asks GitHub to re-run the job (and the jobs that depend on it) in its run's next attempt.
    async fn rerun(&self, job: &JobRef) -> Result<(), StepError>;
}

/// The App's webhook delivery log (App JWT): how a `queued` delivery GitHub failed to make is found
/// and made again (`domain::deliveries`).
#[async_trait]
pub trait WebhookDeliveries: Send + Sync {
    /// Delivery attempts, newest first, back to `since_epoch` and at most `limit` of them.
    async fn recent(
        &self,
        since_epoch: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StepError>;
    /// The job a `workflow_job` delivery was about, from its request payload; `None` when the
    /// payload is not a job event with an installation.
    async fn job_of(&self, delivery_id: u64) -> Result<Option<JobRef>, StepError>;
    /// Asks GitHub to deliver it again (a new attempt, same `X-GitHub-Delivery`).
    async fn redeliver(&self, delivery_id: u64) -> Result<(), StepError>;
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
    /// Seals the JIT config of `runner` (named for its job and attempt) for that job's task.
    async fn seal(&self, runner: RunnerName, jit: &Sensitive) -> Result<SealedConfig, StepError>;
    /// Ends the job's grant; one already gone is not an error.
    async fn revoke(&self, grant_id: &str) -> Result<(), StepError>;
}
