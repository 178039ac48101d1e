//! The contract between `run-task`, which starts a runner's task, and `tasuki-boot`, which runs in
//! it: the environment variable names, how the job's JIT config is sealed, and what the boot's exit
//! status means. Both sides use this one module, so they cannot drift apart.
//!
//! Why an envelope: KMS `Encrypt` takes at most 4 096 bytes of plaintext
//! (<https://docs.aws.amazon.com/kms/latest/APIReference/API_Encrypt.html>), and GitHub's
//! `encoded_jit_config` is about 4.2 KB with a 2048-bit key and has grown before. KMS only wraps a
//! per-job data key (`GenerateDataKey`, encryption context `{"tasuki:job-id": "<job id>"}`); the
//! config itself is AES-256-GCM with the job id as authenticated data. It is compressed first,
//! because the whole RunTask `overrides` must stay under 8 192 characters
//! (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_RunTask.html>, `overrides`).

use crate::domain::ids::JobId;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;

/// The task environment `run-task` sets on the runner container (RunTask container override).
pub mod env {
    pub const JOB_ID: &str = "TASUKI_JOB_ID";
    pub const ATTEMPT: &str = "TASUKI_ATTEMPT";
    pub const RUNNER_NAME: &str = "TASUKI_RUNNER_NAME";
    /// The sealed JIT config ([`super::seal`]).
    pub const JIT_CONFIG_SEALED: &str = "TASUKI_JIT_CONFIG_SEALED";
    pub const KMS_KEY_ID: &str = "TASUKI_KMS_KEY_ID";
    /// Set by the task definition: seconds a running job gets after SIGTERM.
    pub const STOP_GRACE_SECONDS: &str = "TASUKI_STOP_GRACE_SECONDS";
    /// Set by the task definition: the lifecycle table, where `tasuki-boot` stores the task's
    /// usage item (`domain::usage`).
    pub const TABLE: &str = "TASUKI_TABLE";
    /// Set by the task definition: days the usage item is kept (its `expires_at`), the
    /// deployment's `retention_days` like every lifecycle item.
    pub const RETENTION_DAYS: &str = "TASUKI_RETENTION_DAYS";
}

/// The KMS encryption context key every sealed config's data key carries.
pub const ENCRYPTION_CONTEXT_KEY: &str = "tasuki:job-id";

/// The KMS encryption context that binds a runner credential to its job.
pub fn encryption_context(job_id: JobId) -> (String, String) {
    (ENCRYPTION_CONTEXT_KEY.to_string(), job_id.to_string())
}

/// What AES-GCM authenticates besides the ciphertext: a config sealed for one job opens for no other.
fn associated_data(job_id: JobId) -> Vec<u8> {
    format!("{ENCRYPTION_CONTEXT_KEY}={job_id}").into_bytes()
}

const MAGIC: &[u8; 4] = b"TSK1";
const NONCE_LEN: usize = 12;
/// A decompressed config larger than this is refused (GitHub's is ~3 KB once decoded).
const MAX_OPENED_BYTES: usize = 64 * 1024;

/// How the config was stored before compression: GitHub's text is base64, kept as raw bytes.
const FORM_BASE64_DECODED: u8 = 1;
const FORM_TEXT: u8 = 0;

/// A data key from KMS `GenerateDataKey`: the plaintext key to seal with, and the same key wrapped
/// by KMS (its `CiphertextBlob`), which travels with the sealed config.
pub struct DataKey {
    pub plaintext: [u8; 32],
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"<redacted>")
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the KMS-wrapped data key is {0} bytes; at most 65 535 fit the envelope")]
    WrappedKeyTooLong(usize),
    #[error("AES-GCM refused to seal")]
    Cipher,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("is not base64")]
    NotBase64,
    #[error("is not a tasuki sealed config (no TSK1 header)")]
    NotSealed,
    #[error("is truncated")]
    Truncated,
    #[error("does not open with this job's data key: sealed for another job, or damaged")]
    WrongJobOrDamaged,
    #[error("holds a config that does not decompress (or exceeds 64 KiB)")]
    BadPayload,
}

/// Seals GitHub's `encoded_jit_config` for one job; the result is the `TASUKI_JIT_CONFIG_SEALED` text.
pub fn seal(job_id: JobId, key: &DataKey, encoded_jit_config: &str) -> Result<String, SealError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = match b64.decode(encoded_jit_config) {
        // Only when decoding loses nothing: the runner gets back exactly the text GitHub gave.
        Ok(raw) if b64.encode(&raw) == encoded_jit_config => framed(FORM_BASE64_DECODED, &raw),
        _ => framed(FORM_TEXT, encoded_jit_config.as_bytes()),
    };
    let wrapped_len = u16::try_from(key.wrapped.len())
        .map_err(|_| SealError::WrappedKeyTooLong(key.wrapped.len()))?;
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.plaintext));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = associated_data(job_id);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &payload,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Cipher)?;
    let mut out = Vec::with_capacity(6 + key.wrapped.len() + NONCE_LEN + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&key.wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(b64.encode(out))
}

fn framed(form: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![form];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 9));
    out
}

/// A parsed `TASUKI_JIT_CONFIG_SEALED`: the wrapped data key to give KMS `Decrypt`, then [`Envelope::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub wrapped_key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Envelope {
    pub fn parse(sealed: &str) -> Result<Self, OpenError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .map_err(|_| OpenError::NotBase64)?;
        let rest = bytes.strip_prefix(MAGIC).ok_or(OpenError::NotSealed)?;
        let (len, rest) = rest.split_first_chunk::<2>().ok_or(OpenError::Truncated)?;
        let len = u16::from_be_bytes(*len) as usize;
        if rest.len() < len + NONCE_LEN + 16 {
            return Err(OpenError::Truncated);
        }
        let (wrapped_key, rest) = rest.split_at(len);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Ok(Self {
            wrapped_key: wrapped_key.to_vec(),
            nonce: nonce.try_into().map_err(|_| OpenError::Truncated)?,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// The `encoded_jit_config` GitHub issued, given the data key KMS unwrapped for this job.
    pub fn open(&self, job_id: JobId, data_key: &[u8]) -> Result<String, OpenError> {
        if data_key.len() != 32 {
            return Err(OpenError::WrongJobOrDamaged);
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(data_key));
        let aad = associated_data(job_id);
        let payload = cipher
            .decrypt(
                Nonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| OpenError::WrongJobOrDamaged)?;
        let (form, compressed) = payload.split_first().ok_or(OpenError::BadPayload)?;
        let data = miniz_oxide::inflate::decompress_to_vec_with_limit(compressed, MAX_OPENED_BYTES)
            .map_err(|_| OpenError::BadPayload)?;
        match *form {
            FORM_BASE64_DECODED => Ok(base64::engine::general_purpose::STANDARD.encode(data)),
            FORM_TEXT => String::from_utf8(data).map_err(|_| OpenError::BadPayload),
            _ => Err(OpenError::BadPayload),
        }
    }
}

/// The runner container's exit status, as `tasuki-boot` sets it and `ecs-events` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootExit {
    /// A job ran and the runner finished.
    JobFinished,
    /// The runner exited 0 without running a job (runner deleted, session conflict, …).
    NoJob,
    /// The runner's version is deprecated (run.sh exit 7 with
    /// `ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1`).
    VersionDeprecated,
    /// A stop signal came while a job ran, and the grace period ran out before it finished.
    JobInterrupted,
    /// A stop signal came before any job started.
    StoppedBeforeJob,
    /// The runner failed otherwise (run.sh exited non-zero).
    RunnerFailed,
    Usage,
    NotText,
    KmsRefused,
    BootFailed,
    KmsUnavailable,
    WrongJob,
    MissingCredential,
    RunnerNotExecutable,
    RunnerNotFound,
}

impl BootExit {
    pub const ALL: [BootExit; 15] = [
        BootExit::JobFinished,
        BootExit::NoJob,
        BootExit::VersionDeprecated,
        BootExit::JobInterrupted,
        BootExit::StoppedBeforeJob,
        BootExit::RunnerFailed,
        BootExit::Usage,
        BootExit::NotText,
        BootExit::KmsRefused,
        BootExit::BootFailed,
        BootExit::KmsUnavailable,
        BootExit::WrongJob,
        BootExit::MissingCredential,
        BootExit::RunnerNotExecutable,
        BootExit::RunnerNotFound,
    ];

    pub fn code(self) -> i32 {
        match self {
            BootExit::JobFinished => 0,
            BootExit::NoJob => 80,
            BootExit::VersionDeprecated => 81,
            BootExit::JobInterrupted => 82,
            BootExit::StoppedBeforeJob => 83,
            BootExit::RunnerFailed => 84,
            // sysexits.h where one fits
            BootExit::Usage => 64,
            BootExit::NotText => 65,
            BootExit::KmsRefused => 69,
            BootExit::BootFailed => 70,
            BootExit::KmsUnavailable => 75,
            BootExit::WrongJob => 77,
            BootExit::MissingCredential => 78,
            BootExit::RunnerNotExecutable => 126,
            BootExit::RunnerNotFound => 127,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|e| i64::from(e.code()) == code)
    }

    /// One line for an operator: what happened and, where there is one, the fix.
    pub fn reason(self) -> &'static str {
        match self {
            BootExit::JobFinished => "the runner ran its job and exited",
            BootExit::NoJob => "the runner exited without running a job (runner deleted on GitHub or session conflict)",
            BootExit::VersionDeprecated => "RunnerVersionDeprecated: GitHub no longer accepts the image's runner version; rebuild the runner image with the current RUNNER_VERSION (runner-image/README.md, \"Bump the runner\")",
            BootExit::JobInterrupted => "the task was stopped while its job ran and the job did not finish within the grace period",
            BootExit::StoppedBeforeJob => "the task was stopped before its runner took a job",
            BootExit::RunnerFailed => "the runner failed (run.sh exited with an error; see the runner log)",
            BootExit::Usage => "tasuki-boot was started with arguments it does not take",
            BootExit::NotText => "the opened JIT config is not text",
            BootExit::KmsRefused => "KMS refused to open the JIT config (no grant for this job, key disabled or not found)",
            BootExit::BootFailed => "tasuki-boot failed internally",
            BootExit::KmsUnavailable => "KMS could not be reached to open the JIT config",
            BootExit::WrongJob => "the JIT config was sealed for another job",
            BootExit::MissingCredential => "the task was started without a valid sealed JIT config",
            BootExit::RunnerNotExecutable => "the runner program is not executable",
            BootExit::RunnerNotFound => "the runner program is missing from the image",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey {
            plaintext: [byte; 32],
            wrapped: vec![0xAB; 184],
        }
    }

    /// GitHub's shape: base64 of a JSON object of base64 files.
    fn github_like(size: usize) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        // Key material is random: a pseudo-random filler, so compression gains nothing unfair.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let filler: Vec<u8> = (0..size)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as u8
            })
            .collect();
        b64.encode(format!(r#"{{".runner":"{}"}}"#, b64.encode(filler)))
    }

    #[test]
    fn a_sealed_config_opens_for_its_own_job_exactly_as_issued() {
        let config = github_like(3000);
        let sealed = seal(JobId::new(42), &key(7), &config).unwrap();
        let envelope = Envelope::parse(&sealed).unwrap();
        assert_eq!(envelope.wrapped_key, vec![0xAB; 184]);
        assert_eq!(envelope.open(JobId::new(42), &[7; 32]).unwrap(), config);
    }

    #[test]
    fn a_config_sealed_for_one_job_does_not_open_for_another_or_with_another_key() {
        let sealed = seal(JobId::new(42), &key(7), &github_like(100)).unwrap();
        let envelope = Envelope::parse(&sealed).unwrap();
        assert_eq!(
            envelope.open(JobId::new(43), &[7; 32]),
            Err(OpenError::WrongJobOrDamaged)
        );
        assert_eq!(
            envelope.open(JobId::new(42), &[8; 32]),
            Err(OpenError::WrongJobOrDamaged)
        );
    }

    #[test]
    fn a_tampered_envelope_is_refused() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let sealed = seal(JobId::new(42), &key(7), &github_like(100)).unwrap();
        let mut bytes = b64.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let envelope = Envelope::parse(&b64.encode(bytes)).unwrap();
        assert_eq!(
            envelope.open(JobId::new(42), &[7; 32]),
            Err(OpenError::WrongJobOrDamaged)
        );
        assert_eq!(Envelope::parse("not base64!"), Err(OpenError::NotBase64));
        assert_eq!(
            Envelope::parse(&b64.encode(b"XXXX")),
            Err(OpenError::NotSealed)
        );
        assert_eq!(
            Envelope::parse(&b64.encode(b"TSK1\x00")),
            Err(OpenError::Truncated)
        );
    }

    #[test]
    fn text_that_is_not_canonical_base64_round_trips_too() {
        let config = "not base64 at all: {json}";
        let sealed = seal(JobId::new(1), &key(1), config).unwrap();
        assert_eq!(
            Envelope::parse(&sealed)
                .unwrap()
                .open(JobId::new(1), &[1; 32])
                .unwrap(),
            config
        );
    }

    #[test]
    fn base64_of_base64_shrinks_below_its_own_size_once_sealed() {
        // ~4.2 KB like GitHub's config with a 2048-bit key: the envelope must leave room in 8 KiB.
        let config = github_like(3000);
        assert!(config.len() > 4000, "{}", config.len());
        let sealed = seal(JobId::new(42), &key(7), &config).unwrap();
        assert!(
            sealed.len() < config.len(),
            "{} >= {}",
            sealed.len(),
            config.len()
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_read_back() {
        let mut codes: Vec<i32> = BootExit::ALL.iter().map(|e| e.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), BootExit::ALL.len());
        for exit in BootExit::ALL {
            assert_eq!(BootExit::from_code(exit.code().into()), Some(exit));
        }
        assert_eq!(BootExit::from_code(1), None);
        assert!(BootExit::VersionDeprecated
            .reason()
            .contains("RUNNER_VERSION"));
    }
}
