//! KMS: seal a runner credential so only its own job's task can open it.
//!
//! Envelope encryption ([`crate::runner_contract`]): `GenerateDataKey` under the job's encryption
//! context, the config sealed locally, then a grant that lets the runner task role `Decrypt` with
//! exactly that context. The task role holds no standing `kms:Decrypt`: a task can open only a job
//! whose grant is live, and the grant is revoked when the attempt is cleaned up or the job ends.

use crate::domain::ids::RunnerName;
use crate::error::StepError;
use crate::ports::{CredentialSealer, SealedConfig, Sensitive};
use crate::runner_contract::{self, encryption_context, DataKey};
use async_trait::async_trait;
use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::types::{DataKeySpec, GrantConstraints, GrantOperation};
use aws_sdk_kms::Client;

#[derive(Clone)]
pub struct KmsSealer {
    client: Client,
    key_id: String,
    task_role_arn: String,
}

impl KmsSealer {
    pub fn new(
        client: Client,
        key_id: impl Into<String>,
        task_role_arn: impl Into<String>,
    ) -> Self {
        Self {
            client,
            key_id: key_id.into(),
            task_role_arn: task_role_arn.into(),
        }
    }
}

fn kms_error<E: ProvideErrorMetadata>(operation: &str, e: &E) -> StepError {
    let code = e.code().unwrap_or_default().to_string();
    let message = format!(
        "KMS {operation} {code}: {}",
        e.message().unwrap_or_default()
    );
    match code.as_str() {
        "ThrottlingException" | "LimitExceededException" => StepError::Throttled(message),
        "" | "KMSInternalException" | "DependencyTimeoutException" | "KeyUnavailableException" => {
            StepError::Transient(message)
        }
        _ => StepError::LaunchConfigError(message),
    }
}

#[async_trait]
impl CredentialSealer for KmsSealer {
    async fn seal(&self, runner: RunnerName, jit: &Sensitive) -> Result<SealedConfig, StepError> {
        let job_id = runner.job;
        let (key, value) = encryption_context(job_id);
        let data_key = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(&key, &value)
            .send()
            .await
            .map_err(|e| kms_error("GenerateDataKey", &e))?;
        let (Some(clear), Some(wrapped)) = (data_key.plaintext, data_key.ciphertext_blob) else {
            return Err(StepError::Transient("KMS returned no data key".into()));
        };
        let clear: [u8; 32] = clear.as_ref().try_into().map_err(|_| {
            StepError::LaunchConfigError("KMS returned a data key that is not 256 bits".into())
        })?;
        let sealed = runner_contract::seal(
            job_id,
            &DataKey {
                plaintext: clear,
                wrapped: wrapped.into_inner(),
            },
            jit.expose(),
        )
        .map_err(|e| StepError::LaunchConfigError(format!("cannot seal the JIT config: {e}")))?;
        let grant = self
            .client
            .create_grant()
            .key_id(&self.key_id)
            .grantee_principal(&self.task_role_arn)
            .operations(GrantOperation::Decrypt)
            .constraints(
                GrantConstraints::builder()
                    .encryption_context_equals(key, value)
                    .build(),
            )
            .name(runner.to_string())
            .send()
            .await
            .map_err(|e| kms_error("CreateGrant", &e))?;
        let grant_id = grant
            .grant_id
            .ok_or_else(|| StepError::Transient("KMS CreateGrant returned no grant id".into()))?;
        Ok(SealedConfig { sealed, grant_id })
    }

    async fn revoke(&self, grant_id: &str) -> Result<(), StepError> {
        match self
            .client
            .revoke_grant()
            .key_id(&self.key_id)
            .grant_id(grant_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NotFoundException") => Ok(()),
            Err(e) => Err(kms_error("RevokeGrant", &e)),
        }
    }
}
