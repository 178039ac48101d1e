//! ECS "Task State Change" events: a stopped runner task fails the execution waiting on it.

use super::deliver;
use crate::domain::ids::{JobId, StartedBy};
use crate::domain::waits::{Signal, Stopped};
use crate::error::StepError;
use crate::ports::{Executions, LifecycleStore};
use crate::runner_contract::BootExit;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tracing::Instrument;

/// The EventBridge envelope around an ECS task state change.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStateChange {
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub detail: TaskDetail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskDetail {
    pub task_arn: String,
    pub last_status: String,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub stop_code: Option<String>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerDetail>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerDetail {
    pub name: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventOutcome {
    pub handled: bool,
    pub reason: String,
}

/// The job, attempt and stop it describes, if it is a stop of one of our runner tasks.
pub fn stopped_runner(change: &TaskStateChange, container: &str) -> Option<(JobId, Stopped)> {
    if change.detail_type != "ECS Task State Change" || change.detail.last_status != "STOPPED" {
        return None;
    }
    let d = &change.detail;
    let StartedBy {
        job: job_id,
        attempt,
    } = StartedBy::parse(d.started_by.as_deref()?)?;
    let stop_code = d.stop_code.as_deref().unwrap_or("Unknown");
    let runner_exit = d
        .containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.exit_code);
    let clean_exit = stop_code == "EssentialContainerExited" && runner_exit == Some(0);
    let ecs_reason = match d.stopped_reason.as_deref() {
        Some(why) if !why.is_empty() => format!("{stop_code}: {why}"),
        _ => stop_code.to_string(),
    };
    // tasuki-boot's exit status says what happened inside (runner_contract::BootExit).
    let reason = match runner_exit.and_then(BootExit::from_code) {
        Some(exit) if exit != BootExit::JobFinished => {
            format!(
                "{} (runner exit {}; {ecs_reason})",
                exit.reason(),
                exit.code()
            )
        }
        _ => ecs_reason,
    };
    Some((
        job_id,
        Stopped {
            attempt,
            reason,
            clean_exit,
        },
    ))
}

pub struct EcsEvents {
    pub container_name: String,
    pub store: Arc<dyn LifecycleStore>,
    pub executions: Arc<dyn Executions>,
}

impl EcsEvents {
    pub async fn handle(&self, change: TaskStateChange) -> Result<EventOutcome, StepError> {
        let Some((job_id, stopped)) = stopped_runner(&change, &self.container_name) else {
            return Ok(EventOutcome {
                handled: false,
                reason: "not a stopped tasuki task".into(),
            });
        };
        let span = tracing::info_span!("ecs-event", job_id = job_id.get(), attempt = stopped.attempt.get(), task_arn = %change.detail.task_arn);
        async {
            tracing::info!(reason = %stopped.reason, clean_exit = stopped.clean_exit, "runner task stopped");
            let Some(record) = self.store.signal(job_id, &Signal::Stopped(stopped)).await? else {
                return Ok(EventOutcome { handled: false, reason: "unknown job".into() });
            };
            let delivered = deliver(&*self.executions, &record).await?;
            Ok(EventOutcome {
                handled: true,
                reason: if delivered.is_some() { "callback sent" } else { "signal recorded" }.into(),
            })
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(started_by: &str, stop_code: &str, exit: i64) -> TaskStateChange {
        serde_json::from_value(serde_json::json!({
            "version": "0", "id": "e", "detail-type": "ECS Task State Change", "source": "aws.ecs",
            "account": "123456789012", "time": "2026-11-23T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:aws:ecs:us-east-1:123456789012:task/tasuki/abc"],
            "detail": {
                "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/tasuki",
                "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/tasuki/abc",
                "lastStatus": "STOPPED", "desiredStatus": "STOPPED",
                "startedBy": started_by, "stopCode": stop_code,
                "stoppedReason": "Essential container in task exited",
                "containers": [{"name": "runner", "lastStatus": "STOPPED", "exitCode": exit}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_stop_of_our_task_names_job_attempt_and_reason() {
        let (job, stopped) =
            stopped_runner(&change("tasuki/42/2", "SpotInterruption", 143), "runner").unwrap();
        assert_eq!((job.get(), stopped.attempt.get()), (42, 2));
        assert_eq!(
            stopped.reason,
            "SpotInterruption: Essential container in task exited"
        );
        assert!(!stopped.clean_exit);
    }

    #[test]
    fn a_deprecated_runner_version_is_named_with_its_fix() {
        let (_, stopped) = stopped_runner(
            &change("tasuki/9/1", "EssentialContainerExited", 81),
            "runner",
        )
        .unwrap();
        assert!(
            stopped.reason.starts_with("RunnerVersionDeprecated"),
            "{}",
            stopped.reason
        );
        assert!(stopped.reason.contains("RUNNER_VERSION"));
        assert!(stopped.reason.contains("runner exit 81"));
        assert!(!stopped.clean_exit);
    }

    #[test]
    fn a_runner_that_exits_zero_is_a_clean_exit() {
        let (_, stopped) = stopped_runner(
            &change("tasuki/42/1", "EssentialContainerExited", 0),
            "runner",
        )
        .unwrap();
        assert!(stopped.clean_exit);
    }

    #[test]
    fn other_tasks_and_statuses_are_not_ours() {
        assert_eq!(
            stopped_runner(&change("ecs-svc/1", "UserInitiated", 0), "runner"),
            None
        );
        let mut running = change("tasuki/1/1", "UserInitiated", 0);
        running.detail.last_status = "RUNNING".into();
        assert_eq!(stopped_runner(&running, "runner"), None);
    }
}
