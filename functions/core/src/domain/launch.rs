//! The RunTask request for an attempt, fully decided here: which candidate, what the runner
//! container is told (the credential only as ciphertext), how the task is tagged, and whether it
//! fits ECS's limit on overrides.

use crate::domain::config::Config;
use crate::domain::ids::{Attempt, RunnerName, StartedBy};
use crate::domain::job::JobRef;
use crate::domain::plan::{Candidate, CapacityProvider};
use crate::domain::tags::TagValue;
use crate::error::StepError;
use crate::runner_contract::env;

/// An ECS RunTask, fully decided by the pure planner.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub cluster: String,
    pub task_definition: String,
    pub capacity: CapacityProvider,
    pub subnet: String,
    pub security_groups: Vec<String>,
    pub cpu_units: u32,
    pub memory_mib: u32,
    pub container_name: String,
    pub environment: Vec<(String, String)>,
    pub started_by: StartedBy,
    pub tags: Vec<(String, String)>,
}

/// ECS's limit on RunTask `overrides`: "A total of 8192 characters are allowed for overrides. This
/// limit includes the JSON formatting characters of the override structure."
/// (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html>)
pub const MAX_OVERRIDES_CHARS: usize = 8192;

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Overrides<'a> {
    container_overrides: [ContainerOverride<'a>; 1],
    cpu: String,
    memory: String,
}

#[derive(serde::Serialize)]
struct ContainerOverride<'a> {
    name: &'a str,
    environment: Vec<KeyValuePair<'a>>,
}

#[derive(serde::Serialize)]
struct KeyValuePair<'a> {
    name: &'a str,
    value: &'a str,
}

impl LaunchRequest {
    /// The `overrides` structure as RunTask receives it (what the 8 192-character limit counts).
    pub fn overrides_json(&self) -> String {
        let overrides = Overrides {
            container_overrides: [ContainerOverride {
                name: &self.container_name,
                environment: self
                    .environment
                    .iter()
                    .map(|(name, value)| KeyValuePair { name, value })
                    .collect(),
            }],
            cpu: self.cpu_units.to_string(),
            memory: self.memory_mib.to_string(),
        };
        serde_json::to_string(&overrides).unwrap_or_default()
    }
}

/// What the attempt launches: its candidate, and the runner issued for it.
pub struct Launch<'a> {
    pub job: &'a JobRef,
    pub attempt: Attempt,
    pub candidate: &'a Candidate,
    pub runner: RunnerName,
    pub jit_config_sealed: &'a str,
}

/// The RunTask request for an attempt; the credential goes only as ciphertext.
pub fn launch_request(config: &Config, launch: &Launch) -> Result<LaunchRequest, StepError> {
    let Launch {
        job,
        attempt,
        candidate,
        runner,
        jit_config_sealed,
    } = launch;
    let job_id = job.job_id.to_string();
    let tag = |value: &str| TagValue::sanitized(value).as_str().to_string();
    let request = LaunchRequest {
        cluster: config.ecs.cluster.clone(),
        task_definition: candidate.task_definition.clone(),
        capacity: candidate.provider.clone(),
        subnet: candidate.subnet.clone(),
        security_groups: candidate.security_groups.clone(),
        cpu_units: candidate.size.cpu_units(),
        memory_mib: candidate.size.memory_mib(),
        container_name: config.ecs.container_name.clone(),
        environment: vec![
            (env::JOB_ID.into(), job_id.clone()),
            (env::ATTEMPT.into(), attempt.to_string()),
            (env::RUNNER_NAME.into(), runner.to_string()),
            (env::JIT_CONFIG_SEALED.into(), jit_config_sealed.to_string()),
            (env::KMS_KEY_ID.into(), config.runner.kms_key_id.clone()),
        ],
        started_by: StartedBy {
            job: job.job_id,
            attempt: *attempt,
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::job::tests::job_ref;
    use crate::domain::labels::{self, LabelVerdict};
    use crate::domain::plan;

    fn job() -> JobRef {
        job_ref(&["tasuki"])
    }

    fn request(job: &JobRef, sealed: &str) -> Result<LaunchRequest, StepError> {
        let LabelVerdict::Accepted(spec) = labels::resolve(&job.labels, &example()) else {
            panic!("labels")
        };
        let candidates = plan::plan(&spec, &example()).unwrap();
        let attempt = Attempt::new(2).unwrap();
        launch_request(
            &example(),
            &Launch {
                job,
                attempt,
                candidate: &candidates[1],
                runner: RunnerName::new(job.job_id, attempt),
                jit_config_sealed: sealed,
            },
        )
    }

    #[test]
    fn the_launch_request_uses_the_candidate_and_only_ciphertext() {
        let request = request(&job(), "SEALED").unwrap();
        assert_eq!(request.capacity, CapacityProvider::FargateSpot);
        assert_eq!(request.subnet, "subnet-b");
        assert_eq!((request.cpu_units, request.memory_mib), (2048, 4096));
        assert_eq!(request.started_by.to_string(), "tasuki/7/2");
        let env: std::collections::HashMap<_, _> = request.environment.into_iter().collect();
        assert_eq!(env["TASUKI_JIT_CONFIG_SEALED"], "SEALED");
        assert_eq!(env["TASUKI_RUNNER_NAME"], "tasuki-7-2");
        assert!(request
            .tags
            .contains(&("tasuki:size".into(), "2cpu-4gb".into())));
    }

    #[test]
    fn workflow_names_ecs_refuses_as_tag_values_are_sanitized_in_the_task_tags() {
        let mut job = job();
        job.workflow = "Build (linux, x64) & test #1".into();
        let request = request(&job, "SEALED").unwrap();
        let tags: std::collections::HashMap<_, _> = request.tags.into_iter().collect();
        assert_eq!(tags["tasuki:workflow"], "Build _linux_ x64_ _ test _1");
    }

    #[test]
    fn a_real_size_sealed_config_fits_the_runtask_overrides_and_an_oversized_one_is_refused() {
        // GitHub's config with a 2048-bit key is ~4.2 KB; sealed, with base64 overhead, ~4.5 KB.
        let fits = request(&job(), &"A".repeat(4600)).unwrap();
        assert!(fits.overrides_json().len() <= MAX_OVERRIDES_CHARS);
        let overrides: serde_json::Value = serde_json::from_str(&fits.overrides_json()).unwrap();
        assert_eq!(overrides["containerOverrides"][0]["name"], "runner");
        assert_eq!(overrides["cpu"], "2048");
        assert_eq!(
            request(&job(), &"A".repeat(8000)).unwrap_err().name(),
            "LaunchConfigError"
        );
    }
}
