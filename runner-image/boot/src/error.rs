//! Why the boot program stops before the runner runs, as one line each, with a distinct exit status
//! (`runner_contract::BootExit`, which `ecs-events` reads back).
//!
//! No variant carries the opened credential or the sealed one: a message can be printed whole.

use std::path::PathBuf;
use tasuki_core::domain::ids::JobId;
use tasuki_core::runner_contract::BootExit;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootError {
    #[error("{0}")]
    Usage(String),
    #[error("{name} is not set: the task was started without a runner credential")]
    Missing { name: &'static str },
    #[error("{name} {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("no AWS region: set AWS_REGION (the KMS key's region)")]
    NoRegion,
    #[error("the credential is not for job {job_id} ({why}): it was sealed for another job, with another key, or is damaged")]
    WrongJob { job_id: JobId, why: String },
    #[error("cannot decrypt the credential for job {job_id}: KMS {code}{}", detail(.message))]
    KmsRefused {
        job_id: JobId,
        code: String,
        message: Option<String>,
    },
    #[error("cannot decrypt the credential for job {job_id}: KMS unavailable ({reason})")]
    KmsUnavailable { job_id: JobId, reason: String },
    #[error("the opened credential for job {job_id} is not a JIT config (not text, or too large)")]
    NotText { job_id: JobId },
    #[error("cannot start the runner {}: {reason}", .program.display())]
    Spawn {
        program: PathBuf,
        reason: String,
        exit: BootExit,
    },
    #[error("stopped by {signal} before the runner started; the runner was not started")]
    StoppedBeforeStart { signal: String },
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
    pub fn exit(&self) -> BootExit {
        match self {
            BootError::Usage(_) => BootExit::Usage,
            BootError::Missing { .. } | BootError::Invalid { .. } | BootError::NoRegion => {
                BootExit::MissingCredential
            }
            BootError::WrongJob { .. } => BootExit::WrongJob,
            BootError::KmsRefused { .. } => BootExit::KmsRefused,
            BootError::KmsUnavailable { .. } => BootExit::KmsUnavailable,
            BootError::NotText { .. } => BootExit::NotText,
            BootError::Spawn { exit, .. } => *exit,
            // Section E of the contract: a stop before any job started is 83, whenever it came.
            BootError::StoppedBeforeStart { .. } => BootExit::StoppedBeforeJob,
            BootError::Internal(_) => BootExit::BootFailed,
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
    fn every_failure_before_the_runner_has_its_own_exit_status() {
        let errors = [
            BootError::Usage("x".into()),
            BootError::Missing {
                name: "TASUKI_JOB_ID",
            },
            BootError::WrongJob {
                job_id: JobId::new(1),
                why: "KMS InvalidCiphertextException".into(),
            },
            BootError::KmsRefused {
                job_id: JobId::new(1),
                code: "AccessDeniedException".into(),
                message: None,
            },
            BootError::KmsUnavailable {
                job_id: JobId::new(1),
                reason: "timed out".into(),
            },
            BootError::NotText {
                job_id: JobId::new(1),
            },
            BootError::Internal("x".into()),
            BootError::StoppedBeforeStart {
                signal: "SIGTERM".into(),
            },
        ];
        let mut codes: Vec<i32> = errors.iter().map(|e| e.exit().code()).collect();
        assert_eq!(codes, [64, 78, 77, 69, 75, 65, 70, 83]);
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
    }

    #[test]
    fn a_wrong_job_says_which_job_and_why() {
        let e = BootError::WrongJob {
            job_id: JobId::new(77),
            why: "KMS InvalidCiphertextException".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("the credential is not for job 77 (KMS InvalidCiphertextException)"),
            "{text}"
        );
        assert_eq!(e.exit(), BootExit::WrongJob);
    }

    #[test]
    fn a_kms_refusal_shows_the_message_only_when_there_is_one() {
        let with = BootError::KmsRefused {
            job_id: JobId::new(5),
            code: "NotFoundException".into(),
            message: Some("Alias alias/x is not found.".into()),
        };
        assert_eq!(
            with.to_string(),
            "cannot decrypt the credential for job 5: KMS NotFoundException: Alias alias/x is not found."
        );
        let without = BootError::KmsRefused {
            job_id: JobId::new(5),
            code: "AccessDeniedException".into(),
            message: Some(String::new()),
        };
        assert_eq!(
            without.to_string(),
            "cannot decrypt the credential for job 5: KMS AccessDeniedException"
        );
    }

    #[test]
    fn one_line_keeps_the_first_line_and_cuts_long_ones() {
        assert_eq!(one_line("a\nb", 10), "a");
        assert_eq!(one_line("  abcdef  ", 3), "abc…");
        assert_eq!(one_line("", 3), "");
    }
}
