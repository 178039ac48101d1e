//! KMS: seal a runner credential so only its own job's task can open it.

use crate::error::StepError;
use crate::ports::{encryption_context, CredentialSealer, Sensitive};
use async_trait::async_trait;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::Client;
use base64::Engine;

#[derive(Clone)]
pub struct KmsSealer {
    client: Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

#[async_trait]
impl CredentialSealer for KmsSealer {
    async fn seal(&self, job_id: u64, plaintext: &Sensitive) -> Result<String, StepError> {
        let (key, value) = encryption_context(job_id);
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext.expose().as_bytes()))
            .encryption_context(key, value)
            .send()
            .await
            .map_err(|e| {
                let code = e.code().unwrap_or_default().to_string();
                let message = format!("KMS {code}: {}", e.message().unwrap_or_default());
                match code.as_str() {
                    "ThrottlingException" | "LimitExceededException" => {
                        StepError::Throttled(message)
                    }
                    "" | "KMSInternalException" | "DependencyTimeoutException" => {
                        StepError::Transient(message)
                    }
                    _ => StepError::LaunchConfigError(message),
                }
            })?;
        let blob = out
            .ciphertext_blob
            .ok_or_else(|| StepError::Transient("KMS returned no ciphertext".into()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(blob.as_ref()))
    }
}
