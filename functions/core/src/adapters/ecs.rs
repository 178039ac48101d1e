//! ECS RunTask/StopTask, with RunTask's `failures[]` and exceptions classified into step errors.

use crate::domain::ids::StartedBy;
use crate::domain::launch::LaunchRequest;
use crate::domain::plan::CapacityProvider;
use crate::error::StepError;
use crate::ports::{RunningTask, TaskLauncher};
use async_trait::async_trait;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, KeyValuePair, LaunchType, NetworkConfiguration, Tag, TaskOverride,
};
use aws_sdk_ecs::Client;

#[derive(Clone)]
pub struct EcsTaskLauncher {
    client: Client,
    cluster: String,
}

impl EcsTaskLauncher {
    pub fn new(client: Client, cluster: impl Into<String>) -> Self {
        Self {
            client,
            cluster: cluster.into(),
        }
    }
}

/// An account quota, in ECS's words: "You've reached the limit on the number of vCPUs you can run
/// concurrently" (Fargate vCPU quotas,
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-quotas.html>) and
/// "The requested CPU configuration is above your limit" (a new account's Fargate task size limit);
/// ECS sends either as a RunTask failure or as an exception, with a straight or curly apostrophe.
fn is_quota(lower: &str) -> bool {
    lower.contains("reached the limit on the number of")
        || lower.contains("above your limit")
        || lower.contains("you have requested more vcpu capacity")
}

/// RunTask answered 200 but started nothing: why, as a step error.
pub fn classify_failure(reason: &str, where_: &str) -> StepError {
    let detail = format!("{where_}: {reason}");
    let lower = reason.to_lowercase();
    if is_quota(&lower) {
        StepError::QuotaExceeded(detail)
    } else if lower.contains("capacity is unavailable")
        || lower.starts_with("resource:")
        || lower == "agent"
        || lower.contains("insufficient")
    {
        StepError::CapacityUnavailable(detail)
    } else if lower.contains("throttl") || lower.contains("rate exceeded") {
        StepError::Throttled(detail)
    } else {
        StepError::LaunchConfigError(detail)
    }
}

/// An ECS API exception, as a step error.
pub fn classify_exception(code: &str, message: &str) -> StepError {
    let detail = format!("{code}: {message}");
    match code {
        "ThrottlingException" | "TooManyRequestsException" | "LimitExceededException" => {
            StepError::Throttled(detail)
        }
        "ServerException" | "ServiceUnavailableException" | "InternalFailure" => {
            StepError::Transient(detail)
        }
        _ if is_quota(&message.to_lowercase()) => StepError::QuotaExceeded(detail),
        _ if message
            .to_ascii_lowercase()
            .contains("capacity is unavailable") =>
        {
            StepError::CapacityUnavailable(detail)
        }
        _ => StepError::LaunchConfigError(detail),
    }
}

fn sdk_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    error: SdkError<E, R>,
) -> StepError {
    match error.code() {
        Some(code) => classify_exception(code, error.message().unwrap_or_default()),
        None => StepError::Transient(format!("ECS unreachable: {error:?}")),
    }
}

#[async_trait]
impl TaskLauncher for EcsTaskLauncher {
    async fn run(&self, request: &LaunchRequest) -> Result<String, StepError> {
        let build = |e: aws_sdk_ecs::error::BuildError| StepError::LaunchConfigError(e.to_string());
        let environment = request
            .environment
            .iter()
            .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
            .collect();
        let tags = request
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let network = NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .subnets(&request.subnet)
                    .set_security_groups(Some(request.security_groups.clone()))
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .map_err(build)?,
            )
            .build();
        let mut run = self
            .client
            .run_task()
            .cluster(&request.cluster)
            .task_definition(&request.task_definition)
            .count(1);
        // On-demand Fargate is plain `launchType`; Spot and EC2 need their capacity provider.
        run = if request.capacity == CapacityProvider::Fargate {
            run.launch_type(LaunchType::Fargate)
        } else {
            run.capacity_provider_strategy(
                CapacityProviderStrategyItem::builder()
                    .capacity_provider(request.capacity.name())
                    .weight(1)
                    .build()
                    .map_err(build)?,
            )
        };
        let out = run
            .network_configuration(network)
            .overrides(
                TaskOverride::builder()
                    .cpu(request.cpu_units.to_string())
                    .memory(request.memory_mib.to_string())
                    .container_overrides(
                        ContainerOverride::builder()
                            .name(&request.container_name)
                            .set_environment(Some(environment))
                            .build(),
                    )
                    .build(),
            )
            .started_by(request.started_by.to_string())
            .set_tags(Some(tags))
            .enable_ecs_managed_tags(true)
            .send()
            .await
            .map_err(sdk_error)?;
        let where_ = format!("{} in {}", request.capacity, request.subnet);
        if let Some(task_arn) = out.tasks().first().and_then(|t| t.task_arn()) {
            return Ok(task_arn.to_string());
        }
        let reason = out
            .failures()
            .iter()
            .map(|f| {
                let mut text = f.reason().unwrap_or("unknown").to_string();
                if let Some(detail) = f.detail() {
                    text = format!("{text} ({detail})");
                }
                text
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(classify_failure(
            if reason.is_empty() {
                "no task and no failure reported"
            } else {
                &reason
            },
            &where_,
        ))
    }

    async fn stop(&self, task_arn: &str, reason: &str) -> Result<(), StepError> {
        // ECS caps the reason at 255 characters.
        let reason: String = reason.chars().take(255).collect();
        match self
            .client
            .stop_task()
            .cluster(&self.cluster)
            .task(task_arn)
            .reason(reason)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already gone is what we wanted.
            Err(e) if e.code() == Some("InvalidParameterException") => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn stop_reason(&self, task_arn: &str) -> Result<Option<String>, StepError> {
        let described = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(described
            .tasks
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|task| {
                let code = task.stop_code?;
                Some(match task.stopped_reason.filter(|r| !r.is_empty()) {
                    Some(why) => format!("{}: {why}", code.as_str()),
                    None => code.as_str().to_string(),
                })
            }))
    }

    async fn running(&self, limit: usize) -> Result<Vec<RunningTask>, StepError> {
        // ListTasks pages hold at most 100 ARNs, and DescribeTasks takes at most 100 tasks
        // (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html).
        let mut pages = self
            .client
            .list_tasks()
            .cluster(&self.cluster)
            .desired_status(DesiredStatus::Running)
            .max_results(100)
            .into_paginator()
            .send();
        let mut running = vec![];
        while running.len() < limit {
            let Some(page) = pages.next().await else {
                break;
            };
            let arns = page.map_err(sdk_error)?.task_arns.unwrap_or_default();
            if arns.is_empty() {
                continue;
            }
            let described = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(arns))
                .send()
                .await
                .map_err(sdk_error)?;
            running.extend(
                described
                    .tasks
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|task| {
                        Some(RunningTask {
                            started_by: StartedBy::parse(task.started_by.as_deref()?)?,
                            task_arn: task.task_arn?,
                        })
                    }),
            );
        }
        running.truncate(limit);
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fargate_spot_capacity_failures_are_capacity_unavailable() {
        let error = classify_failure(
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
            "FARGATE_SPOT in subnet-a",
        );
        assert_eq!(error.name(), "CapacityUnavailable");
        assert!(error
            .detail()
            .starts_with("FARGATE_SPOT in subnet-a: Capacity"));
    }

    #[test]
    fn ec2_resource_failures_are_capacity_and_others_are_config_errors() {
        assert_eq!(
            classify_failure("RESOURCE:MEMORY", "x").name(),
            "CapacityUnavailable"
        );
        assert_eq!(classify_failure("AGENT", "x").name(), "CapacityUnavailable");
        assert_eq!(classify_failure("MISSING", "x").name(), "LaunchConfigError");
    }

    #[test]
    fn account_quota_failures_are_quota_exceeded_not_config_errors() {
        let vcpu = "You’ve reached the limit on the number of vCPUs you can run concurrently";
        assert_eq!(
            classify_failure(vcpu, "FARGATE in subnet-a").name(),
            "QuotaExceeded"
        );
        assert_eq!(
            classify_exception(
                "ClientException",
                "You've reached the limit on the number of vCPUs you can run concurrently"
            )
            .name(),
            "QuotaExceeded"
        );
        assert_eq!(
            classify_exception(
                "InvalidParameterException",
                "The requested CPU configuration is above your limit"
            )
            .name(),
            "QuotaExceeded"
        );
    }

    #[test]
    fn exceptions_split_into_retry_and_give_up() {
        for (code, message, name) in [
            ("ThrottlingException", "Rate exceeded", "Throttled"),
            ("ServerException", "boom", "Transient"),
            (
                "ClientException",
                "bad task definition",
                "LaunchConfigError",
            ),
            ("AccessDeniedException", "no", "LaunchConfigError"),
        ] {
            assert_eq!(classify_exception(code, message).name(), name, "{code}");
        }
    }
}
