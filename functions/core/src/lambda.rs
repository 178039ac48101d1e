//! The composition root: each Lambda builds its handler here once at init, from the environment
//! (`AWS_ENDPOINT_URL` points the clients at the local stack), and serves it.

use crate::adapters::{clock::SystemClock, dynamodb, ecs, github, kms, sfn};
use crate::domain::config::Config;
use crate::handlers::cleanup::{Cleanup, Release};
use crate::handlers::ecs_events::EcsEvents;
use crate::handlers::finalize::Finalize;
use crate::handlers::issue_token::{IssueToken, RunnerCredentials};
use crate::handlers::registration::{Confirm, WaitForRegistration, Waiting};
use crate::handlers::rescue::RescueSweep;
use crate::handlers::resolve_labels::ResolveLabels;
use crate::handlers::run_task::RunTask;
use crate::handlers::step::{invoke, Step};
use crate::handlers::validate::Validate;
use crate::handlers::webhook::Webhook;
use crate::handlers::Lifecycle;
use crate::metrics::{MetricSink, NoMetrics, StdoutMetrics};
use crate::ports::Sensitive;
use crate::signature::WebhookSecret;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

pub type InitError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a state machine step as this Lambda's handler until the runtime stops it.
pub async fn serve<S: Step>(step: S) -> Result<(), lambda_runtime::Error> {
    let step = &step;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            invoke(step, event.payload).await
        },
    ))
    .await
}

/// AWS clients, the deployment config, and where metrics go.
pub struct Aws {
    pub sdk: aws_config::SdkConfig,
    pub config: Arc<Config>,
    pub metrics: Arc<dyn MetricSink>,
}

impl Aws {
    pub async fn from_env() -> Result<Self, InitError> {
        let config = Config::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self {
            sdk,
            config: Arc::new(config),
            metrics: Arc::new(StdoutMetrics),
        })
    }

    /// For the operator's CLI: stdout is its answer, and the metrics of a sweep are the
    /// scheduled Lambda's to report.
    pub fn without_metrics(self) -> Self {
        Self {
            metrics: Arc::new(NoMetrics),
            ..self
        }
    }

    pub fn store(&self) -> Arc<dynamodb::DynamoLifecycleStore> {
        Arc::new(dynamodb::DynamoLifecycleStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            &self.config.table_name,
            self.config.retention_days,
        ))
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            store: self.store(),
            clock: Arc::new(SystemClock),
            timeouts: self.config.timeouts,
            metrics: self.metrics.clone(),
        }
    }

    pub fn executions(&self) -> Arc<sfn::SfnExecutions> {
        Arc::new(sfn::SfnExecutions::new(
            aws_sdk_sfn::Client::new(&self.sdk),
            &self.config.state_machine_arn,
        ))
    }

    pub fn launcher(&self) -> Arc<ecs::EcsTaskLauncher> {
        Arc::new(ecs::EcsTaskLauncher::new(
            aws_sdk_ecs::Client::new(&self.sdk),
            &self.config.ecs.cluster,
        ))
    }

    pub fn sealer(&self) -> Arc<kms::KmsSealer> {
        Arc::new(kms::KmsSealer::new(
            aws_sdk_kms::Client::new(&self.sdk),
            &self.config.runner.kms_key_id,
            &self.config.runner.task_role_arn,
        ))
    }

    pub async fn secret(&self, id: &str) -> Result<Sensitive, InitError> {
        let out = aws_sdk_secretsmanager::Client::new(&self.sdk)
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot read secret {id}: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                )
            })?;
        let value = out
            .secret_string
            .ok_or_else(|| format!("secret {id} has no string value"))?;
        Ok(Sensitive::new(value))
    }

    pub async fn registry(&self) -> Result<Arc<github::GitHubApp>, InitError> {
        let github = &self.config.github;
        let key = self.secret(&github.private_key_secret_id).await?;
        Ok(Arc::new(github::GitHubApp::new(
            &github.api_url,
            github.app_id,
            &key,
            self.config.runner.group_id,
            self.metrics.clone(),
        )?))
    }

    async fn release(&self) -> Result<Release, InitError> {
        Ok(Release {
            launcher: self.launcher(),
            registry: self.registry().await?,
            sealer: self.sealer(),
        })
    }

    pub async fn webhook(&self) -> Result<Webhook, InitError> {
        let secret = self.secret(&self.config.github.webhook_secret_id).await?;
        Ok(Webhook {
            config: self.config.clone(),
            secret: WebhookSecret::from_stored(secret.expose()),
            lifecycle: self.lifecycle(),
            executions: self.executions(),
        })
    }

    pub fn validate(&self) -> Validate {
        Validate {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
        }
    }

    pub fn resolve_labels(&self) -> ResolveLabels {
        ResolveLabels {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
        }
    }

    pub async fn issue_token(&self) -> Result<IssueToken, InitError> {
        Ok(IssueToken {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            credentials: RunnerCredentials {
                registry: self.registry().await?,
                sealer: self.sealer(),
            },
        })
    }

    pub fn run_task(&self) -> RunTask {
        RunTask {
            config: self.config.clone(),
            launcher: self.launcher(),
        }
    }

    fn waiting(&self) -> Waiting {
        Waiting {
            lifecycle: self.lifecycle(),
            executions: self.executions(),
        }
    }

    pub fn wait_for_registration(&self) -> WaitForRegistration {
        WaitForRegistration(self.waiting())
    }

    pub fn confirm(&self) -> Confirm {
        Confirm(self.waiting())
    }

    pub async fn cleanup(&self) -> Result<Cleanup, InitError> {
        Ok(Cleanup {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            release: self.release().await?,
        })
    }

    pub async fn finalize(&self) -> Result<Finalize, InitError> {
        Ok(Finalize {
            config: self.config.clone(),
            lifecycle: self.lifecycle(),
            release: self.release().await?,
        })
    }

    pub async fn rescue(&self) -> Result<RescueSweep, InitError> {
        let github = self.registry().await?;
        Ok(RescueSweep {
            lifecycle: self.lifecycle(),
            executions: self.executions(),
            registry: github.clone(),
            deliveries: github,
            launcher: self.launcher(),
        })
    }

    pub fn ecs_events(&self) -> EcsEvents {
        EcsEvents {
            container_name: self.config.ecs.container_name.clone(),
            store: self.store(),
            executions: self.executions(),
        }
    }
}
