//! In-memory implementations of the ports, for handler tests that run in milliseconds.
//!
//! Each keeps the contract its trait documents (the store's conditional commit, the redelivered
//! callback that answers `false`, the runner that is already gone) and records what it was asked,
//! so a test can assert on what a handler did — and script failures to drive every error path.

use crate::domain::deliveries::DeliveryAttempt;
use crate::domain::ids::{JobId, RunnerName};
use crate::domain::job::{JobRef, RerunKey};
use crate::domain::launch::LaunchRequest;
use crate::domain::listing::JobFilter;
use crate::domain::record::{Change, JobRecord, LifecycleEvent, Now};
use crate::domain::rescue::ExecutionStatus;
use crate::domain::waits::{CallbackOutput, JobOnGitHub, Signal, TaskToken, Wait};
use crate::error::StepError;
use crate::ports::{
    Clock, CredentialSealer, Executions, JitConfig, LifecycleStore, RunnerOnGitHub, RunnerRegistry,
    RunningTask, SealedConfig, Sensitive, StoreError, StoreResult, TaskLauncher, WebhookDeliveries,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    pub fn at(epoch_seconds: u64) -> Self {
        Self(AtomicU64::new(epoch_seconds))
    }

    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Now {
        let epoch_seconds = self.0.load(Ordering::SeqCst);
        Now {
            epoch_seconds,
            rfc3339: rfc3339(epoch_seconds),
        }
    }
}

/// UTC, to the second (days-from-civil inverted, as in Howard Hinnant's `civil_from_days`).
fn rfc3339(epoch_seconds: u64) -> String {
    let (days, secs) = (epoch_seconds / 86_400, epoch_seconds % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

type Interference = Box<dyn FnOnce(&mut JobRecord) + Send>;

/// The lifecycle store in memory: versioned records, conditional commits, event rows.
#[derive(Default)]
pub struct MemoryStore {
    jobs: Mutex<BTreeMap<JobId, (JobRecord, Vec<LifecycleEvent>)>>,
    /// Another writer's change, applied just before the next commit's condition is checked.
    interference: Mutex<VecDeque<Interference>>,
    reruns: Mutex<BTreeSet<String>>,
}

impl MemoryStore {
    /// Makes the next commit lose a race: `change` lands first and bumps the version.
    pub fn race_next_commit(&self, change: impl FnOnce(&mut JobRecord) + Send + 'static) {
        lock(&self.interference).push_back(Box::new(change));
    }

    pub fn record(&self, job_id: JobId) -> Option<JobRecord> {
        lock(&self.jobs).get(&job_id).map(|(r, _)| r.clone())
    }

    pub fn events(&self, job_id: JobId) -> Vec<LifecycleEvent> {
        lock(&self.jobs)
            .get(&job_id)
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    }
}

#[async_trait]
impl LifecycleStore for MemoryStore {
    async fn create(&self, received: &Change) -> StoreResult<bool> {
        let Change { record, event } = received;
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&record.job.job_id) {
            return Ok(false);
        }
        jobs.insert(record.job.job_id, (record.clone(), vec![event.clone()]));
        Ok(true)
    }

    async fn get(&self, job_id: JobId) -> StoreResult<Option<JobRecord>> {
        Ok(self.record(job_id))
    }

    async fn commit(&self, from: &JobRecord, change: &Change) -> StoreResult<()> {
        let Change { record: to, event } = change;
        let interference = lock(&self.interference).pop_front();
        let mut jobs = lock(&self.jobs);
        let (current, events) = jobs
            .get_mut(&from.job.job_id)
            .ok_or(StoreError::NotFound(from.job.job_id))?;
        if let Some(change) = interference {
            change(current);
            current.version += 1;
        }
        if current.version != from.version || events.iter().any(|e| e.seq == event.seq) {
            return Err(StoreError::Conflict);
        }
        *current = to.clone();
        events.push(event.clone());
        Ok(())
    }

    async fn arm(&self, job_id: JobId, wait: &Wait) -> StoreResult<JobRecord> {
        let mut jobs = lock(&self.jobs);
        let (record, _) = jobs.get_mut(&job_id).ok_or(StoreError::NotFound(job_id))?;
        record.wait = Some(wait.clone());
        record.version += 1;
        Ok(record.clone())
    }

    async fn disarm(&self, job_id: JobId, token: &TaskToken) -> StoreResult<()> {
        let mut jobs = lock(&self.jobs);
        if let Some((record, _)) = jobs.get_mut(&job_id) {
            if record.wait.as_ref().is_some_and(|w| &w.token == token) {
                record.wait = None;
                record.version += 1;
            }
        }
        Ok(())
    }

    async fn signal(&self, job_id: JobId, signal: &Signal) -> StoreResult<Option<JobRecord>> {
        let mut jobs = lock(&self.jobs);
        let Some((record, _)) = jobs.get_mut(&job_id) else {
            return Ok(None);
        };
        let signals = &mut record.signals;
        match signal {
            Signal::Registered(registered) => signals.registered = Some(registered.clone()),
            Signal::Completed(completion) => signals.conclusion = Some(completion.conclusion),
            Signal::Cancelled => signals.cancelled = true,
            Signal::RunnerTaken(taken) => signals.taken = Some(taken.clone()),
            Signal::Stopped(stopped) => {
                // A late event about an older attempt must not hide a newer attempt's stop.
                if signals
                    .stopped
                    .as_ref()
                    .is_some_and(|s| s.attempt > stopped.attempt)
                {
                    return Ok(Some(record.clone()));
                }
                signals.stopped = Some(stopped.clone());
            }
        }
        record.version += 1;
        Ok(Some(record.clone()))
    }

    async fn timeline(&self, job_id: JobId) -> StoreResult<Vec<LifecycleEvent>> {
        Ok(self.events(job_id))
    }

    async fn overdue(&self, now_epoch: u64, limit: usize) -> StoreResult<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = lock(&self.jobs)
            .values()
            .map(|(r, _)| r.clone())
            .filter(|r| !r.position.state.is_terminal() && r.deadline < now_epoch)
            .collect();
        jobs.sort_by_key(|r| r.deadline);
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn postpone(&self, job_id: JobId, deadline: u64) -> StoreResult<()> {
        if let Some((record, _)) = lock(&self.jobs).get_mut(&job_id) {
            if !record.position.state.is_terminal() {
                record.deadline = deadline;
            }
        }
        Ok(())
    }

    async fn mark_rerun(&self, key: &RerunKey) -> StoreResult<()> {
        lock(&self.reruns).insert(key.as_str().to_string());
        Ok(())
    }

    async fn rerun_marked(&self, key: &RerunKey) -> StoreResult<bool> {
        Ok(lock(&self.reruns).contains(key.as_str()))
    }

    async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let mut jobs: Vec<JobRecord> = lock(&self.jobs)
            .values()
            .map(|(r, _)| r.clone())
            .filter(|r| filter.matches(r))
            .collect();
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        jobs.truncate(filter.limit.get());
        Ok(jobs)
    }
}

/// Step Functions: records starts and callbacks; a token answered once is closed.
#[derive(Default)]
pub struct RecordingExecutions {
    pub started: Mutex<Vec<JobRef>>,
    pub succeeded: Mutex<Vec<(TaskToken, CallbackOutput)>>,
    pub failed: Mutex<Vec<(TaskToken, StepError)>>,
    closed: Mutex<BTreeSet<String>>,
    /// Errors the next calls return, in order.
    pub errors: Mutex<VecDeque<StepError>>,
    /// Executions (by name) that ended; any other is running.
    pub ended: Mutex<BTreeMap<String, ExecutionStatus>>,
}

impl RecordingExecutions {
    fn close(&self, token: &TaskToken) -> Result<bool, StepError> {
        if let Some(error) = lock(&self.errors).pop_front() {
            return Err(error);
        }
        Ok(lock(&self.closed).insert(token.as_str().to_string()))
    }
}

#[async_trait]
impl Executions for RecordingExecutions {
    async fn start(&self, job: &JobRef) -> Result<String, StepError> {
        if let Some(error) = lock(&self.errors).pop_front() {
            return Err(error);
        }
        let mut started = lock(&self.started);
        if !started
            .iter()
            .any(|j| j.execution_name() == job.execution_name())
        {
            started.push(job.clone());
        }
        Ok(job.execution_arn("arn:aws:states:us-east-1:123456789012:stateMachine:tasuki"))
    }

    async fn status(&self, job: &JobRef) -> Result<ExecutionStatus, StepError> {
        Ok(lock(&self.ended)
            .get(&job.execution_name())
            .copied()
            .unwrap_or(ExecutionStatus::Running))
    }

    async fn succeed(&self, token: &TaskToken, output: &CallbackOutput) -> Result<bool, StepError> {
        let open = self.close(token)?;
        if open {
            lock(&self.succeeded).push((token.clone(), output.clone()));
        }
        Ok(open)
    }

    async fn fail(&self, token: &TaskToken, error: &StepError) -> Result<bool, StepError> {
        let open = self.close(token)?;
        if open {
            lock(&self.failed).push((token.clone(), error.clone()));
        }
        Ok(open)
    }
}

/// ECS: answers RunTask from a script (a task ARN by default) and records stops.
#[derive(Default)]
pub struct FakeLauncher {
    pub runs: Mutex<Vec<LaunchRequest>>,
    pub stops: Mutex<Vec<(String, String)>>,
    /// What the next RunTask calls answer, in order; then a new task each time.
    pub script: Mutex<VecDeque<Result<String, StepError>>>,
    /// Tasks ECS lists as running (until stopped).
    pub running: Mutex<Vec<RunningTask>>,
    /// Why ECS stops a task, by task ARN.
    pub stop_reasons: Mutex<BTreeMap<String, String>>,
}

#[async_trait]
impl TaskLauncher for FakeLauncher {
    async fn run(&self, request: &LaunchRequest) -> Result<String, StepError> {
        let mut runs = lock(&self.runs);
        runs.push(request.clone());
        lock(&self.script).pop_front().unwrap_or_else(|| {
            Ok(format!(
                "arn:aws:ecs:us-east-1:123456789012:task/tasuki/{}",
                runs.len()
            ))
        })
    }

    async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), StepError> {
        lock(&self.stops).push((task_arn.to_string(), reason.to_string()));
        Ok(())
    }

    async fn stop_reason(&self, task_arn: &str) -> Result<Option<String>, StepError> {
        Ok(lock(&self.stop_reasons).get(task_arn).cloned())
    }

    async fn running(&self, limit: usize) -> Result<Vec<RunningTask>, StepError> {
        let stopped: BTreeSet<String> = lock(&self.stops).iter().map(|(t, _)| t.clone()).collect();
        Ok(lock(&self.running)
            .iter()
            .filter(|t| !stopped.contains(&t.task_arn))
            .take(limit)
            .cloned()
            .collect())
    }
}

/// GitHub's runner registry: JIT configs with ids counting from 100; deletions recorded; jobs
/// not started unless a test says otherwise.
#[derive(Default)]
pub struct FakeRegistry {
    pub jobs: Mutex<BTreeMap<JobId, JobOnGitHub>>,
    pub issued: Mutex<Vec<(RunnerName, Vec<String>)>>,
    pub deleted: Mutex<Vec<u64>>,
    /// An error the next `issue_jit_config` returns.
    pub refuse_next: Mutex<Option<StepError>>,
    /// Runners GitHub lists, by name.
    pub runners: Mutex<BTreeMap<String, RunnerOnGitHub>>,
    /// Workflow runs that completed.
    pub completed_runs: Mutex<BTreeSet<u64>>,
    /// Jobs GitHub was asked to re-run.
    pub rerun: Mutex<Vec<JobId>>,
}

#[async_trait]
impl RunnerRegistry for FakeRegistry {
    async fn job(&self, job: &JobRef) -> Result<JobOnGitHub, StepError> {
        Ok(lock(&self.jobs)
            .get(&job.job_id)
            .cloned()
            .unwrap_or(JobOnGitHub::NotStarted))
    }

    async fn issue_jit_config(
        &self,
        _job: &JobRef,
        runner_name: RunnerName,
        labels: &[String],
    ) -> Result<JitConfig, StepError> {
        if let Some(error) = lock(&self.refuse_next).take() {
            return Err(error);
        }
        let mut issued = lock(&self.issued);
        issued.push((runner_name, labels.to_vec()));
        Ok(JitConfig {
            runner_id: 99 + issued.len() as u64,
            encoded: Sensitive::new(format!("PLAINTEXT-JIT-{runner_name}")),
        })
    }

    async fn delete_runner(&self, _job: &JobRef, runner_id: u64) -> Result<(), StepError> {
        lock(&self.deleted).push(runner_id);
        Ok(())
    }

    async fn runner(
        &self,
        _job: &JobRef,
        name: RunnerName,
    ) -> Result<Option<RunnerOnGitHub>, StepError> {
        Ok(lock(&self.runners).get(&name.to_string()).copied())
    }

    async fn run_completed(&self, job: &JobRef) -> Result<bool, StepError> {
        Ok(lock(&self.completed_runs).contains(&job.run_id))
    }

    async fn rerun(&self, job: &JobRef) -> Result<(), StepError> {
        if !lock(&self.completed_runs).contains(&job.run_id) {
            // GitHub's answer for a run still in progress.
            return Err(StepError::GitHubError(
                "rerun: HTTP 403: This workflow run is not completed".into(),
            ));
        }
        lock(&self.rerun).push(job.job_id);
        Ok(())
    }
}

/// The App's delivery log: attempts as a test sets them, newest first; redeliveries recorded.
#[derive(Default)]
pub struct FakeDeliveries {
    pub attempts: Mutex<Vec<DeliveryAttempt>>,
    /// The job each delivery was about.
    pub jobs: Mutex<BTreeMap<u64, JobRef>>,
    pub redelivered: Mutex<Vec<u64>>,
    /// An error the next `recent` returns.
    pub fail_next: Mutex<Option<StepError>>,
}

#[async_trait]
impl WebhookDeliveries for FakeDeliveries {
    async fn recent(
        &self,
        since_epoch: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StepError> {
        if let Some(error) = lock(&self.fail_next).take() {
            return Err(error);
        }
        let mut attempts = lock(&self.attempts).clone();
        attempts.retain(|a| a.delivered_at_epoch >= since_epoch);
        attempts.sort_by_key(|a| std::cmp::Reverse((a.delivered_at_epoch, a.id)));
        attempts.truncate(limit);
        Ok(attempts)
    }

    async fn job_of(&self, delivery_id: u64) -> Result<Option<JobRef>, StepError> {
        Ok(lock(&self.jobs).get(&delivery_id).cloned())
    }

    async fn redeliver(&self, delivery_id: u64) -> Result<(), StepError> {
        lock(&self.redelivered).push(delivery_id);
        Ok(())
    }
}

/// KMS: seals to a marker that never contains the plaintext; grants and revocations recorded.
#[derive(Default)]
pub struct FakeSealer {
    pub revoked: Mutex<Vec<String>>,
    /// An error the next `seal` returns.
    pub fail_next: Mutex<Option<StepError>>,
}

#[async_trait]
impl CredentialSealer for FakeSealer {
    async fn seal(&self, runner: RunnerName, jit: &Sensitive) -> Result<SealedConfig, StepError> {
        if let Some(error) = lock(&self.fail_next).take() {
            return Err(error);
        }
        Ok(SealedConfig {
            sealed: format!("TSK1-sealed-{}-chars", jit.expose().len()),
            grant_id: format!("grant-{}-{}", runner.job, runner.attempt),
        })
    }

    async fn revoke(&self, grant_id: &str) -> Result<(), StepError> {
        lock(&self.revoked).push(grant_id.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_clock_reads_as_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_392_000), "2026-11-23T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }
}
