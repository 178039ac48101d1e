//! Why the boot program stops before the runner runs, as one line each, with a distinct exit code.
//!
//! No variant carries the decrypted credential or the ciphertext: a message can be printed whole.

use std::path::PathBuf;

/// Exit codes of the boot program's own failures (sysexits.h where one fits). Once the runner has
/// started, the boot program exits with the runner's status instead (a signal `n` gives `128 + n`).
pub mod exit {
    /// Unexpected command-line arguments.
    pub const USAGE: i32 = 64;
    /// The decrypted credential is not text.
    pub const DATA: i32 = 65;
    /// KMS refused to decrypt for another reason than the job (access denied, key not found, …).
    pub const KMS_REFUSED: i32 = 69;
    /// The boot program itself failed (signal mask, runtime).
    pub const SOFTWARE: i32 = 70;
    /// KMS could not be reached or kept failing (timeouts, throttling, internal errors): a new
    /// attempt may succeed.
    pub const KMS_UNAVAILABLE: i32 = 75;
    /// The credential is sealed for another job (KMS `InvalidCiphertextException`).
    pub const WRONG_JOB: i32 = 77;
    /// The task's environment is missing the credential or has it malformed.
    pub const CONFIG: i32 = 78;
    /// The runner program could not be executed (permissions, format).
    pub const RUNNER_NOT_EXECUTABLE: i32 = 126;
    /// The runner program does not exist.
    pub const RUNNER_NOT_FOUND: i32 = 127;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    #[error("{0}")]
    Usage(String),
    #[error("{name} is not set: the task was started without a runner credential")]
    Missing { name: &'static str },
    #[error("{name} {problem}")]
    Invalid {
        name: &'static str,
        problem: &'static str,
    },
    #[error("no AWS region: set AWS_REGION (the KMS key's region)")]
    NoRegion,
    #[error("the credential is not for job {job_id} (KMS {code}): it was sealed for another job, with another key, or is damaged")]
    WrongJob { job_id: u64, code: String },
    #[error("cannot decrypt the credential for job {job_id}: KMS {code}{}", detail(.message))]
    KmsRefused {
        job_id: u64,
        code: String,
        message: Option<String>,
    },
    #[error("cannot decrypt the credential for job {job_id}: KMS unavailable ({reason})")]
    KmsUnavailable { job_id: u64, reason: String },
    #[error("the decrypted credential for job {job_id} is not text")]
    NotText { job_id: u64 },
    #[error("cannot start the runner {}: {reason}", .program.display())]
    Spawn {
        program: PathBuf,
        reason: String,
        code: i32,
    },
    #[error("stopped by {signal} before the runner started; the runner was not started")]
    StoppedBeforeStart { signal: String, number: i32 },
    #[error("{0}")]
    Internal(String),
}

fn detail(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

impl BootError {
    pub fn exit_code(&self) -> i32 {
        match self {
            BootError::Usage(_) => exit::USAGE,
            BootError::Missing { .. } | BootError::Invalid { .. } | BootError::NoRegion => {
                exit::CONFIG
            }
            BootError::WrongJob { .. } => exit::WRONG_JOB,
            BootError::KmsRefused { .. } => exit::KMS_REFUSED,
            BootError::KmsUnavailable { .. } => exit::KMS_UNAVAILABLE,
            BootError::NotText { .. } => exit::DATA,
            BootError::Spawn { code, .. } => *code,
            BootError::StoppedBeforeStart { number, .. } => 128 + number,
            BootError::Internal(_) => exit::SOFTWARE,
        }
    }
}

/// Keeps a message printable on one line and short: first line only, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    if line.chars().count() <= max {
        line.to_string()
    } else {
        let cut: String = line.chars().take(max).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_before_the_runner_has_its_own_exit_code() {
        let errors = [
            BootError::Usage("x".into()),
            BootError::Missing {
                name: "TASUKI_JOB_ID",
            },
            BootError::WrongJob {
                job_id: 1,
                code: "InvalidCiphertextException".into(),
            },
            BootError::KmsRefused {
                job_id: 1,
                code: "AccessDeniedException".into(),
                message: None,
            },
            BootError::KmsUnavailable {
                job_id: 1,
                reason: "timed out".into(),
            },
            BootError::NotText { job_id: 1 },
            BootError::Internal("x".into()),
        ];
        let mut codes: Vec<i32> = errors.iter().map(BootError::exit_code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert!(codes.iter().all(|c| (1..126).contains(c)));
    }

    #[test]
    fn a_wrong_job_says_which_job_and_names_the_kms_code() {
        let e = BootError::WrongJob {
            job_id: 77,
            code: "InvalidCiphertextException".into(),
        };
        let text = e.to_string();
        assert!(text.contains("the credential is not for job 77"), "{text}");
        assert!(text.contains("InvalidCiphertextException"), "{text}");
        assert_eq!(e.exit_code(), exit::WRONG_JOB);
    }

    #[test]
    fn a_kms_refusal_shows_the_message_only_when_there_is_one() {
        let with = BootError::KmsRefused {
            job_id: 5,
            code: "NotFoundException".into(),
            message: Some("Alias alias/x is not found.".into()),
        };
        assert_eq!(
            with.to_string(),
            "cannot decrypt the credential for job 5: KMS NotFoundException: Alias alias/x is not found."
        );
        let without = BootError::KmsRefused {
            job_id: 5,
            code: "AccessDeniedException".into(),
            message: Some(String::new()),
        };
        assert_eq!(
            without.to_string(),
            "cannot decrypt the credential for job 5: KMS AccessDeniedException"
        );
    }

    #[test]
    fn a_stop_before_the_runner_started_exits_like_a_signal() {
        let e = BootError::StoppedBeforeStart {
            signal: "SIGTERM".into(),
            number: 15,
        };
        assert_eq!(e.exit_code(), 143);
    }

    #[test]
    fn one_line_keeps_the_first_line_and_cuts_long_ones() {
        assert_eq!(one_line("a\nb", 10), "a");
        assert_eq!(one_line("  abcdef  ", 3), "abc…");
        assert_eq!(one_line("", 3), "");
    }
}
