//! Step Functions: start a job's execution, answer its task tokens.

use crate::error::StepError;
use crate::ports::Executions;
use async_trait::async_trait;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::Client;

#[derive(Clone)]
pub struct SfnExecutions {
    client: Client,
    state_machine_arn: String,
}

impl SfnExecutions {
    pub fn new(client: Client, state_machine_arn: impl Into<String>) -> Self {
        Self {
            client,
            state_machine_arn: state_machine_arn.into(),
        }
    }
}

fn sdk_error<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
) -> StepError {
    let code = error.code().unwrap_or_default();
    let message = format!("{code}: {}", error.message().unwrap_or_default());
    match code {
        "ThrottlingException" | "TooManyRequestsException" => StepError::Throttled(message),
        "" => StepError::Transient(format!("Step Functions unreachable: {error:?}")),
        _ => StepError::Transient(message),
    }
}

/// A callback to a wait that is already over (timed out, answered, execution gone).
fn already_closed(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("TaskTimedOut" | "InvalidToken" | "TaskDoesNotExist" | "ExecutionDoesNotExist")
    )
}

#[async_trait]
impl Executions for SfnExecutions {
    async fn start(&self, name: &str, input: &str) -> Result<String, StepError> {
        match self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await
        {
            Ok(out) => Ok(out.execution_arn),
            Err(e) if e.code() == Some("ExecutionAlreadyExists") => Ok(
                crate::handlers::webhook::execution_arn(&self.state_machine_arn, name),
            ),
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn succeed(&self, token: &str, output: &serde_json::Value) -> Result<bool, StepError> {
        match self
            .client
            .send_task_success()
            .task_token(token)
            .output(output.to_string())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if already_closed(e.code()) => Ok(false),
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn fail(&self, token: &str, error: &StepError) -> Result<bool, StepError> {
        match self
            .client
            .send_task_failure()
            .task_token(token)
            .error(error.name())
            .cause(error.detail())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if already_closed(e.code()) => Ok(false),
            Err(e) => Err(sdk_error(&e)),
        }
    }
}
