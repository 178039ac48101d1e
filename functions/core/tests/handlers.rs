//! Every handler path on the in-memory ports, in milliseconds: the payloads are what the ASL
//! sends (`{"state": $}`, plus the task token or the outcome), the state grows as `ResultPath`
//! grows it, and the assertions read what the fakes were asked and what the store holds.

mod contract;

use serde_json::{json, Value};
use std::sync::Arc;
use tasuki_core::domain::config::Config;
use tasuki_core::domain::deliveries::DeliveryAttempt;
use tasuki_core::domain::ids::{Attempt, JobId, RunnerName, StartedBy};
use tasuki_core::domain::job::{Conclusion, JobRef};
use tasuki_core::domain::lifecycle::{Happening, JobState};
use tasuki_core::domain::record::JobRecord;
use tasuki_core::domain::rescue::ExecutionStatus;
use tasuki_core::domain::waits::{
    CallbackOutput, Completion, JobOnGitHub, Registered, Signal, Stopped, Taken, TaskToken,
};
use tasuki_core::error::ErrorName;
use tasuki_core::fakes::{
    FakeDeliveries, FakeLauncher, FakeRegistry, FakeSealer, FixedClock, MemoryStore,
    RecordingExecutions,
};
use tasuki_core::handlers::cleanup::{Cleanup, Release};
use tasuki_core::handlers::ecs_events::EcsEvents;
use tasuki_core::handlers::finalize::Finalize;
use tasuki_core::handlers::issue_token::{IssueToken, RunnerCredentials};
use tasuki_core::handlers::registration::{Confirm, WaitForRegistration, Waiting};
use tasuki_core::handlers::rescue::RescueSweep;
use tasuki_core::handlers::resolve_labels::ResolveLabels;
use tasuki_core::handlers::run_task::RunTask;
use tasuki_core::handlers::step::{invoke, Step};
use tasuki_core::handlers::validate::Validate;
use tasuki_core::handlers::webhook::{Webhook, WebhookRequest};
use tasuki_core::handlers::{Effects, Lifecycle};
use tasuki_core::metrics::RecordedMetrics;
use tasuki_core::ports::{Clock, LifecycleStore, RunnerOnGitHub, RunningTask};
use tasuki_core::signature::WebhookSecret;
use tasuki_core::StepError;

/// The shared test runtime config (tests/fixtures/config/runtime.json), Fargate only: four
/// candidates, Spot and on-demand in two AZs.
fn config() -> Config {
    let shared = include_str!("../../../tests/fixtures/config/runtime.json");
    let mut value: Value = serde_json::from_str(shared).unwrap();
    value["capacity_order"] = json!(["fargate-spot", "fargate"]);
    Config::from_json(&value.to_string()).unwrap()
}

const JOB: u64 = 7;

struct World {
    config: Arc<Config>,
    store: Arc<MemoryStore>,
    clock: Arc<FixedClock>,
    executions: Arc<RecordingExecutions>,
    launcher: Arc<FakeLauncher>,
    registry: Arc<FakeRegistry>,
    sealer: Arc<FakeSealer>,
    deliveries: Arc<FakeDeliveries>,
    metrics: Arc<RecordedMetrics>,
    /// The job's labels (`tasuki` unless a test says otherwise).
    labels: Vec<&'static str>,
}

impl World {
    fn new() -> Self {
        Self {
            config: Arc::new(config()),
            store: Arc::default(),
            clock: Arc::new(FixedClock::at(1_795_392_000)),
            executions: Arc::default(),
            launcher: Arc::default(),
            registry: Arc::default(),
            sealer: Arc::default(),
            deliveries: Arc::default(),
            metrics: Arc::default(),
            labels: vec!["tasuki"],
        }
    }

    fn with_labels(labels: &[&'static str]) -> Self {
        Self {
            labels: labels.to_vec(),
            ..Self::new()
        }
    }

    fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            store: self.store.clone(),
            clock: self.clock.clone(),
            timeouts: self.config.timeouts,
            metrics: self.metrics.clone(),
        }
    }

    fn release(&self) -> Release {
        Release {
            launcher: self.launcher.clone(),
            registry: self.registry.clone(),
            sealer: self.sealer.clone(),
        }
    }

    fn validate(&self) -> Validate {
        Validate {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
        }
    }

    fn resolve_labels(&self) -> ResolveLabels {
        ResolveLabels {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
        }
    }

    fn issue_token(&self) -> IssueToken {
        IssueToken {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            credentials: RunnerCredentials {
                registry: self.registry.clone(),
                sealer: self.sealer.clone(),
            },
        }
    }

    fn run_task(&self) -> RunTask {
        RunTask {
            config: self.config.clone(),
            launcher: self.launcher.clone(),
        }
    }

    fn waits(&self) -> Waiting {
        Waiting {
            lifecycle: self.lifecycle(),
            executions: self.executions.clone(),
        }
    }

    fn wait_for_registration(&self) -> WaitForRegistration {
        WaitForRegistration(self.waits())
    }

    fn confirm(&self) -> Confirm {
        Confirm(self.waits())
    }

    fn cleanup(&self) -> Cleanup {
        Cleanup {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            release: self.release(),
        }
    }

    fn finalize(&self) -> Finalize {
        Finalize {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            release: self.release(),
        }
    }

    fn rescue(&self) -> RescueSweep {
        RescueSweep {
            lifecycle: self.lifecycle(),
            executions: self.executions.clone(),
            registry: self.registry.clone(),
            deliveries: self.deliveries.clone(),
            launcher: self.launcher.clone(),
        }
    }

    fn webhook(&self) -> Webhook {
        Webhook {
            config: self.config.clone(),
            secret: WebhookSecret::new("s3cr3t"),
            lifecycle: self.lifecycle(),
            executions: self.executions.clone(),
        }
    }

    /// The job as the webhook writes it, and the execution's first state.
    async fn received(&self, job: &JobRef) -> Value {
        let received = JobRecord::received(
            job.clone(),
            job.execution_arn(&self.config.state_machine_arn),
            &self.config.timeouts,
            &self.clock.now(),
        );
        assert!(self.store.create(&received).await.unwrap());
        json!({ "job": job })
    }

    fn record(&self) -> JobRecord {
        self.store.record(JobId::new(JOB)).unwrap()
    }

    /// The timeline as `event attempt: reason` lines.
    fn rows(&self) -> Vec<String> {
        self.store
            .events(JobId::new(JOB))
            .into_iter()
            .map(|e| match e.reason {
                Some(reason) => format!("{} {}: {reason}", e.event, e.attempt),
                None => format!("{} {}", e.event, e.attempt),
            })
            .collect()
    }

    /// What GitHub answers when asked where the job is.
    fn github_says(&self, now: JobOnGitHub) {
        self.registry
            .jobs
            .lock()
            .unwrap()
            .insert(JobId::new(JOB), now);
    }

    /// Step Functions says the job's execution ended so.
    fn execution_ended(&self, status: ExecutionStatus) {
        let name = self.record().job.execution_name();
        self.executions.ended.lock().unwrap().insert(name, status);
    }

    fn last_row(&self) -> String {
        self.rows().pop().unwrap_or_default()
    }

    fn revoked(&self) -> Vec<String> {
        self.sealer.revoked.lock().unwrap().clone()
    }

    fn deleted(&self) -> Vec<u64> {
        self.registry.deleted.lock().unwrap().clone()
    }

    fn stops(&self) -> Vec<(String, String)> {
        self.launcher.stops.lock().unwrap().clone()
    }

    /// `job` received, validated and planned: its plan as JSON text.
    async fn plan_of(&self, job: &JobRef) -> String {
        let mut state = self.received(job).await;
        state["limits"] = step(&self.validate(), &state).await.unwrap();
        step(&self.resolve_labels(), &state)
            .await
            .unwrap()
            .to_string()
    }

    /// Plays Validate and ResolveLabels as the ASL would, up to the first attempt, and returns
    /// the state document.
    async fn planned(&self) -> Value {
        let mut state = self.received(&job(&self.labels)).await;
        state["limits"] = step(&self.validate(), &state).await.unwrap();
        state["plan"] = step(&self.resolve_labels(), &state).await.unwrap();
        state["attempt"] = json!({"number": 1, "try": 1, "relaunches": 0});
        state
    }

    /// [`World::planned`], then the first attempt up to a started task.
    async fn launched(&self) -> Value {
        let mut state = self.planned().await;
        state["runner"] = step(&self.issue_token(), &state).await.unwrap();
        state["task"] = step(&self.run_task(), &state).await.unwrap();
        state
    }

    /// [`World::launched`], then the registration wait armed with `tok-1`.
    async fn waiting(&self) -> Value {
        let state = self.launched().await;
        wait(&self.wait_for_registration(), &state, "tok-1")
            .await
            .unwrap();
        state
    }
}

/// The metrics emitted since the last call: name, value and dimension value.
fn emitted(world: &World) -> Vec<(&'static str, f64, Option<&'static str>)> {
    world
        .metrics
        .taken()
        .iter()
        .map(|d| (d.metric.name(), d.value, d.dimension.map(|(_, v)| v)))
        .collect()
}

fn job(labels: &[&str]) -> JobRef {
    JobRef {
        labels: labels.iter().map(|l| l.to_string()).collect(),
        ..contract::job(JOB)
    }
}

/// Invokes a step with `{"state": state}`, as a plain Task state does.
async fn step<S: Step>(step: &S, state: &Value) -> Result<Value, StepError> {
    invoke(step, json!({ "state": state }))
        .await
        .map(|output| serde_json::to_value(output).unwrap())
}

async fn wait<S: Step>(step: &S, state: &Value, token: &str) -> Result<Value, StepError> {
    invoke(step, json!({ "state": state, "token": token }))
        .await
        .map(|output| serde_json::to_value(output).unwrap())
}

async fn finalize(world: &World, state: &Value, outcome: &str) -> Result<Value, StepError> {
    invoke(
        &world.finalize(),
        json!({ "state": state, "outcome": outcome }),
    )
    .await
    .map(|output| serde_json::to_value(output).unwrap())
}

fn caught(error: &str, message: &str) -> Value {
    json!({
        "Error": error,
        "Cause": json!({"errorType": error, "errorMessage": message}).to_string()
    })
}

fn registered(runner_name: &str) -> Signal {
    Signal::Registered(Registered {
        runner_name: runner_name.into(),
        runner_id: 100,
        job_id: JobId::new(JOB),
    })
}

// ---- the store contract, on the in-memory store ----------------------------------------------

store_contract_tests!(MemoryStore::default());

// ---- Validate and ResolveLabels ----------------------------------------------------------------

#[tokio::test]
async fn a_served_job_gets_its_limits_and_a_plan_of_every_candidate() {
    let world = World::new();
    let state = world.received(&job(&["self-hosted", "tasuki"])).await;
    let limits = step(&world.validate(), &state).await.unwrap();
    assert_eq!(
        limits,
        json!({"registration_seconds": 300, "job_seconds": 3600})
    );
    let plan = step(&world.resolve_labels(), &state).await.unwrap();
    assert_eq!(plan["count"], 4, "spot and on-demand in two AZs");
    assert_eq!(plan["candidates"][0]["subnet"], "subnet-a");
    assert_eq!(world.rows(), ["received 0", "planned 0"]);
    // deadline: planned moves on within seconds, so the grace alone.
    assert_eq!(
        world.record().deadline,
        world.clock.now().epoch_seconds + 300
    );
}

#[tokio::test]
async fn a_repository_outside_the_allowlist_is_refused_once_with_its_reason() {
    let world = World::new();
    let mut stranger = job(&["tasuki"]);
    stranger.repository = "stranger/app".into();
    let state = world.received(&stranger).await;
    for _ in 0..2 {
        // The second time is Step Functions retrying the step: same answer, no second row.
        let error = step(&world.validate(), &state).await.unwrap_err();
        assert_eq!(error.name(), ErrorName::JobRefused);
        assert!(error.detail().contains("stranger/app"), "{error}");
    }
    assert_eq!(
        world.rows(),
        [
            "received 0".to_string(),
            "refused 0: repository stranger/app is not in the access allowlist".to_string()
        ]
    );
    assert!(world.registry.issued.lock().unwrap().is_empty());
}

#[tokio::test]
async fn labels_we_cannot_serve_are_refused_and_nothing_is_launched() {
    let world = World::new();
    let state = world.received(&job(&["tasuki", "docker"])).await;
    let error = step(&world.resolve_labels(), &state).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::JobRefused);
    assert_eq!(world.record().position.state, JobState::Refused);
    assert!(world.rows()[1].contains("docker"), "{:?}", world.rows());
    assert!(world.launcher.runs.lock().unwrap().is_empty());
    let metrics = emitted(&world);
    assert_eq!(
        metrics[..3],
        [
            ("JobsFinished", 1.0, Some("refused")),
            ("AttemptsPerJob", 0.0, None),
            ("RunnerSeconds", 0.0, None),
        ]
    );
    assert_eq!(metrics[3].0, "JobCostUSD");
}

// ---- IssueToken and RunTask --------------------------------------------------------------------

#[tokio::test]
async fn an_attempt_issues_a_sealed_credential_and_launches_on_its_candidate() {
    let world = World::new();
    let state = world.launched().await;
    let issued = world.registry.issued.lock().unwrap().clone();
    assert_eq!(
        issued,
        [(
            RunnerName::new(JobId::new(JOB), Attempt::FIRST),
            vec!["tasuki".to_string(), "tasuki-managed".to_string()]
        )]
    );
    assert_eq!(state["runner"]["name"], "tasuki-7-1");
    assert_eq!(state["runner"]["grant_id"], "grant-7-1");
    assert!(!state.to_string().contains("PLAINTEXT"), "{state}");
    let runs = world.launcher.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].capacity.name(), "FARGATE_SPOT");
    assert_eq!(runs[0].subnet, "subnet-a");
    assert_eq!(runs[0].started_by.to_string(), "tasuki/7/1");
    assert!(!runs[0].overrides_json().contains("PLAINTEXT"));
    assert_eq!(
        world.rows()[2],
        "launching 1",
        "the attempt starts before GitHub is asked"
    );
    assert_eq!(
        world.store.events(JobId::new(JOB))[2].candidate.as_deref(),
        Some("fargate-spot/us-east-1a/2cpu-4gb/x64")
    );
}

#[tokio::test]
async fn a_credential_that_cannot_be_sealed_deletes_the_runner_just_registered() {
    let world = World::new();
    let state = world.planned().await;
    *world.sealer.fail_next.lock().unwrap() =
        Some(StepError::LaunchConfigError("KMS key disabled".into()));
    let error = step(&world.issue_token(), &state).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::LaunchConfigError);
    assert_eq!(world.deleted(), [100]);
}

#[tokio::test]
async fn a_retried_issue_token_does_not_start_the_attempt_twice() {
    let world = World::new();
    let state = world.planned().await;
    step(&world.issue_token(), &state).await.unwrap();
    step(&world.issue_token(), &state).await.unwrap();
    assert_eq!(world.rows(), ["received 0", "planned 0", "launching 1"]);
}

#[tokio::test]
async fn capacity_failures_from_ecs_reach_the_state_machine_by_name() {
    let world = World::new();
    let mut state = world.planned().await;
    state["runner"] = step(&world.issue_token(), &state).await.unwrap();
    world
        .launcher
        .script
        .lock()
        .unwrap()
        .push_back(Err(StepError::CapacityUnavailable("FARGATE_SPOT".into())));
    let error = step(&world.run_task(), &state).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::CapacityUnavailable);
}

#[tokio::test]
async fn an_input_without_what_the_asl_always_provides_is_malformed_and_changes_nothing() {
    let world = World::new();
    let state = world.received(&job(&["tasuki"])).await;
    // IssueToken without a plan or an attempt; an attempt numbered 0.
    let error = step(&world.issue_token(), &state).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::MalformedInput);
    assert!(error.detail().contains("plan"), "{error}");
    let mut zero = state.clone();
    zero["plan"] = step(&world.resolve_labels(), &state).await.unwrap();
    zero["attempt"] = json!({"number": 0});
    let error = step(&world.issue_token(), &zero).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::MalformedInput);
    zero["attempt"] = json!({"number": 1});
    zero["plan"] = json!({"candidates": [], "count": 0});
    let error = step(&world.issue_token(), &zero).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::MalformedInput);
    assert_eq!(world.rows(), ["received 0", "planned 0"]);
    assert!(world.registry.issued.lock().unwrap().is_empty());
}

// ---- the waits ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_registration_that_came_first_is_answered_when_the_wait_is_armed() {
    let world = World::new();
    let state = world.launched().await;
    world
        .store
        .signal(JobId::new(JOB), &registered("tasuki-7-1"))
        .await
        .unwrap();
    wait(&world.wait_for_registration(), &state, "tok-1")
        .await
        .unwrap();
    let succeeded = world.executions.succeeded.lock().unwrap().clone();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].0, TaskToken::new("tok-1"));
    let CallbackOutput::Registered(output) = &succeeded[0].1 else {
        panic!("{succeeded:?}")
    };
    assert_eq!(output.runner_name, "tasuki-7-1");
    let record = world.record();
    assert_eq!(record.position.state, JobState::WaitingForRegistration);
    assert_eq!(
        record.task_arn.as_deref(),
        state["task"]["task_arn"].as_str()
    );
    assert_eq!(
        record.deadline,
        world.clock.now().epoch_seconds + 300,
        "checked a grace period after its last change"
    );
}

#[tokio::test]
async fn a_wait_armed_first_is_left_for_the_signal_and_confirm_arms_the_completion() {
    let world = World::new();
    let mut state = world.waiting().await;
    assert!(world.executions.succeeded.lock().unwrap().is_empty());
    assert_eq!(
        world.record().wait.map(|w| w.token),
        Some(TaskToken::new("tok-1"))
    );
    // The callback output, as `$.registration`.
    state["registration"] = json!({"runner_name": "tasuki-7-1", "runner_id": 100, "job_id": JOB});
    wait(&world.confirm(), &state, "tok-2").await.unwrap();
    let record = world.record();
    assert_eq!(record.position.state, JobState::Running);
    assert_eq!(record.runner.map(|r| r.name).as_deref(), Some("tasuki-7-1"));
    assert_eq!(record.wait.map(|w| w.token), Some(TaskToken::new("tok-2")));
    // A completion that arrives now is delivered by the webhook side (the wait is armed).
    let completed = world
        .store
        .signal(
            JobId::new(JOB),
            &Signal::Completed(Completion {
                conclusion: Conclusion::Success,
            }),
        )
        .await
        .unwrap()
        .unwrap();
    tasuki_core::handlers::deliver(&*world.executions, &completed)
        .await
        .unwrap();
    // ... and a redelivery of it is a no-op the fake answers `false` to, like Step Functions.
    tasuki_core::handlers::deliver(&*world.executions, &completed)
        .await
        .unwrap();
    assert_eq!(world.executions.succeeded.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_race_with_a_webhook_is_re_read_and_keeps_the_webhooks_signal() {
    let world = World::new();
    let state = world.launched().await;
    world
        .store
        .race_next_commit(|record| record.signals.registered = registered_value());
    wait(&world.wait_for_registration(), &state, "tok-1")
        .await
        .unwrap();
    let record = world.record();
    assert_eq!(record.position.state, JobState::WaitingForRegistration);
    assert!(record.signals.registered.is_some(), "the signal survived");
    assert_eq!(
        world.executions.succeeded.lock().unwrap().len(),
        1,
        "and was answered"
    );
}

fn completed_on_our_runner() -> JobOnGitHub {
    JobOnGitHub::Completed {
        conclusion: Conclusion::Success,
        ran_on: registered_value(),
    }
}

fn registered_value() -> Option<Registered> {
    Some(Registered {
        runner_name: "tasuki-7-1".into(),
        runner_id: 100,
        job_id: JobId::new(JOB),
    })
}

#[tokio::test]
async fn an_illegal_transition_is_a_lifecycle_conflict_not_a_silent_write() {
    let world = World::new();
    let mut state = world.received(&job(&["tasuki"])).await;
    state["attempt"] = json!({"number": 1});
    state["registration"] = json!({"runner_name": "tasuki-7-1", "runner_id": 100, "job_id": JOB});
    let error = wait(&world.confirm(), &state, "tok").await.unwrap_err();
    assert_eq!(error.name(), ErrorName::LifecycleConflict);
    assert!(error.detail().contains("illegal transition"), "{error}");
    assert_eq!(world.rows(), ["received 0"]);
}

// ---- CleanupAttempt ---------------------------------------------------------------------------

#[tokio::test]
async fn cleanup_releases_what_the_attempt_holds_and_records_why() {
    let stop_reason = "TaskFailedToStart: CannotPullContainerError";
    let capacity = "FARGATE_SPOT in subnet-a: none";
    // A task that stopped while the wait was armed (Step Functions dropped the cause: the reason
    // comes from what ECS told us), and a RunTask that failed (no task, no wait).
    for task_started in [true, false] {
        let world = World::new();
        let mut state = world.launched().await;
        if task_started {
            wait(&world.wait_for_registration(), &state, "tok-1")
                .await
                .unwrap();
            let stopped = Stopped {
                attempt: Attempt::FIRST,
                reason: stop_reason.into(),
                clean_exit: false,
            };
            let signal = Signal::Stopped(stopped);
            world.store.signal(JobId::new(JOB), &signal).await.unwrap();
            state["error"] = json!({"Error": "TaskStopped", "Cause": ""});
        } else {
            state.as_object_mut().unwrap().remove("task");
            state["error"] = caught("CapacityUnavailable", capacity);
        }
        let next = step(&world.cleanup(), &state).await.unwrap();
        assert_eq!(
            next,
            json!({"number": 2, "try": 2, "relaunches": 0, "wait_seconds": 0, "exhausted": false, "running": null})
        );
        assert_eq!(world.revoked(), ["grant-7-1"]);
        let stopped_tasks: Vec<String> = world.stops().into_iter().map(|(arn, _)| arn).collect();
        let task: Vec<String> = state["task"]["task_arn"]
            .as_str()
            .map(String::from)
            .into_iter()
            .collect();
        assert_eq!(stopped_tasks, task);
        assert_eq!(world.deleted(), [100]);
        assert_eq!(world.record().wait, None, "the token is forgotten");
        let why = if task_started {
            format!("TaskStopped: {stop_reason}")
        } else {
            format!("CapacityUnavailable: {capacity}")
        };
        assert_eq!(world.last_row(), format!("attempt-failed 1: {why}"));
        let reason = if task_started {
            "TaskStopped"
        } else {
            "CapacityUnavailable"
        };
        assert_eq!(emitted(&world), [("Fallbacks", 1.0, Some(reason))]);
    }
}

#[tokio::test]
async fn a_registration_timeout_asks_github_first_and_a_running_job_is_never_killed() {
    for (runs_on, ours) in [("tasuki-7-1", true), ("tasuki-99-1", false)] {
        let world = World::new();
        let mut state = world.waiting().await;
        // The in_progress delivery was lost: the store knows nothing, GitHub knows.
        let running = JobOnGitHub::Running(Registered {
            runner_name: runs_on.into(),
            runner_id: 555,
            job_id: JobId::new(JOB),
        });
        world.github_says(running);
        state["error"] = json!({"Error": "States.Timeout"});
        let next = step(&world.cleanup(), &state).await.unwrap();
        assert_eq!(
            next["running"],
            json!({"runner_name": runs_on, "runner_id": 555, "job_id": JOB})
        );
        assert_eq!(world.revoked(), ["grant-7-1"], "{runs_on}");
        let (stops, deleted) = (world.stops().len(), world.deleted());
        if ours {
            assert_eq!((stops, deleted), (0, vec![]), "its runner runs the job");
        } else {
            assert_eq!((stops, deleted), (1, vec![100]), "its own runner is idle");
        }
        assert!(!world.rows().iter().any(|r| r.starts_with("attempt-failed")));
        assert_eq!(world.record().wait, None);
        // The ASL's RunningAfterAll puts `running` at `$.registration`; Confirm carries on.
        state["registration"] = next["running"].clone();
        wait(&world.confirm(), &state, "tok-2").await.unwrap();
        assert_eq!(world.record().position.state, JobState::Running);
    }
}

#[tokio::test]
async fn a_job_that_completed_unseen_is_answered_as_soon_as_the_completion_wait_is_armed() {
    let world = World::new();
    let mut state = world.waiting().await;
    world.github_says(completed_on_our_runner());
    state["error"] = json!({"Error": "TaskStopped", "Cause": "Essential container in task exited"});
    let next = step(&world.cleanup(), &state).await.unwrap();
    state["registration"] = next["running"].clone();
    wait(&world.confirm(), &state, "tok-2").await.unwrap();
    let succeeded = world.executions.succeeded.lock().unwrap().clone();
    assert_eq!(
        succeeded
            .last()
            .map(|(token, output)| (token.as_str().to_string(), output.clone())),
        Some((
            "tok-2".to_string(),
            CallbackOutput::Completed(Completion {
                conclusion: Conclusion::Success
            })
        ))
    );
}

#[tokio::test]
async fn a_job_github_has_not_started_is_cleaned_up_as_before() {
    let world = World::new();
    let mut state = world.waiting().await;
    state["error"] = json!({"Error": "States.Timeout"});
    let next = step(&world.cleanup(), &state).await.unwrap();
    assert_eq!(next["running"], Value::Null);
    assert_eq!((world.stops().len(), world.deleted()), (1, vec![100]));
    assert!(world
        .last_row()
        .starts_with("attempt-failed 1: RegistrationTimeout"));
}

#[tokio::test]
async fn a_runner_that_took_another_job_is_left_running_but_loses_its_grant() {
    let world = World::new();
    let mut state = world.launched().await;
    world
        .store
        .signal(
            JobId::new(JOB),
            &Signal::RunnerTaken(Taken {
                runner_name: RunnerName::new(JobId::new(JOB), Attempt::FIRST),
                by_job: JobId::new(8),
            }),
        )
        .await
        .unwrap();
    state["error"] = json!({"Error": "RunnerTaken"});
    step(&world.cleanup(), &state).await.unwrap();
    assert_eq!(world.revoked(), ["grant-7-1"]);
    assert!(world.stops().is_empty());
    assert!(world.deleted().is_empty());
    assert!(world.last_row().ends_with(
        "RunnerTaken: runner tasuki-7-1 took job 8 instead; relaunching on the same candidate (1 of 3 relaunches)"
    ));
}

#[tokio::test]
async fn a_stolen_runner_is_relaunched_on_the_same_candidate_a_bounded_number_of_times() {
    let world = World::new();
    let mut state = world.planned().await;
    let mut tries = vec![];
    for number in 1..=5 {
        state["runner"] = step(&world.issue_token(), &state).await.unwrap();
        state["task"] = step(&world.run_task(), &state).await.unwrap();
        let taken = Taken {
            runner_name: RunnerName::new(JobId::new(JOB), Attempt::new(number).unwrap()),
            by_job: JobId::new(800 + u64::from(number)),
        };
        let signal = Signal::RunnerTaken(taken);
        world.store.signal(JobId::new(JOB), &signal).await.unwrap();
        state["error"] = json!({"Error": "RunnerTaken"});
        let next = step(&world.cleanup(), &state).await.unwrap();
        tries.push((next["try"].clone(), next["relaunches"].clone()));
        state["attempt"] =
            json!({"number": next["number"], "try": next["try"], "relaunches": next["relaunches"]});
    }
    // Three relaunches on candidate 1; after that every theft spends its candidate.
    assert_eq!(
        tries,
        [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)].map(|(t, r)| (json!(t), json!(r)))
    );
    let subnets: Vec<String> = world
        .launcher
        .runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.subnet.clone())
        .collect();
    assert_eq!(
        subnets,
        ["subnet-a", "subnet-a", "subnet-a", "subnet-a", "subnet-b"]
    );
    assert!(
        world.stops().is_empty(),
        "each taken runner serves its new job"
    );
}

#[tokio::test]
async fn a_job_cancelled_before_its_attempt_starts_gets_no_runner() {
    let world = World::new();
    let state = world.planned().await;
    world
        .store
        .signal(JobId::new(JOB), &Signal::Cancelled)
        .await
        .unwrap();
    let error = step(&world.issue_token(), &state).await.unwrap_err();
    assert_eq!(error.name(), ErrorName::JobCancelled);
    assert!(world.registry.issued.lock().unwrap().is_empty());
    let mut state = state;
    state["error"] = json!({"Error": "JobCancelled"});
    let done = finalize(&world, &state, "cancelled").await.unwrap();
    assert_eq!(done["state"], "cancelled");
    assert_eq!(
        world.rows(),
        [
            "received 0",
            "planned 0",
            "cancelled 0: cancelled on GitHub before a runner took it"
        ]
    );
    assert!(world.launcher.runs.lock().unwrap().is_empty() && world.stops().is_empty());
    assert_eq!(emitted(&world)[0], ("JobsFinished", 1.0, Some("cancelled")));
}

#[tokio::test]
async fn the_last_candidate_lost_to_capacity_waits_for_a_new_round_and_anything_else_gives_up() {
    for (error, expected) in [
        (
            "QuotaExceeded",
            json!({"number": 5, "try": 5, "relaunches": 0, "wait_seconds": 30, "exhausted": false, "running": null}),
        ),
        (
            "States.Timeout",
            json!({"number": 5, "try": 5, "relaunches": 0, "wait_seconds": 0, "exhausted": true, "running": null}),
        ),
    ] {
        let world = World::new();
        let mut state = world.planned().await;
        for attempt in 1..=4 {
            state["attempt"] = json!({ "number": attempt });
            state["runner"] = step(&world.issue_token(), &state).await.unwrap();
            state["error"] = caught(error, "vCPU limit");
            let next = step(&world.cleanup(), &state).await.unwrap();
            if attempt == 4 {
                assert_eq!(next, expected, "{error}");
            }
        }
        let last = world.last_row();
        assert_eq!(
            last.ends_with("round 2 starts in 30 s"),
            error == "QuotaExceeded",
            "{last}"
        );
    }
}

// ---- Finalize -----------------------------------------------------------------------------------

async fn running(world: &World) -> Value {
    let mut state = world.waiting().await;
    state["registration"] = json!({"runner_name": "tasuki-7-1", "runner_id": 100, "job_id": JOB});
    wait(&world.confirm(), &state, "tok-2").await.unwrap();
    state
}

#[tokio::test]
async fn a_job_reports_how_long_it_waited_how_long_its_runner_took_and_what_it_cost() {
    let world = World::new();
    let mut state = world.launched().await;
    world.clock.advance(20);
    wait(&world.wait_for_registration(), &state, "tok-1")
        .await
        .unwrap();
    emitted(&world);
    world.clock.advance(7);
    state["registration"] = json!({"runner_name": "tasuki-7-1", "runner_id": 100, "job_id": JOB});
    wait(&world.confirm(), &state, "tok-2").await.unwrap();
    // The fixture's first candidate is Fargate Spot; the task started as RunTask answered.
    assert_eq!(
        emitted(&world),
        [
            ("QueuedToRunningSeconds", 27.0, Some("fargate-spot")),
            ("LaunchToRegisteredSeconds", 7.0, Some("fargate-spot")),
        ]
    );
    world.clock.advance(100);
    state["completion"] = json!({"conclusion": "success"});
    finalize(&world, &state, "completed").await.unwrap();
    let finished = emitted(&world);
    assert_eq!(
        finished[..3],
        [
            ("JobsFinished", 1.0, Some("completed")),
            ("AttemptsPerJob", 1.0, None),
            ("RunnerSeconds", 107.0, None),
        ]
    );
    let cost = finished[3].1;
    assert_eq!(finished[3].0, "JobCostUSD");
    assert!(
        cost > 0.0 && cost < 0.01,
        "{cost} USD for 107 s of a small Spot runner"
    );
}

#[tokio::test]
async fn a_completed_job_records_its_conclusion_and_releases_its_attempt() {
    let world = World::new();
    let mut state = running(&world).await;
    state["completion"] = json!({"conclusion": "success"});
    let done = finalize(&world, &state, "completed").await.unwrap();
    assert_eq!(done, json!({"state": "completed", "reason": "success"}));
    let record = world.record();
    assert_eq!(record.conclusion, Some(Conclusion::Success));
    assert_eq!(record.wait, None);
    assert_eq!(world.revoked(), ["grant-7-1"]);
    assert_eq!(world.stops().len(), 1);
    // Finalize retried after its transition landed: the same answer, no second row.
    let again = finalize(&world, &state, "completed").await.unwrap();
    assert_eq!(again["state"], "completed");
    assert_eq!(
        world
            .rows()
            .iter()
            .filter(|r| r.starts_with("completed"))
            .count(),
        1
    );
}

#[tokio::test]
async fn each_outcome_finalizes_to_its_state_with_a_reason() {
    let cases = [
        (
            "completed",
            Some(json!({"conclusion": "cancelled"})),
            None,
            JobState::Cancelled,
            "cancelled on GitHub while running",
        ),
        (
            "cancelled",
            None,
            Some(json!({"Error": "JobCancelled"})),
            JobState::Cancelled,
            "cancelled on GitHub before a runner took it",
        ),
        (
            "timed-out",
            None,
            Some(json!({"Error": "States.Timeout"})),
            JobState::TimedOut,
            "the job did not complete within 3600 s",
        ),
        (
            "failed",
            None,
            Some(caught("TaskStopped", "SpotInterruption")),
            JobState::Failed,
            "TaskStopped: SpotInterruption",
        ),
        (
            "failed",
            None,
            Some(json!({"Error": "Lambda.Unknown", "Cause": "out of memory"})),
            JobState::Failed,
            "Lambda.Unknown: out of memory",
        ),
    ];
    for (outcome, completion, error, state_after, reason) in cases {
        let world = World::new();
        let mut state = running(&world).await;
        if let Some(completion) = completion {
            state["completion"] = completion;
        }
        if let Some(error) = error {
            state["error"] = error;
        }
        let done = finalize(&world, &state, outcome).await.unwrap();
        assert_eq!(done["state"], state_after.as_str(), "{outcome}");
        assert_eq!(done["reason"], reason, "{outcome}");
        assert_eq!(world.record().position.state, state_after);
        assert_eq!(world.stops().len(), 1, "{outcome}: the task is stopped");
    }
}

#[tokio::test]
async fn a_job_that_fails_before_any_attempt_finalizes_without_releasing_anything() {
    let world = World::new();
    let mut state = world.received(&job(&["tasuki"])).await;
    state["error"] = caught("Transient", "DynamoDB unreachable");
    let done = finalize(&world, &state, "failed").await.unwrap();
    assert_eq!(done["reason"], "Transient: DynamoDB unreachable");
    assert!(world.revoked().is_empty());
    assert!(world.stops().is_empty());
}

#[tokio::test]
async fn exhaustion_sums_up_every_attempt_and_releases_nothing_twice() {
    let world = World::new();
    let mut state = world.planned().await;
    for attempt in 1..=4 {
        state["attempt"] = json!({ "number": attempt });
        state["runner"] = step(&world.issue_token(), &state).await.unwrap();
        state["error"] = json!({"Error": "States.Timeout"});
        step(&world.cleanup(), &state).await.unwrap();
    }
    let revoked = world.revoked().len();
    let done = finalize(&world, &state, "exhausted").await.unwrap();
    assert_eq!(done["state"], "failed");
    assert!(done["reason"]
        .as_str()
        .unwrap()
        .starts_with("all 4 launch candidates failed (attempt 1: RegistrationTimeout"));
    assert_eq!(world.revoked().len(), revoked);
}

// ---- the webhook and ECS events ----------------------------------------------------------------

/// Delivers a signed `workflow_job` webhook; the answer's status and reason.
async fn send(webhook: &Webhook, body: Value) -> (u16, String) {
    let body = serde_json::to_vec(&body).unwrap();
    let answer = webhook
        .handle(WebhookRequest {
            event: Some("workflow_job".into()),
            delivery: Some("d-1".into()),
            signature: Some(WebhookSecret::new("s3cr3t").sign(&body)),
            body,
        })
        .await;
    (answer.status, answer.reason.unwrap_or_default())
}

fn answer(status: u16, reason: &str) -> (u16, String) {
    (status, reason.to_string())
}

/// A `workflow_job` delivery for job 7 of octo-org/app, from GitHub's fixture.
fn workflow_job(action: &str, runner_name: Option<&str>, conclusion: Option<&str>) -> Value {
    let path = format!(
        "{}/../../tests/fixtures/webhooks/workflow_job.queued.1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut body: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    body["action"] = action.into();
    body["repository"]["full_name"] = "octo-org/app".into();
    body["repository"]["private"] = true.into();
    body["workflow_job"]["id"] = JOB.into();
    body["workflow_job"]["labels"] = json!(["tasuki"]);
    body["workflow_job"]["runner_name"] = json!(runner_name);
    body["workflow_job"]["runner_id"] = json!(runner_name.map(|_| 100));
    body["workflow_job"]["conclusion"] = json!(conclusion);
    body
}

fn queued() -> Value {
    workflow_job("queued", None, None)
}

#[tokio::test]
async fn a_queued_job_is_recorded_then_started_and_a_redelivery_starts_nothing() {
    let world = World::new();
    let webhook = world.webhook();
    assert_eq!(
        send(&webhook, queued()).await,
        answer(202, "execution started")
    );
    assert_eq!(
        send(&webhook, queued()).await,
        answer(202, "already started")
    );
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
    assert_eq!(
        world.record().execution_arn,
        "arn:aws:states:us-east-1:123456789012:execution:tasuki-runner-job:7-1"
    );
}

#[tokio::test]
async fn a_failed_start_answers_500_and_leaves_the_job_received_for_a_redelivery() {
    let world = World::new();
    let error = StepError::Throttled("StartExecution".into());
    world.executions.errors.lock().unwrap().push_back(error);
    let webhook = world.webhook();
    assert_eq!(send(&webhook, queued()).await, answer(500, "Throttled"));
    assert_eq!(world.record().position.state, JobState::Received);
    assert_eq!(send(&webhook, queued()).await.0, 202);
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn in_progress_answers_the_armed_wait_and_a_job_not_ours_we_never_saw_is_ignored() {
    let world = World::new();
    world.waiting().await;
    let webhook = world.webhook();
    let running = workflow_job("in_progress", Some("tasuki-7-1"), None);
    assert_eq!(send(&webhook, running).await, answer(202, "callback sent"));
    let mut unknown = workflow_job("completed", Some("build-box"), Some("success"));
    unknown["workflow_job"]["id"] = 404.into();
    unknown["workflow_job"]["labels"] = json!(["self-hosted"]);
    assert_eq!(
        send(&webhook, unknown).await,
        answer(200, "no tasuki label")
    );
    assert!(world.store.record(JobId::new(404)).is_none());
    assert_eq!(world.executions.succeeded.lock().unwrap().len(), 1);
}

/// Plays the execution a first-heard job gets, up to IssueToken, and finalizes as the ASL's
/// `Catch` would; the error IssueToken raised.
async fn first_attempt_of_recorded_job(world: &World) -> (StepError, Value) {
    let mut state = json!({ "job": world.record().job });
    state["limits"] = step(&world.validate(), &state).await.unwrap();
    state["plan"] = step(&world.resolve_labels(), &state).await.unwrap();
    state["attempt"] = json!({"number": 1, "try": 1, "relaunches": 0});
    let error = step(&world.issue_token(), &state).await.unwrap_err();
    state["error"] = json!({ "Error": error.name().as_str() });
    let outcome = match error.name() {
        ErrorName::JobStarted => "skipped",
        _ => "cancelled",
    };
    (error, finalize(world, &state, outcome).await.unwrap())
}

#[tokio::test]
async fn a_job_first_heard_of_running_is_recorded_and_skipped_and_its_late_queued_launches_nothing()
{
    let world = World::new();
    let webhook = world.webhook();
    // GitHub gave job 7 to the runner tasuki launched for job 99 before job 7's `queued` arrived.
    let running = workflow_job("in_progress", Some("tasuki-99-1"), None);
    assert_eq!(
        send(&webhook, running).await,
        answer(202, "signal recorded")
    );
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
    assert_eq!(
        send(&webhook, queued()).await,
        answer(202, "already started")
    );
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
    let (error, done) = first_attempt_of_recorded_job(&world).await;
    assert_eq!(error.name(), ErrorName::JobStarted);
    assert_eq!(done["state"], "skipped");
    assert!(world.registry.issued.lock().unwrap().is_empty());
    assert!(world.launcher.runs.lock().unwrap().is_empty() && world.stops().is_empty());
    assert_eq!(
        world.rows(),
        [
            "received 0",
            "planned 0",
            "skipped 0: GitHub says the job runs on runner tasuki-99-1 before tasuki launched a runner for it; none launched"
        ]
    );
}

#[tokio::test]
async fn a_job_first_heard_of_as_completed_or_cancelled_ends_without_a_runner() {
    for (conclusion, runner, state, reason) in [
        (
            "success",
            Some("gh-box-1"),
            "skipped",
            "GitHub says the job ran on runner gh-box-1 and completed (success) before tasuki launched a runner for it; none launched",
        ),
        (
            "cancelled",
            None,
            "cancelled",
            "cancelled on GitHub before a runner took it",
        ),
    ] {
        let world = World::new();
        let webhook = world.webhook();
        let completed = workflow_job("completed", runner, Some(conclusion));
        assert_eq!(send(&webhook, completed).await.0, 202);
        let (_, done) = first_attempt_of_recorded_job(&world).await;
        assert_eq!(done["state"], state);
        assert_eq!(world.last_row(), format!("{state} 0: {reason}"));
        assert!(world.registry.issued.lock().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_stopped_task_fails_the_registration_wait_with_ecs_reason() {
    let world = World::new();
    let state = world.waiting().await;
    let events = EcsEvents {
        container_name: "runner".into(),
        store: world.store.clone(),
        executions: world.executions.clone(),
    };
    let change = serde_json::from_value(json!({
        "detail-type": "ECS Task State Change",
        "detail": {
            "taskArn": state["task"]["task_arn"], "lastStatus": "STOPPED",
            "startedBy": "tasuki/7/1", "stopCode": "SpotInterruption",
            "stoppedReason": "Your Spot Task was interrupted.",
            "containers": [{"name": "runner", "exitCode": 143}]
        }
    }))
    .unwrap();
    let outcome = events.handle(change).await.unwrap();
    assert!(outcome.handled);
    let failed = world.executions.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1.name(), ErrorName::TaskStopped);
    assert_eq!(
        failed[0].1.detail(),
        "SpotInterruption: Your Spot Task was interrupted."
    );
}

// ---- the rescue sweep ---------------------------------------------------------------------------

#[tokio::test]
async fn a_job_whose_execution_never_started_is_started_by_the_sweep_once_overdue() {
    let world = World::new();
    world.received(&job(&["tasuki"])).await;
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.overdue, 0, "not before its deadline");
    assert_eq!(emitted(&world), [("OldestQueuedSeconds", 0.0, None)]);
    world.clock.advance(301);
    let dry = world.rescue().sweep(true).await.unwrap();
    assert_eq!((dry.overdue, dry.jobs[0].action), (1, "start-execution"));
    assert!(
        world.executions.started.lock().unwrap().is_empty(),
        "a dry run changes nothing"
    );
    assert_eq!(world.rows(), ["received 0"]);
    assert!(emitted(&world).is_empty(), "a dry run reports no action");
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "start-execution");
    assert_eq!(
        emitted(&world),
        [
            ("RescueActions", 1.0, Some("start-execution")),
            ("OldestQueuedSeconds", 301.0, None),
        ]
    );
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
    assert!(world
        .last_row()
        .starts_with("rescued 0: rescue: the job was recorded"));
    // The row moved the deadline on: the next sweep leaves the job to its execution.
    assert_eq!(world.rescue().sweep(false).await.unwrap().overdue, 0);
}

#[tokio::test]
async fn lost_deliveries_are_recovered_from_github_and_answer_the_waiting_execution() {
    let world = World::new();
    world.waiting().await;
    world.github_says(completed_on_our_runner());
    world.clock.advance(301);
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!((sweep.overdue, sweep.jobs[0].action), (1, "signal"));
    let record = world.record();
    assert_eq!(record.signals.conclusion, Some(Conclusion::Success));
    assert_eq!(record.signals.registered, registered_value());
    let succeeded = world.executions.succeeded.lock().unwrap().clone();
    assert_eq!(
        succeeded.len(),
        1,
        "the armed registration wait was answered"
    );
    assert_eq!(succeeded[0].0, TaskToken::new("tok-1"));
    assert!(world
        .last_row()
        .contains("GitHub says the job runs on tasuki-7-1 and the job completed (success)"));
}

#[tokio::test]
async fn an_overdue_job_github_has_not_started_is_left_and_a_second_sweep_acts_no_more() {
    let world = World::new();
    world.waiting().await;
    world.clock.advance(601);
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "leave");
    assert!(!world.rows().iter().any(|r| r.starts_with("rescued")));
    // A job left is checked again one grace period later, not every minute.
    assert_eq!(world.rescue().sweep(false).await.unwrap().overdue, 0);
    world.clock.advance(301);
    // GitHub started it meanwhile: one sweep records it and answers the wait; the next finds
    // nothing to do (the rescue row moved the deadline on, and the signal is already recorded).
    let running = JobOnGitHub::Running(registered_value().unwrap());
    world.github_says(running);
    let (first, second) = (world.rescue(), world.rescue());
    let (a, b) = tokio::join!(first.sweep(false), second.sweep(false));
    let actions: Vec<&str> = [a.unwrap(), b.unwrap()]
        .iter()
        .flat_map(|sweep| sweep.jobs.iter().map(|j| j.action))
        .collect();
    assert_eq!(actions, ["signal"]);
    assert_eq!(world.executions.succeeded.lock().unwrap().len(), 1);
    let rescued: Vec<String> = world
        .rows()
        .into_iter()
        .filter(|r| r.starts_with("rescued"))
        .collect();
    assert_eq!(rescued.len(), 1, "{rescued:?}");
}

// ---- lost `queued` deliveries -------------------------------------------------------------------

/// A `workflow_job`/`queued` delivery attempt `id` (delivery `guid`) at `at`, answered `status`.
fn queued_attempt(id: u64, guid: &str, at: u64, status: u16) -> DeliveryAttempt {
    DeliveryAttempt {
        id,
        guid: guid.into(),
        delivered_at_epoch: at,
        redelivery: id > 1,
        status_code: status,
        event: "workflow_job".into(),
        action: Some("queued".into()),
    }
}

#[tokio::test]
async fn a_lost_queued_delivery_is_redelivered_once_per_sweep_and_never_for_a_recorded_job() {
    let world = World::new();
    let now = world.clock.now().epoch_seconds;
    *world.deliveries.attempts.lock().unwrap() = vec![queued_attempt(1, "g-7", now - 60, 502)];
    world
        .deliveries
        .jobs
        .lock()
        .unwrap()
        .insert(1, job(&["tasuki"]));
    let dry = world.rescue().sweep(true).await.unwrap();
    assert_eq!(dry.lost_queued.len(), 1);
    assert_eq!(dry.lost_queued[0].action, "redeliver");
    assert!(
        world.deliveries.redelivered.lock().unwrap().is_empty(),
        "a dry run changes nothing"
    );
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.lost_queued[0].job_id, Some(JobId::new(JOB)));
    assert!(sweep.lost_queued[0]
        .reason
        .contains("g-7 never reached the webhook (1 failed attempt(s))"));
    assert_eq!(*world.deliveries.redelivered.lock().unwrap(), [1]);
    // The redelivery arrived: the job is recorded, and the next sweep leaves it.
    world.received(&job(&["tasuki"])).await;
    let again = world.rescue().sweep(false).await.unwrap();
    assert_eq!(again.lost_queued[0].action, "leave");
    assert_eq!(world.deliveries.redelivered.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_lost_queued_delivery_of_a_job_github_already_ran_or_not_ours_is_left() {
    let world = World::new();
    let now = world.clock.now().epoch_seconds;
    *world.deliveries.attempts.lock().unwrap() = vec![
        queued_attempt(1, "g-7", now - 60, 0),
        queued_attempt(2, "g-other", now - 50, 0),
    ];
    world.deliveries.jobs.lock().unwrap().extend([
        (1, job(&["tasuki"])),
        (
            2,
            JobRef {
                job_id: JobId::new(8),
                ..job(&["self-hosted"])
            },
        ),
    ]);
    world.github_says(completed_on_our_runner());
    let sweep = world.rescue().sweep(false).await.unwrap();
    let reasons: Vec<_> = sweep
        .lost_queued
        .iter()
        .map(|r| (r.action, r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("leave", "GitHub says the job is finished: no runner needed"),
            ("leave", "no tasuki label")
        ]
    );
    assert!(world.deliveries.redelivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreadable_delivery_log_is_reported_and_the_job_rescue_still_happens() {
    let world = World::new();
    world.received(&job(&["tasuki"])).await;
    world.clock.advance(301);
    *world.deliveries.fail_next.lock().unwrap() = Some(StepError::Throttled(
        "GET /app/hook/deliveries: HTTP 429".into(),
    ));
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "start-execution");
    assert_eq!(sweep.lost_queued.len(), 1);
    assert_eq!(sweep.lost_queued[0].action, "error");
    assert!(sweep.lost_queued[0].reason.contains("HTTP 429"));
}

#[tokio::test]
async fn a_sweep_that_loses_a_race_with_a_callback_leaves_the_job_to_it_and_acts_on_nothing() {
    let world = World::new();
    world.waiting().await;
    world.github_says(completed_on_our_runner());
    world.clock.advance(301);
    // The webhook's `completed` lands between the sweep's read and its rescue row.
    world.store.race_next_commit(|record| {
        record.signals.conclusion = Some(Conclusion::Success);
    });
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "leave");
    assert!(sweep.jobs[0]
        .reason
        .starts_with("changed since the sweep read it (now waiting-for-registration)"));
    assert!(!world.rows().iter().any(|r| r.starts_with("rescued")));
    assert!(
        world.executions.succeeded.lock().unwrap().is_empty(),
        "the sweep answered nothing: the callback's owner does"
    );
}

#[tokio::test]
async fn a_job_whose_execution_ended_unfinished_is_failed_and_released_by_the_sweep() {
    let world = World::new();
    let state = world.waiting().await;
    world.clock.advance(301);
    world.execution_ended(ExecutionStatus::Aborted);
    let dry = world.rescue().sweep(true).await.unwrap();
    assert_eq!(dry.jobs[0].action, "finish");
    assert!(world.stops().is_empty(), "a dry run changes nothing");
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "finish");
    assert_eq!(world.record().position.state, JobState::Failed);
    let reason = "rescue: its execution ended ABORTED without finishing the job; its task is stopped and its runner deleted";
    assert_eq!(world.last_row(), format!("failed 1: {reason}"));
    assert_eq!(
        world.stops(),
        [(
            state["task"]["task_arn"].as_str().unwrap().to_string(),
            reason.to_string()
        )]
    );
    assert_eq!(world.deleted(), [state["runner"]["id"].as_u64().unwrap()]);
    assert_eq!(
        world.rescue().sweep(false).await.unwrap().overdue,
        0,
        "finished: not overdue"
    );
}

#[tokio::test]
async fn a_job_whose_execution_ended_while_it_runs_on_its_runner_is_failed_but_not_killed() {
    let world = World::new();
    world.waiting().await;
    world.github_says(JobOnGitHub::Running(registered_value().unwrap()));
    world.clock.advance(301);
    world.execution_ended(ExecutionStatus::Failed);
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "finish");
    assert!(world
        .last_row()
        .ends_with("its runner runs the job and is left to finish it"));
    assert!(world.stops().is_empty() && world.deleted().is_empty());
}

// ---- runner tasks nothing else will stop ----------------------------------------------------------

fn running_task(arn: &str, attempt: u32) -> RunningTask {
    RunningTask {
        task_arn: arn.into(),
        started_by: StartedBy {
            job: JobId::new(JOB),
            attempt: Attempt::new(attempt).unwrap(),
        },
    }
}

#[tokio::test]
async fn a_task_of_a_finished_job_is_stopped_and_its_idle_runner_deleted_but_a_busy_one_runs_on() {
    let world = World::new();
    world.waiting().await;
    *world.launcher.running.lock().unwrap() = vec![running_task("arn:task/1", 1)];
    let owned = world.rescue().sweep(false).await.unwrap();
    assert!(
        owned.orphans.is_empty(),
        "the current attempt's task is its execution's"
    );
    world
        .lifecycle()
        .transition(
            JobId::new(JOB),
            Happening::Fail { reason: "x".into() },
            Effects::default(),
        )
        .await
        .unwrap();
    // Its runner took another job (theft): it runs on.
    world.registry.runners.lock().unwrap().insert(
        "tasuki-7-1".into(),
        RunnerOnGitHub {
            id: 100,
            busy: true,
        },
    );
    let busy = world.rescue().sweep(false).await.unwrap();
    assert_eq!(busy.orphans[0].action, "leave");
    assert!(world.stops().is_empty());
    // Idle now: stopped, and its runner deleted.
    world.registry.runners.lock().unwrap().insert(
        "tasuki-7-1".into(),
        RunnerOnGitHub {
            id: 100,
            busy: false,
        },
    );
    let dry = world.rescue().sweep(true).await.unwrap();
    assert_eq!(dry.orphans[0].action, "stop");
    assert!(world.stops().is_empty(), "a dry run changes nothing");
    let idle = world.rescue().sweep(false).await.unwrap();
    let reason = "rescue: its job is failed and its runner tasuki-7-1 runs no job: stopped";
    assert_eq!(
        (idle.orphans[0].action, idle.orphans[0].reason.as_str()),
        ("stop", reason)
    );
    assert_eq!(
        world.stops(),
        [("arn:task/1".to_string(), reason.to_string())]
    );
    assert_eq!(world.deleted(), [100]);
    assert!(
        world
            .rescue()
            .sweep(false)
            .await
            .unwrap()
            .orphans
            .is_empty(),
        "stopped: not listed"
    );
}

#[tokio::test]
async fn a_task_of_an_earlier_attempt_is_suspect_and_one_of_an_unknown_job_is_left() {
    let world = World::new();
    world.waiting().await;
    let mut unknown = running_task("arn:task/9", 1);
    unknown.started_by.job = JobId::new(404);
    *world.launcher.running.lock().unwrap() = vec![running_task("arn:task/0", 1), unknown];
    // The job moved on to attempt 2, as CleanupAttempt and IssueToken have it.
    let lifecycle = world.lifecycle();
    let first = Attempt::new(1).unwrap();
    for happening in [
        Happening::AttemptFailed {
            attempt: first,
            reason: "x".into(),
        },
        Happening::Launch {
            attempt: first.next(),
            candidate: "c".into(),
        },
    ] {
        lifecycle
            .transition(JobId::new(JOB), happening, Effects::default())
            .await
            .unwrap();
    }
    let sweep = world.rescue().sweep(false).await.unwrap();
    let actions: Vec<_> = sweep
        .orphans
        .iter()
        .map(|o| (o.action, o.reason.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("stop", "rescue: its job moved on to attempt 2 and its runner tasuki-7-1 runs no job: stopped"),
            ("leave", "its job is not recorded"),
        ]
    );
}

// ---- Spot interruption and re-run ---------------------------------------------------------------

fn spot_stop(attempt: u32) -> Signal {
    Signal::Stopped(Stopped {
        attempt: Attempt::new(attempt).unwrap(),
        reason: "SpotInterruption: Your Spot Task was interrupted.".into(),
        clean_exit: false,
    })
}

/// The job Spot took mid-job, finalized as the ASL does after the completion wait failed.
async fn spot_interrupted(world: &World) -> Value {
    let mut state = running(world).await;
    world
        .store
        .signal(JobId::new(JOB), &spot_stop(1))
        .await
        .unwrap();
    state["error"] = caught(
        "TaskStopped",
        "SpotInterruption: Your Spot Task was interrupted.",
    );
    finalize(world, &state, "failed").await.unwrap()
}

#[tokio::test]
async fn a_job_spot_took_mid_job_fails_with_the_stop_reason_unless_it_opted_in_to_a_rerun() {
    let world = World::new();
    let done = spot_interrupted(&world).await;
    assert_eq!(done["state"], "failed");
    world.clock.advance(3600);
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.overdue, 0, "nothing left for the sweep");
    assert!(world.registry.rerun.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_opted_in_job_spot_took_is_rerun_once_its_run_completes_and_the_rerun_plans_no_spot() {
    let world = World::with_labels(&["tasuki", "spot=rerun"]);
    let done = spot_interrupted(&world).await;
    assert_eq!(done["state"], "interrupted");
    assert!(world.last_row().starts_with(
        "interrupted 1: TaskStopped: SpotInterruption: Your Spot Task was interrupted.; Spot took its runner mid-job"
    ));
    assert_eq!(
        world.stops().len(),
        1,
        "its task is released as any finished attempt's"
    );

    // Its workflow run is still running (other jobs): GitHub would refuse a re-run; none is asked.
    world.clock.advance(301);
    let sweep = world.rescue().sweep(false).await.unwrap();
    assert_eq!(sweep.jobs[0].action, "leave");
    assert!(sweep.jobs[0].reason.contains("has not completed yet"));
    assert!(world.registry.rerun.lock().unwrap().is_empty());

    world.registry.completed_runs.lock().unwrap().insert(99);
    world.clock.advance(301);
    let (first, second) = (world.rescue(), world.rescue());
    let (a, b) = tokio::join!(first.sweep(true), second.sweep(false));
    assert_eq!(
        a.unwrap().jobs[0].action,
        "rerun",
        "a dry run says what it would do"
    );
    assert_eq!(b.unwrap().jobs[0].action, "rerun");
    assert_eq!(
        *world.registry.rerun.lock().unwrap(),
        [JobId::new(JOB)],
        "asked once"
    );
    assert_eq!(world.record().position.state, JobState::Rerun);
    assert_eq!(
        world.last_row(),
        "rerun 1: GitHub re-runs the job in its run's next attempt, without Spot"
    );
    world.clock.advance(3600);
    assert_eq!(world.rescue().sweep(false).await.unwrap().overdue, 0);

    // GitHub's re-run: a new job in the run's next attempt, same name; no Spot candidate.
    let rerun = JobRef {
        job_id: JobId::new(JOB + 1),
        run_attempt: 2,
        ..job(&["tasuki", "spot=rerun"])
    };
    let plan = world.plan_of(&rerun).await;
    assert!(
        !plan.contains("fargate-spot") && plan.contains("fargate"),
        "{plan}"
    );
    // Another run's job of that name still gets Spot.
    let other = JobRef {
        job_id: JobId::new(JOB + 2),
        run_id: 100,
        run_attempt: 2,
        ..job(&["tasuki", "spot=rerun"])
    };
    let plan = world.plan_of(&other).await;
    assert!(plan.contains("fargate-spot"), "{plan}");
}

#[tokio::test]
async fn an_opted_in_job_that_finished_well_within_the_stop_grace_is_not_rerun() {
    let world = World::with_labels(&["tasuki", "spot=rerun"]);
    let mut state = running(&world).await;
    world
        .store
        .signal(JobId::new(JOB), &spot_stop(1))
        .await
        .unwrap();
    state["completion"] = json!({"conclusion": "success"});
    let done = finalize(&world, &state, "completed").await.unwrap();
    assert_eq!(done["state"], "completed");
}

#[tokio::test]
async fn github_reporting_the_lost_runner_before_ecs_still_finds_the_spot_interruption_on_the_task()
{
    let world = World::with_labels(&["tasuki", "spot=rerun"]);
    let mut state = running(&world).await;
    // No stop event yet; ECS already marks the task as stopping for Spot (the two-minute warning).
    let task_arn = state["task"]["task_arn"].as_str().unwrap().to_string();
    world.launcher.stop_reasons.lock().unwrap().insert(
        task_arn,
        "SpotInterruption: Your Spot Task was interrupted.".into(),
    );
    state["completion"] = json!({"conclusion": "failure"});
    let done = finalize(&world, &state, "completed").await.unwrap();
    assert_eq!(done["state"], "interrupted");
    assert!(world
        .last_row()
        .starts_with("interrupted 1: GitHub concluded failure; Spot took its runner mid-job"));
    // A task ECS stops for another reason is a plain failure.
    let world = World::with_labels(&["tasuki", "spot=rerun"]);
    let mut state = running(&world).await;
    state["completion"] = json!({"conclusion": "failure"});
    let done = finalize(&world, &state, "completed").await.unwrap();
    assert_eq!(done["state"], "completed");
}
