//! Opening the credential: KMS unwraps the job's data key (bound to the job by its encryption
//! context), then `runner_contract` opens the envelope with it (the job id is its AES-GCM
//! associated data).

use crate::credential::JitConfig;
use crate::error::{one_line, BootError};
use crate::plan::BootPlan;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use std::time::{Duration, Instant};
use tasuki_core::domain::ids::JobId;
use tasuki_core::runner_contract::OpenError;

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

impl KmsFailure {
    fn is_access_denied(&self) -> bool {
        matches!(self, KmsFailure::Service { code: Some(code), .. } if code == "AccessDeniedException")
    }
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

/// How long `AccessDeniedException` is retried (contract D: about 30 s). The runner task role may
/// decrypt only through its job's grant, which `issue-token` creates just before the task starts,
/// and a new grant may not be usable at once: "there might be a brief delay, usually less than five
/// minutes, until the operation achieves eventual consistency"
/// (<https://docs.aws.amazon.com/kms/latest/developerguide/grants.html>, eventual consistency),
/// in practice seconds. So a denial at first is expected; one that lasts is a refusal (exit 69).
pub const GRANT_WAIT: Duration = Duration::from_secs(30);

/// The pause before retry number `retry` (0-based) after a denial, or `None` once `elapsed` plus
/// that pause would pass [`GRANT_WAIT`]: 0.25 s, doubling, at most 4 s each.
pub fn grant_retry_delay(retry: u32, elapsed: Duration) -> Option<Duration> {
    let delay = Duration::from_millis(250)
        .saturating_mul(1u32 << retry.min(4))
        .min(Duration::from_secs(4));
    (elapsed + delay <= GRANT_WAIT).then_some(delay)
}

/// What a failed Decrypt means for the boot: only `InvalidCiphertextException` says the ciphertext
/// does not open under this job's encryption context.
pub fn classify(job_id: JobId, failure: KmsFailure) -> BootError {
    match failure {
        KmsFailure::Service { code, message } => {
            let code = code.unwrap_or_else(|| "error".to_string());
            if code == "InvalidCiphertextException" {
                BootError::WrongJob {
                    job_id,
                    why: format!("KMS {code}"),
                }
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

/// Unwraps the plan's data key with the encryption context of the plan's job, using the standard
/// AWS environment (region, credentials, `AWS_ENDPOINT_URL`), then opens the envelope. `note`
/// receives one line per retry.
pub async fn open(plan: &BootPlan, mut note: impl FnMut(String)) -> Result<JitConfig, BootError> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(BootError::NoRegion);
    }
    let kms = aws_sdk_kms::Client::new(&sdk);
    let (key, value) = tasuki_core::runner_contract::encryption_context(plan.job_id);
    let started = Instant::now();
    let mut retry = 0;
    let data_key = loop {
        let answer = kms
            .decrypt()
            .ciphertext_blob(Blob::new(plan.envelope.wrapped_key.as_slice()))
            .encryption_context(&key, &value)
            .set_key_id(plan.key_id.clone())
            .send()
            .await;
        let failure = match answer {
            Ok(out) => break out.plaintext,
            Err(e) => failure_of(e),
        };
        let delay = match failure.is_access_denied() {
            true => grant_retry_delay(retry, started.elapsed()),
            false => None,
        };
        let Some(delay) = delay else {
            return Err(classify(plan.job_id, failure));
        };
        retry += 1;
        note(format!(
            "KMS AccessDeniedException for job {} (its grant may not have reached KMS yet); \
             retry {retry} in {:.2} s",
            plan.job_id,
            delay.as_secs_f64()
        ));
        tokio::time::sleep(delay).await;
    };
    let data_key = data_key.ok_or_else(|| BootError::KmsUnavailable {
        job_id: plan.job_id,
        reason: "KMS returned no plaintext".to_string(),
    })?;
    let opened = plan
        .envelope
        .open(plan.job_id, data_key.as_ref())
        .map_err(|e| opening_failure(plan.job_id, e))?;
    JitConfig::new(plan.job_id, opened)
}

/// What a failure of the envelope itself (after KMS unwrapped its key) means.
pub fn opening_failure(job_id: JobId, error: OpenError) -> BootError {
    match error {
        OpenError::WrongJobOrDamaged => BootError::WrongJob {
            job_id,
            why: "AES-GCM authentication failed".to_string(),
        },
        OpenError::BadPayload => BootError::NotText { job_id },
        // The envelope was parsed before KMS was called: these cannot come from `open`.
        OpenError::NotBase64 | OpenError::NotSealed | OpenError::Truncated => {
            BootError::Internal(format!("the sealed credential {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_core::runner_contract::BootExit;

    fn service(code: &str, message: &str) -> KmsFailure {
        KmsFailure::Service {
            code: Some(code.into()),
            message: Some(message.into()),
        }
    }

    #[test]
    fn an_invalid_ciphertext_means_the_credential_is_for_another_job() {
        let err = classify(JobId::new(77), service("InvalidCiphertextException", ""));
        assert_eq!(err.exit(), BootExit::WrongJob);
        assert!(err
            .to_string()
            .starts_with("the credential is not for job 77 (KMS InvalidCiphertextException)"));
    }

    #[test]
    fn other_refusals_name_the_code_and_the_first_line_of_the_message() {
        let err = classify(
            JobId::new(77),
            service(
                "AccessDeniedException",
                "User: arn:aws:sts::1:assumed-role/runner is not authorized to perform: kms:Decrypt\nmore",
            ),
        );
        assert_eq!(err.exit(), BootExit::KmsRefused);
        assert_eq!(
            err.to_string(),
            "cannot decrypt the credential for job 77: KMS AccessDeniedException: User: arn:aws:sts::1:assumed-role/runner is not authorized to perform: kms:Decrypt"
        );
    }

    #[test]
    fn throttling_and_internal_errors_are_unavailability() {
        for code in ["ThrottlingException", "KMSInternalException"] {
            let err = classify(JobId::new(3), service(code, "slow down"));
            assert_eq!(err.exit(), BootExit::KmsUnavailable, "{code}");
            assert!(err.to_string().contains(code));
        }
    }

    #[test]
    fn no_answer_is_unavailability_with_the_reason() {
        let err = classify(
            JobId::new(3),
            KmsFailure::NoAnswer("dispatch failure: connection refused".into()),
        );
        assert_eq!(err.exit(), BootExit::KmsUnavailable);
        assert_eq!(
            err.to_string(),
            "cannot decrypt the credential for job 3: KMS unavailable (dispatch failure: connection refused)"
        );
    }

    #[test]
    fn an_error_without_a_code_is_still_named() {
        let err = classify(
            JobId::new(3),
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

    #[test]
    fn access_denied_is_retried_with_growing_pauses_for_about_30_seconds() {
        let mut elapsed = Duration::ZERO;
        let mut delays = Vec::new();
        while let Some(delay) = grant_retry_delay(delays.len() as u32, elapsed) {
            delays.push(delay);
            elapsed += delay;
            assert!(delays.len() < 100, "unbounded");
        }
        assert_eq!(
            delays[..6],
            [250, 500, 1000, 2000, 4000, 4000].map(Duration::from_millis)
        );
        assert!(elapsed <= GRANT_WAIT, "{elapsed:?}");
        assert!(elapsed > GRANT_WAIT - Duration::from_secs(4), "{elapsed:?}");
        assert_eq!(grant_retry_delay(0, GRANT_WAIT), None);
    }

    #[test]
    fn a_failed_envelope_is_a_wrong_job_or_not_a_config() {
        let err = opening_failure(JobId::new(4), OpenError::WrongJobOrDamaged);
        assert_eq!(err.exit(), BootExit::WrongJob);
        assert!(err
            .to_string()
            .starts_with("the credential is not for job 4 (AES-GCM authentication failed)"));
        assert_eq!(
            opening_failure(JobId::new(4), OpenError::BadPayload).exit(),
            BootExit::NotText
        );
    }
}
