//! Step Functions: start a job's execution, answer its task tokens.

use crate::domain::job::JobRef;
use crate::domain::rescue::ExecutionStatus;
use crate::domain::waits::{CallbackOutput, TaskToken};
use crate::error::StepError;
use crate::ports::Executions;
use async_trait::async_trait;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sfn::Client;
use serde::Serialize;

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

fn sdk_error<E, R>(error: &SdkError<E, R>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default();
    let message = format!("{code}: {}", error.message().unwrap_or_default());
    match code {
        "ThrottlingException" | "TooManyRequestsException" => StepError::Throttled(message),
        "" => StepError::Transient(format!("Step Functions unreachable: {}", causes(error))),
        _ => StepError::Transient(message),
    }
}

/// An error and its causes, each as its Display says: one line, not the SDK's Debug structure.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error;
    while let Some(source) = cause.source() {
        text = format!("{text}: {source}");
        cause = source;
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A callback to a wait that is already over (timed out, answered, execution gone).
fn already_closed(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("TaskTimedOut" | "InvalidToken" | "TaskDoesNotExist" | "ExecutionDoesNotExist")
    )
}

/// The execution's input: the state document the ASL starts from (`ExecutionState`).
#[derive(Serialize)]
struct ExecutionInput<'a> {
    job: &'a JobRef,
}

fn encode<T: Serialize>(value: &T) -> Result<String, StepError> {
    serde_json::to_string(value).map_err(|e| StepError::Transient(format!("encode: {e}")))
}

#[async_trait]
impl Executions for SfnExecutions {
    async fn start(&self, job: &JobRef) -> Result<String, StepError> {
        match self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(job.execution_name())
            .input(encode(&ExecutionInput { job })?)
            .send()
            .await
        {
            Ok(out) => Ok(out.execution_arn),
            Err(e) if e.code() == Some("ExecutionAlreadyExists") => {
                Ok(job.execution_arn(&self.state_machine_arn))
            }
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn succeed(&self, token: &TaskToken, output: &CallbackOutput) -> Result<bool, StepError> {
        match self
            .client
            .send_task_success()
            .task_token(token.as_str())
            .output(encode(output)?)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if already_closed(e.code()) => Ok(false),
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn fail(&self, token: &TaskToken, error: &StepError) -> Result<bool, StepError> {
        match self
            .client
            .send_task_failure()
            .task_token(token.as_str())
            .error(error.name().as_str())
            .cause(error.detail())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if already_closed(e.code()) => Ok(false),
            Err(e) => Err(sdk_error(&e)),
        }
    }

    async fn status(&self, job: &JobRef) -> Result<ExecutionStatus, StepError> {
        use aws_sdk_sfn::types::ExecutionStatus as Sfn;
        match self
            .client
            .describe_execution()
            .execution_arn(job.execution_arn(&self.state_machine_arn))
            .send()
            .await
        {
            Ok(out) => Ok(match out.status {
                Sfn::Running => ExecutionStatus::Running,
                Sfn::PendingRedrive => ExecutionStatus::PendingRedrive,
                Sfn::Succeeded => ExecutionStatus::Succeeded,
                Sfn::Failed => ExecutionStatus::Failed,
                Sfn::TimedOut => ExecutionStatus::TimedOut,
                Sfn::Aborted => ExecutionStatus::Aborted,
                // A status added after this SDK: not known to be running, so not left alone
                // forever; the lifecycle row names it.
                _ => ExecutionStatus::Failed,
            }),
            Err(e) if e.code() == Some("ExecutionDoesNotExist") => Ok(ExecutionStatus::Missing),
            Err(e) => Err(sdk_error(&e)),
        }
    }
}
