//! The state machine's Task steps. Each takes the execution state (`{"state": $}`) and returns
//! a small typed result that the ASL places with `ResultPath`.

use super::{deliver, existing_job, transition, Effects};
use crate::domain::config::Config;
use crate::domain::job::{runner_name, started_by, JobRef};
use crate::domain::labels::{self, LabelVerdict};
use crate::domain::lifecycle::{Happening, JobState};
use crate::domain::plan::{self, Candidate};
use crate::domain::rounds::{self, Failure, NextAttempt};
use crate::domain::tags::TagValue;
use crate::domain::waits::{Wait, WaitPhase};
use crate::error::StepError;
use crate::ports::{
    CredentialSealer, Executions, LaunchRequest, LifecycleStore, RunnerRegistry, TaskLauncher,
    MAX_OVERRIDES_CHARS,
};
use crate::runner_contract::env;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::Instrument;

/// The execution's state document, as the ASL builds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionState {
    pub job: JobRef,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub plan: Option<LaunchPlan>,
    #[serde(default)]
    pub attempt: Option<AttemptNumber>,
    #[serde(default)]
    pub runner: Option<IssuedRunner>,
    #[serde(default)]
    pub task: Option<LaunchedTask>,
    #[serde(default)]
    pub registration: Option<Registration>,
    #[serde(default)]
    pub completion: Option<Completion>,
    #[serde(default)]
    pub error: Option<CaughtError>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub registration_seconds: u32,
    pub job_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchPlan {
    pub candidates: Vec<Candidate>,
    pub count: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AttemptNumber {
    pub number: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedRunner {
    pub name: String,
    pub id: u64,
    /// The JIT config sealed for this job (`runner_contract`); only the job's task can open it.
    pub jit_config_sealed: String,
    /// The KMS grant that lets the runner task role open it; revoked when the attempt ends.
    pub grant_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchedTask {
    pub task_arn: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub runner_name: String,
    pub runner_id: u64,
    pub job_id: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Completion {
    pub conclusion: String,
}

/// What a `Catch` put at `$.error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: Option<String>,
}

impl CaughtError {
    /// The message inside a Lambda error's cause (`{"errorMessage": ...}`), or the cause as is.
    pub fn message(&self) -> Option<String> {
        let cause = self.cause.as_deref().filter(|c| !c.is_empty())?;
        Some(
            serde_json::from_str::<serde_json::Value>(cause)
                .ok()
                .and_then(|v| v["errorMessage"].as_str().map(str::to_string))
                .unwrap_or_else(|| cause.to_string()),
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StepInput {
    pub state: ExecutionState,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WaitInput {
    pub state: ExecutionState,
    pub token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    Failed,
    Exhausted,
    Cancelled,
    TimedOut,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FinalizeInput {
    pub state: ExecutionState,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finalized {
    pub state: JobState,
    pub reason: Option<String>,
}

impl ExecutionState {
    fn attempt(&self) -> Result<u32, StepError> {
        self.attempt
            .map(|a| a.number)
            .ok_or_else(|| StepError::LifecycleConflict("state has no attempt".into()))
    }

    fn candidate(&self) -> Result<&Candidate, StepError> {
        let attempt = self.attempt()?;
        self.plan
            .as_ref()
            .and_then(|p| {
                p.candidates
                    .get(rounds::candidate_index(attempt, p.candidates.len() as u32))
            })
            .ok_or_else(|| StepError::LifecycleConflict(format!("no candidate {attempt}")))
    }

    fn span(&self, step: &'static str) -> tracing::Span {
        tracing::info_span!(
            "step",
            step,
            job_id = self.job.job_id,
            attempt = self.attempt.map(|a| a.number).unwrap_or(0)
        )
    }
}

/// Validate: repository allowlist and visibility.
pub struct Validate {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
}

impl Validate {
    pub async fn handle(&self, input: StepInput) -> Result<Limits, StepError> {
        let state = input.state;
        let span = state.span("validate");
        async {
            if let Some(reason) = refusal_for_repository(&self.config, &state.job) {
                return Err(refuse(&*self.store, &self.config, state.job.job_id, reason).await);
            }
            let t = self.config.timeouts;
            Ok(Limits {
                registration_seconds: t.registration_seconds,
                job_seconds: t.job_seconds,
            })
        }
        .instrument(span)
        .await
    }
}

/// Why a job's repository is not served, if it is not.
pub fn refusal_for_repository(config: &Config, job: &JobRef) -> Option<String> {
    if !config.serves_repository(&job.repository) {
        return Some(format!(
            "repository {} is not in the access allowlist",
            job.repository
        ));
    }
    if !job.private && !config.access.allow_public_repositories {
        return Some(format!(
            "repository {} is public: anyone could run code on its runners (set access.allow_public_repositories to serve it)",
            job.repository
        ));
    }
    None
}

async fn refuse(
    store: &dyn LifecycleStore,
    config: &Config,
    job_id: u64,
    reason: String,
) -> StepError {
    tracing::warn!(job_id, %reason, "refused");
    let happening = Happening::Refuse {
        reason: reason.clone(),
    };
    match transition(store, config, job_id, happening, Effects::default()).await {
        Ok(_) => StepError::JobRefused(reason),
        Err(e) => e,
    }
}

/// ResolveLabels: labels → runner spec → ordered launch candidates.
pub struct ResolveLabels {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
}

impl ResolveLabels {
    pub async fn handle(&self, input: StepInput) -> Result<LaunchPlan, StepError> {
        let state = input.state;
        let span = state.span("resolve-labels");
        async {
            let job_id = state.job.job_id;
            let planned = match labels::resolve(&state.job.labels, &self.config) {
                LabelVerdict::Accepted(spec) => {
                    plan::plan(&spec, &self.config).map_err(|r| r.to_string())
                }
                LabelVerdict::Refused(refusal) => Err(refusal.to_string()),
                LabelVerdict::NotOurs => Err("no `tasuki` label".to_string()),
            };
            let candidates = match planned {
                Ok(candidates) => candidates,
                Err(reason) => return Err(refuse(&*self.store, &self.config, job_id, reason).await),
            };
            let count = candidates.len() as u32;
            transition(
                &*self.store,
                &self.config,
                job_id,
                Happening::Plan { candidates: count },
                Effects::default(),
            )
            .await?;
            Ok(LaunchPlan { candidates, count })
        }
        .instrument(span)
        .await
    }
}

/// IssueToken: starts an attempt, asks GitHub for a JIT runner config and seals it with KMS.
pub struct IssueToken {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub sealer: Arc<dyn CredentialSealer>,
}

impl IssueToken {
    pub async fn handle(&self, input: StepInput) -> Result<IssuedRunner, StepError> {
        let state = input.state;
        let span = state.span("issue-token");
        async {
            let job = &state.job;
            let attempt = state.attempt()?;
            let candidate = state.candidate()?;
            transition(
                &*self.store,
                &self.config,
                job.job_id,
                Happening::Launch {
                    attempt,
                    candidate: candidate.to_string(),
                },
                Effects {
                    candidate: Some(candidate.to_string()),
                    ..Effects::default()
                },
            )
            .await?;
            let name = runner_name(job.job_id, attempt);
            let mut runner_labels = job.labels.clone();
            runner_labels.extend(self.config.runner.extra_labels.iter().cloned());
            let jit = self
                .registry
                .issue_jit_config(job, &name, &runner_labels)
                .await?;
            let sealed = match self.sealer.seal(job.job_id, attempt, &jit.encoded).await {
                Ok(sealed) => sealed,
                Err(error) => {
                    // The runner exists on GitHub but no task will ever use it: remove it now, as
                    // nothing downstream knows its id.
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
        .instrument(span)
        .await
    }
}

/// RunTask: one ECS task on the attempt's candidate.
pub struct RunTask {
    pub config: Arc<Config>,
    pub launcher: Arc<dyn TaskLauncher>,
}

impl RunTask {
    pub async fn handle(&self, input: StepInput) -> Result<LaunchedTask, StepError> {
        let state = input.state;
        let span = state.span("run-task");
        async {
            let request = launch_request(&self.config, &state)?;
            let task_arn = self.launcher.run(&request).await?;
            tracing::info!(%task_arn, capacity_provider = %request.capacity_provider, subnet = %request.subnet, "task started");
            Ok(LaunchedTask { task_arn })
        }
        .instrument(span)
        .await
    }
}

/// The RunTask request for the state's current attempt; the credential goes only as ciphertext.
pub fn launch_request(config: &Config, state: &ExecutionState) -> Result<LaunchRequest, StepError> {
    let job = &state.job;
    let attempt = state.attempt()?;
    let candidate = state.candidate()?;
    let runner = state
        .runner
        .as_ref()
        .ok_or_else(|| StepError::LifecycleConflict("no runner issued".into()))?;
    let job_id = job.job_id.to_string();
    let tag = |value: &str| TagValue::sanitized(value).as_str().to_string();
    let request = LaunchRequest {
        cluster: config.ecs.cluster.clone(),
        task_definition: candidate.task_definition.clone(),
        capacity_provider: candidate.capacity_provider.clone(),
        subnet: candidate.subnet.clone(),
        security_groups: candidate.security_groups.clone(),
        cpu_units: candidate.size.cpu_units(),
        memory_mib: candidate.size.memory_mib(),
        container_name: config.ecs.container_name.clone(),
        environment: vec![
            (env::JOB_ID.into(), job_id.clone()),
            (env::ATTEMPT.into(), attempt.to_string()),
            (env::RUNNER_NAME.into(), runner.name.clone()),
            (
                env::JIT_CONFIG_SEALED.into(),
                runner.jit_config_sealed.clone(),
            ),
            (env::KMS_KEY_ID.into(), config.runner.kms_key_id.clone()),
        ],
        started_by: started_by(job.job_id, attempt),
        // Free text (repository and workflow names) sanitized for ECS; the raw names stay in the table.
        tags: vec![
            ("tasuki:job-id".into(), job_id),
            ("tasuki:repository".into(), tag(&job.repository)),
            ("tasuki:workflow".into(), tag(&job.workflow)),
            ("tasuki:size".into(), candidate.size.to_string()),
            ("tasuki:attempt".into(), attempt.to_string()),
        ],
    };
    let size = request.overrides_json().chars().count();
    if size > MAX_OVERRIDES_CHARS {
        return Err(StepError::LaunchConfigError(format!(
            "the RunTask overrides would be {size} characters; ECS takes at most {MAX_OVERRIDES_CHARS}"
        )));
    }
    Ok(request)
}

/// Stores the task token, then answers it at once if a signal already came in.
async fn arm(
    store: &dyn LifecycleStore,
    executions: &dyn Executions,
    job_id: u64,
    wait: &Wait,
) -> Result<(), StepError> {
    let record = store.arm(job_id, wait).await?;
    deliver(executions, &record).await?;
    Ok(())
}

/// WaitForRegistration (`.waitForTaskToken`): arms the registration wait.
pub struct WaitForRegistration {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
    pub executions: Arc<dyn Executions>,
}

impl WaitForRegistration {
    pub async fn handle(&self, input: WaitInput) -> Result<(), StepError> {
        let state = input.state;
        let span = state.span("wait-for-registration");
        async {
            let job_id = state.job.job_id;
            let attempt = state.attempt()?;
            let task_arn = state
                .task
                .as_ref()
                .map(|t| t.task_arn.clone())
                .ok_or_else(|| StepError::LifecycleConflict("no task launched".into()))?;
            let runner = state.runner.as_ref().map(|r| (r.name.clone(), r.id));
            transition(
                &*self.store,
                &self.config,
                job_id,
                Happening::AwaitRegistration {
                    attempt,
                    task_arn: task_arn.clone(),
                },
                Effects {
                    task_arn: Some(task_arn),
                    runner,
                    ..Effects::default()
                },
            )
            .await?;
            let wait = Wait {
                token: input.token,
                phase: WaitPhase::Registration,
                attempt,
            };
            arm(&*self.store, &*self.executions, job_id, &wait).await
        }
        .instrument(span)
        .await
    }
}

/// Confirm (`.waitForTaskToken`): the runner registered; record it running and arm the completion wait.
pub struct Confirm {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
    pub executions: Arc<dyn Executions>,
}

impl Confirm {
    pub async fn handle(&self, input: WaitInput) -> Result<(), StepError> {
        let state = input.state;
        let span = state.span("confirm");
        async {
            let job_id = state.job.job_id;
            let attempt = state.attempt()?;
            let registration = state
                .registration
                .as_ref()
                .ok_or_else(|| StepError::LifecycleConflict("no registration".into()))?;
            transition(
                &*self.store,
                &self.config,
                job_id,
                Happening::Register {
                    runner_name: registration.runner_name.clone(),
                },
                Effects {
                    runner: Some((registration.runner_name.clone(), registration.runner_id)),
                    ..Effects::default()
                },
            )
            .await?;
            if registration.job_id != job_id {
                tracing::info!(
                    took_job = registration.job_id,
                    "runner took another queued job with matching labels"
                );
            }
            let wait = Wait {
                token: input.token,
                phase: WaitPhase::Completion,
                attempt,
            };
            arm(&*self.store, &*self.executions, job_id, &wait).await
        }
        .instrument(span)
        .await
    }
}

/// Revokes the attempt's KMS grant, then stops its task and deletes its runner — unless GitHub gave
/// that runner another job, which it is now serving (its task opened its config at boot already).
async fn release(
    launcher: &dyn TaskLauncher,
    registry: &dyn RunnerRegistry,
    sealer: &dyn CredentialSealer,
    state: &ExecutionState,
    signals: &crate::domain::waits::Signals,
    why: &str,
) -> Result<(), StepError> {
    if let Some(runner) = &state.runner {
        sealer.revoke(&runner.grant_id).await?;
    }
    let serving_another = match (&state.runner, &signals.taken) {
        (Some(runner), Some(taken)) => taken.runner_name == runner.name,
        _ => false,
    };
    if serving_another {
        tracing::info!("runner serves another job; its task is left to finish it");
        return Ok(());
    }
    if let Some(task) = &state.task {
        launcher.stop(&task.task_arn, why).await?;
    }
    if let Some(runner) = &state.runner {
        registry.delete_runner(&state.job, runner.id).await?;
    }
    Ok(())
}

/// Cleanup: an attempt failed; release what it started, record why, and say what comes next.
pub struct Cleanup {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
    pub launcher: Arc<dyn TaskLauncher>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub sealer: Arc<dyn CredentialSealer>,
}

impl Cleanup {
    pub async fn handle(&self, input: StepInput) -> Result<NextAttempt, StepError> {
        let state = input.state;
        let span = state.span("cleanup");
        async {
            let job_id = state.job.job_id;
            let attempt = state.attempt()?;
            let record = existing_job(&*self.store, job_id).await?;
            let mut reason = failure_reason(&state, &self.config, &record.signals);
            release(
                &*self.launcher,
                &*self.registry,
                &*self.sealer,
                &state,
                &record.signals,
                &reason,
            )
            .await?;
            if let Some(wait) = &record.wait {
                self.store.disarm(job_id, &wait.token).await?;
            }
            let count = state.plan.as_ref().map_or(1, |p| p.count);
            let failure = match state.error.as_ref().map(|e| e.error.as_str()) {
                Some("CapacityUnavailable" | "QuotaExceeded") => Failure::Capacity,
                _ => Failure::Other,
            };
            let next = rounds::next_attempt(
                attempt,
                count,
                failure,
                self.config.timeouts.capacity_wait_seconds,
            );
            if next.wait_seconds > 0 {
                reason = format!(
                    "{reason}; every candidate tried: round {} starts in {} s",
                    rounds::round_of(next.number, count),
                    next.wait_seconds
                );
            }
            tracing::warn!(%reason, "attempt failed");
            transition(
                &*self.store,
                &self.config,
                job_id,
                Happening::AttemptFailed { attempt, reason },
                Effects::default(),
            )
            .await?;
            Ok(next)
        }
        .instrument(span)
        .await
    }
}

/// A readable reason for a failed attempt or job, from the caught error and what ECS and GitHub told us.
pub fn failure_reason(
    state: &ExecutionState,
    config: &Config,
    signals: &crate::domain::waits::Signals,
) -> String {
    let Some(error) = &state.error else {
        return "failed for an unknown reason".into();
    };
    let attempt = state.attempt.map(|a| a.number).unwrap_or(0);
    let stop_reason = signals
        .stopped
        .as_ref()
        .filter(|s| s.attempt == attempt)
        .map(|s| s.reason.clone());
    match error.error.as_str() {
        "States.Timeout" => format!(
            "RegistrationTimeout: the runner did not register within {} s",
            config.timeouts.registration_seconds
        ),
        // Step Functions may drop a callback's cause; ECS told us the stop reason directly.
        "TaskStopped" => format!(
            "TaskStopped: {}",
            stop_reason
                .or_else(|| error.message())
                .unwrap_or_else(|| "the task stopped before its runner registered".into())
        ),
        "RunnerTaken" => match &signals.taken {
            Some(taken) => format!(
                "RunnerTaken: runner {} took job {} instead",
                taken.runner_name, taken.by_job
            ),
            None => "RunnerTaken".to_string(),
        },
        name => match error.message() {
            Some(message) => format!("{name}: {message}"),
            None => name.to_string(),
        },
    }
}

/// Finalize: the job's last transition, after releasing whatever is still running.
pub struct Finalize {
    pub config: Arc<Config>,
    pub store: Arc<dyn LifecycleStore>,
    pub launcher: Arc<dyn TaskLauncher>,
    pub registry: Arc<dyn RunnerRegistry>,
    pub sealer: Arc<dyn CredentialSealer>,
}

impl Finalize {
    pub async fn handle(&self, input: FinalizeInput) -> Result<Finalized, StepError> {
        let state = input.state;
        let span = state.span("finalize");
        async {
            let job_id = state.job.job_id;
            let record = existing_job(&*self.store, job_id).await?;
            let happening = match input.outcome {
                Outcome::Exhausted => {
                    let timeline = self.store.timeline(job_id).await?;
                    let reasons: Vec<String> = timeline
                        .iter()
                        .filter(|e| e.event == "attempt-failed")
                        .map(|e| {
                            format!(
                                "attempt {}: {}",
                                e.attempt,
                                e.reason.clone().unwrap_or_default()
                            )
                        })
                        .collect();
                    let count = state.plan.as_ref().map_or(1, |p| p.count).max(1) as usize;
                    let rounds = reasons.len().div_ceil(count);
                    let last_round = reasons[reasons.len().saturating_sub(count)..].join("; ");
                    Happening::Fail {
                        reason: if rounds > 1 {
                            format!(
                                "all {count} launch candidates failed in each of {rounds} rounds (last round: {last_round})"
                            )
                        } else {
                            format!(
                                "all {} launch candidates failed ({last_round})",
                                reasons.len()
                            )
                        },
                    }
                }
                outcome => final_happening(outcome, &state, &self.config, &record.signals),
            };
            let why = happening.reason().unwrap_or("job finished").to_string();
            // The last attempt's resources were already released by Cleanup when candidates ran out.
            if input.outcome != Outcome::Exhausted {
                release(
                    &*self.launcher,
                    &*self.registry,
                    &*self.sealer,
                    &state,
                    &record.signals,
                    &why,
                )
                .await?;
            }
            if let Some(wait) = &record.wait {
                self.store.disarm(job_id, &wait.token).await?;
            }
            let conclusion = state.completion.as_ref().map(|c| c.conclusion.clone());
            let done = transition(
                &*self.store,
                &self.config,
                job_id,
                happening,
                Effects {
                    conclusion,
                    ..Effects::default()
                },
            )
            .await?;
            tracing::info!(state = %done.state, %why, "finalized");
            Ok(Finalized {
                state: done.state,
                reason: Some(why),
            })
        }
        .instrument(span)
        .await
    }
}

/// The terminal transition for an outcome other than exhaustion.
pub fn final_happening(
    outcome: Outcome,
    state: &ExecutionState,
    config: &Config,
    signals: &crate::domain::waits::Signals,
) -> Happening {
    match outcome {
        Outcome::Completed => match state.completion.as_ref().map(|c| c.conclusion.as_str()) {
            Some("cancelled") => Happening::Cancel {
                reason: "cancelled on GitHub while running".into(),
            },
            Some(conclusion) => Happening::Complete {
                conclusion: conclusion.to_string(),
            },
            None => Happening::Fail {
                reason: "completion without a conclusion".into(),
            },
        },
        Outcome::Cancelled => Happening::Cancel {
            reason: "cancelled on GitHub before a runner took it".into(),
        },
        Outcome::TimedOut => Happening::TimeOut {
            reason: format!(
                "the job did not complete within {} s",
                config.timeouts.job_seconds
            ),
        },
        Outcome::Failed | Outcome::Exhausted => Happening::Fail {
            reason: failure_reason(state, config, signals),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::waits::{Signals, Stopped};

    fn state(error: Option<(&str, &str)>) -> ExecutionState {
        let job = JobRef {
            job_id: 7,
            run_id: 1,
            run_attempt: 1,
            repository: "octo-org/app".into(),
            private: true,
            workflow: "CI".into(),
            job_name: "build".into(),
            labels: vec!["tasuki".into()],
            installation_id: 1,
        };
        let spec = match labels::resolve(&job.labels, &example()) {
            LabelVerdict::Accepted(spec) => spec,
            other => panic!("{other:?}"),
        };
        let candidates = plan::plan(&spec, &example()).unwrap();
        ExecutionState {
            job,
            limits: None,
            plan: Some(LaunchPlan {
                count: candidates.len() as u32,
                candidates,
            }),
            attempt: Some(AttemptNumber { number: 2 }),
            runner: Some(IssuedRunner {
                name: "tasuki-7-2".into(),
                id: 5,
                jit_config_sealed: "SEALED".into(),
                grant_id: "grant-1".into(),
            }),
            task: None,
            registration: None,
            completion: None,
            error: error.map(|(e, c)| CaughtError {
                error: e.into(),
                cause: Some(c.into()),
            }),
        }
    }

    #[test]
    fn the_launch_request_uses_the_attempts_candidate_and_only_ciphertext() {
        let request = launch_request(&example(), &state(None)).unwrap();
        assert_eq!(request.capacity_provider, "FARGATE_SPOT");
        assert_eq!(request.subnet, "subnet-b");
        assert_eq!((request.cpu_units, request.memory_mib), (2048, 4096));
        assert_eq!(request.started_by, "tasuki/7/2");
        let env: std::collections::HashMap<_, _> = request.environment.into_iter().collect();
        assert_eq!(env["TASUKI_JIT_CONFIG_SEALED"], "SEALED");
        assert_eq!(env["TASUKI_RUNNER_NAME"], "tasuki-7-2");
        assert!(request
            .tags
            .contains(&("tasuki:size".into(), "2cpu-4gb".into())));
    }

    #[test]
    fn workflow_names_ecs_refuses_as_tag_values_are_sanitized_in_the_task_tags() {
        let mut s = state(None);
        s.job.workflow = "Build (linux, x64) & test #1".into();
        let request = launch_request(&example(), &s).unwrap();
        let tags: std::collections::HashMap<_, _> = request.tags.into_iter().collect();
        assert_eq!(tags["tasuki:workflow"], "Build _linux_ x64_ _ test _1");
        assert_eq!(s.job.workflow, "Build (linux, x64) & test #1");
    }

    #[test]
    fn a_real_size_sealed_config_fits_the_runtask_overrides_and_an_oversized_one_is_refused() {
        // GitHub's config with a 2048-bit key is ~4.2 KB; sealed, with base64 overhead, ~4.5 KB.
        let mut s = state(None);
        s.runner.as_mut().unwrap().jit_config_sealed = "A".repeat(4600);
        let request = launch_request(&example(), &s).unwrap();
        assert!(request.overrides_json().len() <= MAX_OVERRIDES_CHARS);
        s.runner.as_mut().unwrap().jit_config_sealed = "A".repeat(8000);
        assert_eq!(
            launch_request(&example(), &s).unwrap_err().name(),
            "LaunchConfigError"
        );
    }

    #[test]
    fn attempts_beyond_the_plan_reuse_its_candidates_round_after_round() {
        let mut s = state(None);
        let count = s.plan.as_ref().unwrap().count;
        s.attempt = Some(AttemptNumber { number: count + 2 });
        assert_eq!(launch_request(&example(), &s).unwrap().subnet, "subnet-b");
    }

    #[test]
    fn failure_reasons_read_lambda_causes_and_ecs_stop_reasons() {
        let cause = r#"{"errorType":"CapacityUnavailable","errorMessage":"capacity unavailable: FARGATE_SPOT in us-east-1b"}"#;
        let reason = failure_reason(
            &state(Some(("CapacityUnavailable", cause))),
            &example(),
            &Signals::default(),
        );
        assert_eq!(
            reason,
            "CapacityUnavailable: capacity unavailable: FARGATE_SPOT in us-east-1b"
        );

        let timeout = failure_reason(
            &state(Some(("States.Timeout", ""))),
            &example(),
            &Signals::default(),
        );
        assert_eq!(
            timeout,
            "RegistrationTimeout: the runner did not register within 300 s"
        );

        let signals = Signals {
            stopped: Some(Stopped {
                attempt: 2,
                reason: "TaskFailedToStart: CannotPullContainerError".into(),
                clean_exit: false,
            }),
            ..Signals::default()
        };
        let stopped = failure_reason(&state(Some(("TaskStopped", ""))), &example(), &signals);
        assert_eq!(
            stopped,
            "TaskStopped: TaskFailedToStart: CannotPullContainerError"
        );
    }

    #[test]
    fn a_cancelled_conclusion_finalizes_as_cancelled() {
        let mut s = state(None);
        s.completion = Some(Completion {
            conclusion: "cancelled".into(),
        });
        assert!(matches!(
            final_happening(Outcome::Completed, &s, &example(), &Signals::default()),
            Happening::Cancel { .. }
        ));
        s.completion = Some(Completion {
            conclusion: "failure".into(),
        });
        assert_eq!(
            final_happening(Outcome::Completed, &s, &example(), &Signals::default()),
            Happening::Complete {
                conclusion: "failure".into()
            }
        );
    }

    #[test]
    fn public_and_unlisted_repositories_are_refused_with_the_repository_named() {
        let mut job = state(None).job;
        assert_eq!(refusal_for_repository(&example(), &job), None);
        job.private = false;
        assert!(refusal_for_repository(&example(), &job)
            .unwrap()
            .contains("octo-org/app is public"));
        job.repository = "stranger/app".into();
        assert!(refusal_for_repository(&example(), &job)
            .unwrap()
            .contains("stranger/app"));
    }
}
