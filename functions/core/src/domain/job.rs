//! GitHub `workflow_job` events and the small job reference the state machine carries.

use serde::{Deserialize, Serialize};

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
    pub id: u64,
    pub run_id: u64,
    #[serde(default = "first_attempt")]
    pub run_attempt: u32,
    pub workflow_name: Option<String>,
    pub name: String,
    pub labels: Vec<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub conclusion: Option<String>,
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
    pub job_id: u64,
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

    pub fn owner_and_name(&self) -> (&str, &str) {
        self.repository
            .split_once('/')
            .unwrap_or((&self.repository, ""))
    }
}

/// Runner names carry the job and attempt they were launched for.
pub fn runner_name(job_id: u64, attempt: u32) -> String {
    format!("tasuki-{job_id}-{attempt}")
}

/// The job and attempt a runner name was launched for, if it is one of ours.
pub fn parse_runner_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("tasuki-")?;
    let (job, attempt) = rest.split_once('-')?;
    Some((job.parse().ok()?, attempt.parse().ok()?))
}

/// ECS `startedBy`: ties a task back to its job and attempt.
pub fn started_by(job_id: u64, attempt: u32) -> String {
    format!("tasuki/{job_id}/{attempt}")
}

pub fn parse_started_by(value: &str) -> Option<(u64, u32)> {
    let mut parts = value.strip_prefix("tasuki/")?.split('/');
    let job = parts.next()?.parse().ok()?;
    let attempt = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((job, attempt))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
        assert_eq!(job.job_id, 12877621891);
        assert_eq!(job.labels, ["self-hosted", "k8s"]);
        assert_eq!(job.installation_id, 23154469);
        assert_eq!(job.execution_name(), "12877621891-1");
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
        assert!(event.workflow_job.runner_name.is_some());
    }

    #[test]
    fn runner_names_and_started_by_round_trip() {
        assert_eq!(parse_runner_name(&runner_name(42, 3)), Some((42, 3)));
        assert_eq!(parse_runner_name("GitHub Actions 5"), None);
        assert_eq!(parse_runner_name("tasuki-x-1"), None);
        assert_eq!(parse_started_by(&started_by(42, 3)), Some((42, 3)));
        assert_eq!(parse_started_by("tasuki/42/3/4"), None);
        assert_eq!(parse_started_by("ecs-svc/123"), None);
    }
}
