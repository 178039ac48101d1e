//! GitHub `workflow_job` events and the small job reference the state machine carries.

use crate::domain::ids::JobId;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowJobAction {
    Queued,
    Waiting,
    InProgress,
    Completed,
    #[serde(other)]
    Other,
}

/// The parts of a `workflow_job` webhook tasuki reads.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: WorkflowJobAction,
    pub workflow_job: WorkflowJob,
    pub repository: Repository,
    pub installation: Option<Installation>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    pub id: JobId,
    pub run_id: u64,
    #[serde(default = "first_attempt")]
    pub run_attempt: u32,
    pub workflow_name: Option<String>,
    pub name: String,
    pub labels: Vec<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub conclusion: Option<Conclusion>,
}

/// How a job ended, in the words of the `workflow_job.completed` webhook schema
/// (`@octokit/openapi-webhooks`, `webhook-workflow-job-completed`: success, failure, skipped,
/// cancelled, action_required, neutral, timed_out). A value GitHub adds later is `unknown`, not a
/// lost completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conclusion {
    Success,
    Failure,
    Skipped,
    Cancelled,
    ActionRequired,
    Neutral,
    TimedOut,
    #[serde(other)]
    Unknown,
}

impl Conclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Skipped => "skipped",
            Conclusion::Cancelled => "cancelled",
            Conclusion::ActionRequired => "action_required",
            Conclusion::Neutral => "neutral",
            Conclusion::TimedOut => "timed_out",
            Conclusion::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn first_attempt() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct Repository {
    pub full_name: String,
    pub private: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Installation {
    pub id: u64,
}

/// What the state machine needs to know about a job: ids, not payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: JobId,
    pub run_id: u64,
    pub run_attempt: u32,
    pub repository: String,
    pub private: bool,
    pub workflow: String,
    pub job_name: String,
    pub labels: Vec<String>,
    pub installation_id: u64,
}

impl JobRef {
    pub fn from_event(event: &WorkflowJobEvent) -> Option<Self> {
        let job = &event.workflow_job;
        Some(Self {
            job_id: job.id,
            run_id: job.run_id,
            run_attempt: job.run_attempt,
            repository: event.repository.full_name.clone(),
            private: event.repository.private,
            workflow: job.workflow_name.clone().unwrap_or_default(),
            job_name: job.name.clone(),
            labels: job.labels.clone(),
            installation_id: event.installation.as_ref()?.id,
        })
    }

    /// Step Functions execution name: unique per state machine for 90 days, so a redelivery starts nothing.
    pub fn execution_name(&self) -> String {
        format!("{}-{}", self.job_id, self.run_attempt)
    }

    /// The execution's ARN: it follows from the state machine's ARN and the execution name.
    pub fn execution_arn(&self, state_machine_arn: &str) -> String {
        format!(
            "{}:{}",
            state_machine_arn.replacen(":stateMachine:", ":execution:", 1),
            self.execution_name()
        )
    }

    pub fn owner_and_name(&self) -> (&str, &str) {
        self.repository
            .split_once('/')
            .unwrap_or((&self.repository, ""))
    }

    /// What names this job in every attempt of its workflow run: a re-run is a new job (new id,
    /// next run attempt) with the same run and name (matrix jobs have names of their own).
    pub fn rerun_key(&self) -> RerunKey {
        RerunKey(format!(
            "{}#{}#{}",
            self.repository, self.run_id, self.job_name
        ))
    }
}

/// The Step Functions console page of an execution (its graph, events and input/output), for the
/// execution ARN's partition and region; `None` for what is not an execution ARN.
pub fn console_url(execution_arn: &str) -> Option<String> {
    let mut parts = execution_arn.splitn(7, ':');
    let (arn, partition, service, region) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (_account, kind) = (parts.next()?, parts.next()?);
    if arn != "arn" || service != "states" || kind != "execution" || region.is_empty() {
        return None;
    }
    let host = match partition {
        "aws" => format!("{region}.console.aws.amazon.com"),
        "aws-cn" => format!("{region}.console.amazonaws.cn"),
        "aws-us-gov" => "console.amazonaws-us-gov.com".to_string(),
        _ => return None,
    };
    Some(format!(
        "https://{host}/states/home?region={region}#/v2/executions/details/{execution_arn}"
    ))
}

/// The job of a workflow run that Spot interrupted and tasuki re-ran: later attempts of it avoid
/// Spot (`JobRef::rerun_key`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RerunKey(String);

impl RerunKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A private repository's job with the given labels, as the domain's unit tests use it.
    pub(crate) fn job_ref(labels: &[&str]) -> JobRef {
        JobRef {
            job_id: JobId::new(7),
            run_id: 1,
            run_attempt: 1,
            repository: "octo-org/app".into(),
            private: true,
            workflow: "CI".into(),
            job_name: "build".into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            installation_id: 1,
        }
    }

    #[test]
    fn the_console_url_follows_the_executions_partition_and_region() {
        let arn = "arn:aws:states:eu-west-1:123456789012:execution:tasuki-runner-job:7-1";
        assert_eq!(
            console_url(arn).as_deref(),
            Some("https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1:123456789012:execution:tasuki-runner-job:7-1")
        );
        let cn = console_url("arn:aws-cn:states:cn-north-1:1:execution:sm:7-1").unwrap();
        assert!(cn
            .starts_with("https://cn-north-1.console.amazonaws.cn/states/home?region=cn-north-1#"));
        let gov = console_url("arn:aws-us-gov:states:us-gov-west-1:1:execution:sm:7-1").unwrap();
        assert!(gov
            .starts_with("https://console.amazonaws-us-gov.com/states/home?region=us-gov-west-1#"));
        let job = job_ref(&["tasuki"]);
        let from_job =
            console_url(&job.execution_arn("arn:aws:states:us-east-1:1:stateMachine:sm")).unwrap();
        assert!(from_job.ends_with(":execution:sm:7-1"), "{from_job}");
        assert_eq!(
            console_url("arn:aws:states:us-east-1:1:stateMachine:sm"),
            None
        );
        assert_eq!(console_url("not an arn"), None);
    }

    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../../tests/fixtures/webhooks/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_workflow_job_fixture_parses() {
        for (name, action) in [
            ("workflow_job.queued.1.json", WorkflowJobAction::Queued),
            ("workflow_job.queued.2.json", WorkflowJobAction::Queued),
            ("workflow_job.waiting.1.json", WorkflowJobAction::Waiting),
            (
                "workflow_job.in_progress.1.json",
                WorkflowJobAction::InProgress,
            ),
            (
                "workflow_job.in_progress.3.json",
                WorkflowJobAction::InProgress,
            ),
            (
                "workflow_job.completed.1.json",
                WorkflowJobAction::Completed,
            ),
            (
                "workflow_job.completed.2.json",
                WorkflowJobAction::Completed,
            ),
        ] {
            let event: WorkflowJobEvent = serde_json::from_slice(&fixture(name)).expect(name);
            assert_eq!(event.action, action, "{name}");
        }
    }

    #[test]
    fn a_queued_fixture_becomes_a_job_ref() {
        let event: WorkflowJobEvent =
            serde_json::from_slice(&fixture("workflow_job.queued.2.json")).unwrap();
        let job = JobRef::from_event(&event).unwrap();
        assert_eq!(job.job_id, JobId::new(12877621891));
        assert_eq!(job.labels, ["self-hosted", "k8s"]);
        assert_eq!(job.installation_id, 23154469);
        assert_eq!(job.execution_name(), "12877621891-1");
        assert_eq!(
            job.execution_arn("arn:aws:states:us-east-1:1:stateMachine:sm"),
            "arn:aws:states:us-east-1:1:execution:sm:12877621891-1"
        );
        assert_eq!(
            job.owner_and_name(),
            ("lineville", "elastic-machines-testing")
        );
    }

    #[test]
    fn completed_fixtures_carry_runner_and_conclusion() {
        let event: WorkflowJobEvent =
            serde_json::from_slice(&fixture("workflow_job.completed.1.json")).unwrap();
        assert!(event.workflow_job.conclusion.is_some());
        let conclusions: Vec<Conclusion> =
            serde_json::from_str(r#"["success", "cancelled", "timed_out", "stale"]"#).unwrap();
        assert_eq!(
            conclusions,
            [
                Conclusion::Success,
                Conclusion::Cancelled,
                Conclusion::TimedOut,
                Conclusion::Unknown
            ]
        );
        assert!(event.workflow_job.runner_name.is_some());
    }
}
