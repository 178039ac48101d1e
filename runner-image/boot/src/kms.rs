//! Opening the credential with KMS, bound to the job by its encryption context.

use crate::credential::JitConfig;
use crate::error::{one_line, BootError};
use crate::plan::BootPlan;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use std::time::Duration;

/// How a Decrypt call failed, reduced to what decides the message and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsFailure {
    /// KMS answered with an error.
    Service {
        code: Option<String>,
        message: Option<String>,
    },
    /// No answer: connection, timeout, unreadable response.
    NoAnswer(String),
}

/// Error codes after which another attempt may succeed.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "LimitExceededException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "RequestTimeout",
];

/// What a failed Decrypt means for the boot: only `InvalidCiphertextException` says the ciphertext
/// does not open under this job's encryption context.
pub fn classify(job_id: u64, failure: KmsFailure) -> BootError {
    match failure {
        KmsFailure::Service { code, message } => {
            let code = code.unwrap_or_else(|| "error".to_string());
            if code == "InvalidCiphertextException" {
                BootError::WrongJob { job_id, code }
            } else if TRANSIENT.contains(&code.as_str()) {
                BootError::KmsUnavailable {
                    job_id,
                    reason: code,
                }
            } else {
                BootError::KmsRefused {
                    job_id,
                    code,
                    message: message.map(|m| one_line(&m, 300)),
                }
            }
        }
        KmsFailure::NoAnswer(reason) => BootError::KmsUnavailable {
            job_id,
            reason: one_line(&reason, 300),
        },
    }
}

fn failure_of<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    err: SdkError<E, R>,
) -> KmsFailure {
    match &err {
        SdkError::ServiceError(service) => KmsFailure::Service {
            code: service.err().code().map(str::to_string),
            message: service.err().message().map(str::to_string),
        },
        SdkError::TimeoutError(_) => KmsFailure::NoAnswer("timed out".to_string()),
        _ => KmsFailure::NoAnswer(DisplayErrorContext(&err).to_string()),
    }
}

/// Connect within 5 s, each attempt within 15 s, the whole call (with the SDK's standard retries)
/// within 40 s: a task that cannot open its credential stops well before the registration timeout.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(15))
        .operation_timeout(Duration::from_secs(40))
        .build()
}

/// Decrypts the plan's ciphertext with the encryption context of the plan's job, using the standard
/// AWS environment (region, credentials, `AWS_ENDPOINT_URL`).
pub async fn open(plan: &BootPlan) -> Result<JitConfig, BootError> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(BootError::NoRegion);
    }
    let (key, value) = tasuki_core::ports::encryption_context(plan.job_id);
    let out = aws_sdk_kms::Client::new(&sdk)
        .decrypt()
        .ciphertext_blob(Blob::new(plan.ciphertext.as_bytes()))
        .encryption_context(key, value)
        .set_key_id(plan.key_id.clone())
        .send()
        .await
        .map_err(|e| classify(plan.job_id, failure_of(e)))?;
    let plaintext = out.plaintext.ok_or_else(|| BootError::KmsUnavailable {
        job_id: plan.job_id,
        reason: "KMS returned no plaintext".to_string(),
    })?;
    JitConfig::from_plaintext(plan.job_id, plaintext.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    fn service(code: &str, message: &str) -> KmsFailure {
        KmsFailure::Service {
            code: Some(code.into()),
            message: Some(message.into()),
        }
    }

    #[test]
    fn an_invalid_ciphertext_means_the_credential_is_for_another_job() {
        let err = classify(77, service("InvalidCiphertextException", ""));
        assert_eq!(err.exit_code(), exit::WRONG_JOB);
        assert!(err
            .to_string()
            .starts_with("the credential is not for job 77 (KMS InvalidCiphertextException)"));
    }

    #[test]
    fn other_refusals_name_the_code_and_the_first_line_of_the_message() {
        let err = classify(
            77,
            service(
                "AccessDeniedException",
                "User: arn:aws:sts::1:assumed-role/runner is not authorized to perform: kms:Decrypt\nmore",
            ),
        );
        assert_eq!(err.exit_code(), exit::KMS_REFUSED);
        assert_eq!(
            err.to_string(),
            "cannot decrypt the credential for job 77: KMS AccessDeniedException: User: arn:aws:sts::1:assumed-role/runner is not authorized to perform: kms:Decrypt"
        );
    }

    #[test]
    fn throttling_and_internal_errors_are_unavailability() {
        for code in ["ThrottlingException", "KMSInternalException"] {
            let err = classify(3, service(code, "slow down"));
            assert_eq!(err.exit_code(), exit::KMS_UNAVAILABLE, "{code}");
            assert!(err.to_string().contains(code));
        }
    }

    #[test]
    fn no_answer_is_unavailability_with_the_reason() {
        let err = classify(
            3,
            KmsFailure::NoAnswer("dispatch failure: connection refused".into()),
        );
        assert_eq!(err.exit_code(), exit::KMS_UNAVAILABLE);
        assert_eq!(
            err.to_string(),
            "cannot decrypt the credential for job 3: KMS unavailable (dispatch failure: connection refused)"
        );
    }

    #[test]
    fn an_error_without_a_code_is_still_named() {
        let err = classify(
            3,
            KmsFailure::Service {
                code: None,
                message: None,
            },
        );
        assert_eq!(
            err.to_string(),
            "cannot decrypt the credential for job 3: KMS error"
        );
    }
}
