//! The execution's state document and what each step reads of it.
//!
//! The ASL builds one JSON document per execution (`ResultPath` puts each step's output in it);
//! each step's input type names only the fields that step needs, and none of them is optional
//! when the graph always provides it: a missing one fails to parse as `MalformedInput`, a
//! contract bug the ASL does not retry.

use crate::domain::config::Timeouts;
use crate::domain::ids::{Attempt, RunnerName};
use crate::domain::job::JobRef;
use crate::domain::lifecycle::JobState;
use crate::domain::outcome::{CaughtError, Outcome};
use crate::domain::plan::Candidate;
use crate::domain::rounds::{self, NextAttempt, Progress, Try};
use crate::domain::waits::{Completion, Registered, TaskToken};
use serde::{Deserialize, Serialize};

/// The whole state document, as the ASL builds it: one field per `ResultPath` (the contract test
/// checks them against `statemachines/runner-job.asl.json`). Finalize reads it, as it is reached
/// from every step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionState {
    pub job: JobRef,
    pub limits: Option<Limits>,
    pub plan: Option<LaunchPlan>,
    pub attempt: Option<Progress>,
    pub runner: Option<IssuedRunner>,
    pub task: Option<LaunchedTask>,
    pub registration: Option<Registered>,
    pub completion: Option<Completion>,
    pub next: Option<AfterCleanup>,
    pub error: Option<CaughtError>,
    pub cleanup_error: Option<CaughtError>,
    pub finalize_error: Option<CaughtError>,
    #[serde(rename = "final")]
    pub finalized: Option<Finalized>,
}

/// `$.limits`: the waits' timeouts (`TimeoutSecondsPath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub registration_seconds: u32,
    pub job_seconds: u32,
}

impl From<Timeouts> for Limits {
    fn from(t: Timeouts) -> Self {
        Self {
            registration_seconds: t.registration_seconds,
            job_seconds: t.job_seconds,
        }
    }
}

/// `$.plan`: the launch candidates, never empty (a job nothing can serve is refused instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PlanDocument")]
pub struct LaunchPlan {
    candidates: Vec<Candidate>,
    count: u32,
}

#[derive(Deserialize)]
struct PlanDocument {
    candidates: Vec<Candidate>,
    count: u32,
}

impl TryFrom<PlanDocument> for LaunchPlan {
    type Error = String;
    fn try_from(plan: PlanDocument) -> Result<Self, Self::Error> {
        Self::new(plan.candidates)
            .filter(|p| p.count == plan.count)
            .ok_or_else(|| {
                "a launch plan has at least one candidate, and `count` candidates".to_string()
            })
    }
}

impl LaunchPlan {
    /// `None` for no candidates.
    pub fn new(candidates: Vec<Candidate>) -> Option<Self> {
        let count = u32::try_from(candidates.len()).ok().filter(|&n| n > 0)?;
        Some(Self { candidates, count })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The candidate of a try: tries beyond the plan reuse it round after round.
    pub fn candidate(&self, try_: Try) -> &Candidate {
        &self.candidates[rounds::candidate_index(try_, self.count)]
    }
}

/// `$.runner`: the runner registered for this attempt, its credential only as ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedRunner {
    pub name: RunnerName,
    pub id: u64,
    /// The JIT config sealed for this job (`runner_contract`); only the job's task can open it.
    pub jit_config_sealed: String,
    /// The KMS grant that lets the runner task role open it; revoked when the attempt ends.
    pub grant_id: String,
}

/// `$.task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchedTask {
    pub task_arn: String,
}

/// `$.next`: what follows a failed attempt — unless GitHub says the job runs after all (its
/// `in_progress` delivery was lost): then `running` names the runner, and the execution goes on to
/// wait for the job's completion (`next` is not used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfterCleanup {
    #[serde(flatten)]
    pub next: NextAttempt,
    pub running: Option<Registered>,
}

/// `$.final`: Finalize's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalized {
    pub state: JobState,
    pub reason: Option<String>,
}

/// The payload of a plain Task state: `{"state.$": "$"}`.
#[derive(Debug, Clone, Deserialize)]
pub struct StepInput<S> {
    pub state: S,
}

/// The payload of a `.waitForTaskToken` state: the state and `$$.Task.Token`.
#[derive(Debug, Clone, Deserialize)]
pub struct WaitInput<S> {
    pub state: S,
    pub token: TaskToken,
}

/// Finalize's payload: the state and how the graph got there.
#[derive(Debug, Clone, Deserialize)]
pub struct FinalizeInput {
    pub state: ExecutionState,
    pub outcome: Outcome,
}

/// Validate, ResolveLabels: a job just received.
#[derive(Debug, Clone, Deserialize)]
pub struct NewJob {
    pub job: JobRef,
}

/// IssueToken: an attempt about to start.
#[derive(Debug, Clone, Deserialize)]
pub struct AttemptStart {
    pub job: JobRef,
    pub plan: LaunchPlan,
    pub attempt: Progress,
}

/// RunTask: a runner issued, its task not yet started.
#[derive(Debug, Clone, Deserialize)]
pub struct Issued {
    pub job: JobRef,
    pub plan: LaunchPlan,
    pub attempt: Progress,
    pub runner: IssuedRunner,
}

/// WaitForRegistration: the task started.
#[derive(Debug, Clone, Deserialize)]
pub struct Launched {
    pub job: JobRef,
    pub attempt: Progress,
    pub runner: IssuedRunner,
    pub task: LaunchedTask,
}

/// Confirm: GitHub gave the job to a runner.
#[derive(Debug, Clone, Deserialize)]
pub struct Registering {
    pub job: JobRef,
    pub attempt: Progress,
    pub registration: Registered,
}

/// CleanupAttempt: RunTask failed (no task) or the wait for registration did (task started).
#[derive(Debug, Clone, Deserialize)]
pub struct FailedAttempt {
    pub job: JobRef,
    pub plan: LaunchPlan,
    pub attempt: Progress,
    pub runner: IssuedRunner,
    pub task: Option<LaunchedTask>,
    pub error: CaughtError,
}

/// What a step's span names: the job (and so its run attempt and execution), the launch attempt
/// once there is one, and the candidate it tries once the plan is known.
pub trait Traced {
    fn job(&self) -> &JobRef;
    fn attempt(&self) -> Option<Attempt>;
    fn candidate(&self) -> Option<String> {
        None
    }
}

macro_rules! traced {
    ($($state:ty => |$s:ident| $attempt:expr, $candidate:expr;)*) => {$(
        impl Traced for $state {
            fn job(&self) -> &JobRef {
                &self.job
            }
            fn attempt(&$s) -> Option<Attempt> {
                $attempt
            }
            fn candidate(&$s) -> Option<String> {
                $candidate
            }
        }
    )*};
}

traced! {
    NewJob => |self| None, None;
    AttemptStart => |self| Some(self.attempt.number), Some(self.plan.candidate(self.attempt.try_).to_string());
    Issued => |self| Some(self.attempt.number), Some(self.plan.candidate(self.attempt.try_).to_string());
    Launched => |self| Some(self.attempt.number), None;
    Registering => |self| Some(self.attempt.number), None;
    FailedAttempt => |self| Some(self.attempt.number), Some(self.plan.candidate(self.attempt.try_).to_string());
    ExecutionState => |self| self.attempt.map(|a| a.number),
        self.plan.as_ref().zip(self.attempt).map(|(p, a)| p.candidate(a.try_).to_string());
}

/// A wrapper's span is its state's.
macro_rules! traced_through {
    ($($wrapper:ty;)*) => {$(
        impl<S: Traced> Traced for $wrapper {
            fn job(&self) -> &JobRef {
                self.state.job()
            }
            fn attempt(&self) -> Option<Attempt> {
                self.state.attempt()
            }
            fn candidate(&self) -> Option<String> {
                self.state.candidate()
            }
        }
    )*};
}

traced_through! {
    StepInput<S>;
    WaitInput<S>;
}

impl Traced for FinalizeInput {
    fn job(&self) -> &JobRef {
        self.state.job()
    }
    fn attempt(&self) -> Option<Attempt> {
        self.state.attempt()
    }
    fn candidate(&self) -> Option<String> {
        self.state.candidate()
    }
}
