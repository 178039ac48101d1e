//! From the task's environment to a typed plan (pure: no I/O, testable with a map).

use crate::credential::{Ciphertext, JitConfig};
use crate::error::BootError;
use std::path::PathBuf;

pub const JOB_ID: &str = "TASUKI_JOB_ID";
pub const ATTEMPT: &str = "TASUKI_ATTEMPT";
pub const RUNNER_NAME: &str = "TASUKI_RUNNER_NAME";
pub const CIPHERTEXT: &str = "TASUKI_JIT_CONFIG_CIPHERTEXT";
pub const KMS_KEY_ID: &str = "TASUKI_KMS_KEY_ID";
/// The runner program to start instead of `<RUNNER_DIR>/run.sh` (tests, derived images).
pub const RUNNER_CMD: &str = "TASUKI_RUNNER_CMD";
/// Where the runner is installed; the official image's is `/home/runner`.
pub const RUNNER_DIR: &str = "RUNNER_DIR";
pub const DEFAULT_RUNNER_DIR: &str = "/home/runner";

/// Variables the runner does not need and so does not inherit (its jobs would).
pub const NOT_FOR_THE_RUNNER: &[&str] = &[CIPHERTEXT];

/// What the boot program will do: open this job's credential with KMS, then start this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub job_id: u64,
    pub attempt: Option<u32>,
    pub runner_name: Option<String>,
    pub ciphertext: Ciphertext,
    /// When set, KMS must find the ciphertext sealed with this key (id, ARN or alias).
    pub key_id: Option<String>,
    pub runner: RunnerCommand,
}

/// The runner program; its arguments are always `--jitconfig <credential>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCommand {
    pub program: PathBuf,
}

impl RunnerCommand {
    pub fn args<'a>(&self, jit: &'a JitConfig) -> [&'a str; 2] {
        ["--jitconfig", jit.expose()]
    }
}

impl BootPlan {
    /// Reads the plan from the environment through `get` (`None` for an unset variable).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, BootError> {
        let present = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let job_id = present(JOB_ID)
            .ok_or(BootError::Missing { name: JOB_ID })?
            .trim()
            .parse::<u64>()
            .map_err(|_| BootError::Invalid {
                name: JOB_ID,
                problem: "is not a job id (a positive integer)",
            })?;
        let attempt = match present(ATTEMPT) {
            None => None,
            Some(a) => Some(a.trim().parse::<u32>().map_err(|_| BootError::Invalid {
                name: ATTEMPT,
                problem: "is not an attempt number",
            })?),
        };
        let ciphertext = present(CIPHERTEXT).ok_or(BootError::Missing { name: CIPHERTEXT })?;
        let ciphertext = Ciphertext::from_base64(&ciphertext).ok_or(BootError::Invalid {
            name: CIPHERTEXT,
            problem: "is not base64 of a KMS ciphertext",
        })?;
        let program = match present(RUNNER_CMD) {
            Some(cmd) => PathBuf::from(cmd.trim()),
            None => PathBuf::from(present(RUNNER_DIR).unwrap_or_else(|| DEFAULT_RUNNER_DIR.into()))
                .join("run.sh"),
        };
        Ok(Self {
            job_id,
            attempt,
            runner_name: present(RUNNER_NAME).map(|n| n.trim().to_string()),
            ciphertext,
            key_id: present(KMS_KEY_ID).map(|k| k.trim().to_string()),
            runner: RunnerCommand { program },
        })
    }

    /// How the job is named in the boot program's messages: `job 77 attempt 2 (runner tasuki-77-2)`.
    pub fn describe(&self) -> String {
        let mut text = format!("job {}", self.job_id);
        if let Some(attempt) = self.attempt {
            text.push_str(&format!(" attempt {attempt}"));
        }
        if let Some(name) = &self.runner_name {
            text.push_str(&format!(" (runner {name})"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        (JOB_ID, "77"),
        (ATTEMPT, "2"),
        (RUNNER_NAME, "tasuki-77-2"),
        (CIPHERTEXT, "AQIDBA=="),
        (KMS_KEY_ID, "alias/tasuki-runner"),
    ];

    #[test]
    fn a_complete_environment_gives_the_plan_with_the_official_runner() {
        let plan = BootPlan::from_env(env(FULL)).unwrap();
        assert_eq!(plan.job_id, 77);
        assert_eq!(plan.attempt, Some(2));
        assert_eq!(plan.runner_name.as_deref(), Some("tasuki-77-2"));
        assert_eq!(plan.ciphertext.as_bytes(), &[1, 2, 3, 4]);
        assert_eq!(plan.key_id.as_deref(), Some("alias/tasuki-runner"));
        assert_eq!(plan.runner.program, PathBuf::from("/home/runner/run.sh"));
        assert_eq!(plan.describe(), "job 77 attempt 2 (runner tasuki-77-2)");
    }

    #[test]
    fn the_runner_program_follows_runner_dir_and_tasuki_runner_cmd() {
        let mut pairs = FULL.to_vec();
        pairs.push((RUNNER_DIR, "/opt/runner"));
        assert_eq!(
            BootPlan::from_env(env(&pairs)).unwrap().runner.program,
            PathBuf::from("/opt/runner/run.sh")
        );
        pairs.push((RUNNER_CMD, "/tmp/fake-runner.sh"));
        assert_eq!(
            BootPlan::from_env(env(&pairs)).unwrap().runner.program,
            PathBuf::from("/tmp/fake-runner.sh")
        );
    }

    #[test]
    fn the_runner_is_started_with_jitconfig_and_the_credential() {
        let plan = BootPlan::from_env(env(FULL)).unwrap();
        let jit = JitConfig::from_plaintext(77, b"ENCODED").unwrap();
        assert_eq!(plan.runner.args(&jit), ["--jitconfig", "ENCODED"]);
    }

    #[test]
    fn only_the_job_id_and_the_ciphertext_are_required() {
        let plan = BootPlan::from_env(env(&[(JOB_ID, "5"), (CIPHERTEXT, "AQID")])).unwrap();
        assert_eq!(plan.attempt, None);
        assert_eq!(plan.key_id, None);
        assert_eq!(plan.describe(), "job 5");
    }

    #[test]
    fn a_missing_or_empty_credential_names_the_variable() {
        let err = BootPlan::from_env(env(&[(JOB_ID, "5")])).unwrap_err();
        assert_eq!(err, BootError::Missing { name: CIPHERTEXT });
        assert_eq!(err.exit_code(), crate::error::exit::CONFIG);
        assert!(err
            .to_string()
            .starts_with("TASUKI_JIT_CONFIG_CIPHERTEXT is not set"));
        let err = BootPlan::from_env(env(&[(JOB_ID, "5"), (CIPHERTEXT, "  ")])).unwrap_err();
        assert_eq!(err, BootError::Missing { name: CIPHERTEXT });
    }

    #[test]
    fn a_missing_or_malformed_job_id_names_the_variable() {
        assert_eq!(
            BootPlan::from_env(env(&[(CIPHERTEXT, "AQID")])).unwrap_err(),
            BootError::Missing { name: JOB_ID }
        );
        for bad in ["-1", "abc", "1.5"] {
            let err = BootPlan::from_env(env(&[(JOB_ID, bad), (CIPHERTEXT, "AQID")])).unwrap_err();
            assert!(
                err.to_string().starts_with("TASUKI_JOB_ID is not a job id"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_ciphertext_that_is_not_base64_is_refused_without_being_echoed() {
        let err =
            BootPlan::from_env(env(&[(JOB_ID, "5"), (CIPHERTEXT, "%%secret%%")])).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::CONFIG);
    }

    #[test]
    fn a_malformed_attempt_is_refused() {
        let err = BootPlan::from_env(env(&[(JOB_ID, "5"), (CIPHERTEXT, "AQID"), (ATTEMPT, "x")]))
            .unwrap_err();
        assert!(err.to_string().starts_with("TASUKI_ATTEMPT"), "{err}");
    }
}
