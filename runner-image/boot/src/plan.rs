//! From the task's environment to a typed plan (pure: no I/O, testable with a map).

use crate::error::BootError;
use std::path::PathBuf;
use std::time::Duration;
use tasuki_core::domain::ids::JobId;
use tasuki_core::runner_contract::{env, Envelope};

/// The runner program to start instead of `<RUNNER_DIR>/run.sh` (tests, derived images).
pub const RUNNER_CMD: &str = "TASUKI_RUNNER_CMD";
/// Where the runner is installed; the official image's is `/home/runner`.
pub const RUNNER_DIR: &str = "RUNNER_DIR";
pub const DEFAULT_RUNNER_DIR: &str = "/home/runner";

/// The runner reads its arguments from `ACTIONS_RUNNER_INPUT_<NAME>` variables and removes them from
/// its environment before anything else runs (actions/runner src/Runner.Listener/CommandSettings.cs),
/// so neither `ps` nor a job's environment shows the config.
pub const RUNNER_INPUT_JITCONFIG: &str = "ACTIONS_RUNNER_INPUT_JITCONFIG";
/// A script the runner's worker runs before a job's first step (actions/runner
/// src/Runner.Worker/JobExtension.cs); tasuki-boot's writes the marker that says a job started.
pub const HOOK_JOB_STARTED: &str = "ACTIONS_RUNNER_HOOK_JOB_STARTED";
/// With it, run.sh answers SIGINT/SIGTERM with SIGINT to the listener, which cancels its job and
/// reports it (actions/runner src/Misc/layoutroot/run.sh, `runWithManualTrap`). Without it run.sh
/// dies alone and the listener never hears of the stop: the boot sets it for the runner.
pub const MANUALLY_TRAP_SIG: &str = "RUNNER_MANUALLY_TRAP_SIG";
/// With it, a runner version GitHub no longer accepts makes run.sh exit 7 instead of 0
/// (actions/runner src/Misc/layoutroot/run-helper.sh.template); the boot sets it for the runner.
pub const RETURN_VERSION_DEPRECATED_EXIT_CODE: &str =
    "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE";

/// Variables the runner (and so every step of its job) does not inherit: the task role's
/// credentials and how to fetch them, the task metadata endpoint, and the sealed credential.
/// AWS SDKs in a step would otherwise pick up the runner task role's credentials by themselves.
pub const NOT_FOR_THE_RUNNER: &[&str] = &[
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    env::JIT_CONFIG_SEALED,
    env::KMS_KEY_ID,
];

/// What the boot program will do: open this job's credential with KMS, then start this runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub job_id: JobId,
    pub attempt: Option<u32>,
    pub runner_name: Option<String>,
    /// `TASUKI_JIT_CONFIG_SEALED`, parsed: the KMS-wrapped data key and the sealed config.
    pub envelope: Envelope,
    /// When set, KMS must find the data key wrapped by this key (id, ARN or alias).
    pub key_id: Option<String>,
    pub runner: RunnerCommand,
    pub grace: StopGrace,
}

/// The runner program, started without arguments (the config goes in [`RUNNER_INPUT_JITCONFIG`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerCommand {
    pub program: PathBuf,
    /// A job-started hook the image or the operator set already; tasuki-boot's hook runs it after
    /// writing its marker. Only a `.sh` script can be chained (the runner runs those with bash).
    pub chained_hook: Option<PathBuf>,
}

/// How long a running job may go on after a stop signal before the runner is told to stop it:
/// `TASUKI_STOP_GRACE_SECONDS`, whole seconds in `0..=110` (default 100). Fargate sends SIGKILL
/// `stopTimeout` (at most 120 s) after SIGTERM; the runner needs the rest to cancel and report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopGrace(u8);

impl StopGrace {
    pub const DEFAULT: StopGrace = StopGrace(100);
    pub const MAX_SECONDS: u8 = 110;

    /// `None` for anything but a whole number of seconds in `0..=110`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seconds: u8 = text.parse().ok()?;
        (seconds <= Self::MAX_SECONDS).then_some(StopGrace(seconds))
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0.into())
    }

    pub fn seconds(self) -> u8 {
        self.0
    }
}

impl BootPlan {
    /// Reads the plan from the environment through `get` (`None` for an unset variable).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, BootError> {
        let present = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let job_id = present(env::JOB_ID)
            .ok_or(BootError::Missing { name: env::JOB_ID })?
            .trim()
            .parse::<JobId>()
            .map_err(|_| BootError::Invalid {
                name: env::JOB_ID,
                problem: "is not a job id (a positive integer)".into(),
            })?;
        let attempt = match present(env::ATTEMPT) {
            None => None,
            Some(a) => Some(a.trim().parse::<u32>().map_err(|_| BootError::Invalid {
                name: env::ATTEMPT,
                problem: "is not an attempt number".into(),
            })?),
        };
        let sealed = present(env::JIT_CONFIG_SEALED).ok_or(BootError::Missing {
            name: env::JIT_CONFIG_SEALED,
        })?;
        // OpenError's text describes the shape only, never the content.
        let envelope = Envelope::parse(&sealed).map_err(|e| BootError::Invalid {
            name: env::JIT_CONFIG_SEALED,
            problem: e.to_string(),
        })?;
        let grace = match present(env::STOP_GRACE_SECONDS) {
            None => StopGrace::DEFAULT,
            Some(text) => StopGrace::parse(&text).ok_or(BootError::Invalid {
                name: env::STOP_GRACE_SECONDS,
                problem: format!(
                    "is not a whole number of seconds from 0 to {}",
                    StopGrace::MAX_SECONDS
                ),
            })?,
        };
        let program = match present(RUNNER_CMD) {
            Some(cmd) => PathBuf::from(cmd.trim()),
            None => PathBuf::from(present(RUNNER_DIR).unwrap_or_else(|| DEFAULT_RUNNER_DIR.into()))
                .join("run.sh"),
        };
        let chained_hook = match present(HOOK_JOB_STARTED) {
            None => None,
            Some(path) if path.trim().ends_with(".sh") => Some(PathBuf::from(path.trim())),
            Some(_) => {
                return Err(BootError::Invalid {
                    name: HOOK_JOB_STARTED,
                    problem: "is not a .sh script: tasuki-boot chains its own job-started hook \
                              with a bash script only"
                        .into(),
                })
            }
        };
        Ok(Self {
            job_id,
            attempt,
            runner_name: present(env::RUNNER_NAME).map(|n| n.trim().to_string()),
            envelope,
            key_id: present(env::KMS_KEY_ID).map(|k| k.trim().to_string()),
            runner: RunnerCommand {
                program,
                chained_hook,
            },
            grace,
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
    use tasuki_core::runner_contract::{seal, BootExit, DataKey};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn sealed() -> String {
        let key = DataKey {
            plaintext: [7; 32],
            wrapped: vec![1, 2, 3, 4],
        };
        seal(JobId::new(77), &key, "eyJhIjoxfQ==").unwrap()
    }

    fn full(sealed: &str) -> Vec<(&'static str, String)> {
        vec![
            (env::JOB_ID, "77".into()),
            (env::ATTEMPT, "2".into()),
            (env::RUNNER_NAME, "tasuki-77-2".into()),
            (env::JIT_CONFIG_SEALED, sealed.into()),
            (env::KMS_KEY_ID, "alias/tasuki-runner".into()),
        ]
    }

    fn plan(pairs: &[(&'static str, String)]) -> Result<BootPlan, BootError> {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        BootPlan::from_env(env(&pairs))
    }

    #[test]
    fn a_complete_environment_gives_the_plan_with_the_official_runner() {
        let plan = plan(&full(&sealed())).unwrap();
        assert_eq!(plan.job_id, JobId::new(77));
        assert_eq!(plan.attempt, Some(2));
        assert_eq!(plan.runner_name.as_deref(), Some("tasuki-77-2"));
        assert_eq!(plan.envelope.wrapped_key, vec![1, 2, 3, 4]);
        assert_eq!(plan.key_id.as_deref(), Some("alias/tasuki-runner"));
        assert_eq!(plan.runner.program, PathBuf::from("/home/runner/run.sh"));
        assert_eq!(plan.runner.chained_hook, None);
        assert_eq!(plan.grace, StopGrace::DEFAULT);
        assert_eq!(plan.grace.duration(), Duration::from_secs(100));
        assert_eq!(plan.describe(), "job 77 attempt 2 (runner tasuki-77-2)");
    }

    #[test]
    fn the_runner_program_follows_runner_dir_and_tasuki_runner_cmd() {
        let mut pairs = full(&sealed());
        pairs.push((RUNNER_DIR, "/opt/runner".into()));
        assert_eq!(
            plan(&pairs).unwrap().runner.program,
            PathBuf::from("/opt/runner/run.sh")
        );
        pairs.push((RUNNER_CMD, "/tmp/fake-runner.sh".into()));
        assert_eq!(
            plan(&pairs).unwrap().runner.program,
            PathBuf::from("/tmp/fake-runner.sh")
        );
    }

    #[test]
    fn only_the_job_id_and_the_sealed_config_are_required() {
        let plan = plan(&[
            (env::JOB_ID, "5".into()),
            (env::JIT_CONFIG_SEALED, sealed()),
        ])
        .unwrap();
        assert_eq!(plan.attempt, None);
        assert_eq!(plan.key_id, None);
        assert_eq!(plan.describe(), "job 5");
    }

    #[test]
    fn a_missing_or_empty_credential_names_the_variable() {
        let err = plan(&[(env::JOB_ID, "5".into())]).unwrap_err();
        assert_eq!(
            err,
            BootError::Missing {
                name: env::JIT_CONFIG_SEALED
            }
        );
        assert_eq!(err.exit(), BootExit::MissingCredential);
        assert!(err
            .to_string()
            .starts_with("TASUKI_JIT_CONFIG_SEALED is not set"));
        let err = plan(&[
            (env::JOB_ID, "5".into()),
            (env::JIT_CONFIG_SEALED, "  ".into()),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            BootError::Missing {
                name: env::JIT_CONFIG_SEALED
            }
        );
    }

    #[test]
    fn the_old_kms_ciphertext_variable_is_not_read() {
        let err = plan(&[
            (env::JOB_ID, "5".into()),
            ("TASUKI_JIT_CONFIG_CIPHERTEXT", "AQIDBA==".into()),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            BootError::Missing {
                name: env::JIT_CONFIG_SEALED
            }
        );
    }

    #[test]
    fn a_missing_or_malformed_job_id_names_the_variable() {
        assert_eq!(
            plan(&[(env::JIT_CONFIG_SEALED, sealed())]).unwrap_err(),
            BootError::Missing { name: env::JOB_ID }
        );
        for bad in ["-1", "abc", "1.5"] {
            let err = plan(&[
                (env::JOB_ID, bad.into()),
                (env::JIT_CONFIG_SEALED, sealed()),
            ])
            .unwrap_err();
            assert!(
                err.to_string().starts_with("TASUKI_JOB_ID is not a job id"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_sealed_config_that_is_not_an_envelope_is_refused_without_being_echoed() {
        for (bad, says) in [
            ("%%secret%%", "is not base64"),
            ("c2VjcmV0IHRleHQ=", "no TSK1 header"),
        ] {
            let err = plan(&[
                (env::JOB_ID, "5".into()),
                (env::JIT_CONFIG_SEALED, bad.into()),
            ])
            .unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(err.exit(), BootExit::MissingCredential);
        }
    }

    #[test]
    fn a_malformed_attempt_is_refused() {
        let mut pairs = full(&sealed());
        pairs.push((env::ATTEMPT, "x".into()));
        let err = plan(&pairs).unwrap_err();
        assert!(err.to_string().starts_with("TASUKI_ATTEMPT"), "{err}");
    }

    #[test]
    fn the_stop_grace_is_whole_seconds_from_0_to_110() {
        assert_eq!(StopGrace::parse("0").unwrap().duration(), Duration::ZERO);
        assert_eq!(StopGrace::parse(" 110 ").unwrap().seconds(), 110);
        assert_eq!(
            StopGrace::parse("7").unwrap().duration(),
            Duration::from_secs(7)
        );
        for bad in ["111", "255", "256", "-1", "+5", "1.5", "1e2", "ten", ""] {
            assert_eq!(StopGrace::parse(bad), None, "{bad:?}");
        }
        let mut pairs = full(&sealed());
        pairs.push((env::STOP_GRACE_SECONDS, "3".into()));
        assert_eq!(plan(&pairs).unwrap().grace.seconds(), 3);
        pairs.push((env::STOP_GRACE_SECONDS, "120".into()));
        let pairs: Vec<_> = pairs
            .into_iter()
            .filter(|(k, v)| *k != env::STOP_GRACE_SECONDS || v == "120")
            .collect();
        let err = plan(&pairs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "TASUKI_STOP_GRACE_SECONDS is not a whole number of seconds from 0 to 110"
        );
        assert_eq!(err.exit(), BootExit::MissingCredential);
    }

    #[test]
    fn an_existing_job_started_hook_is_chained_when_it_is_a_shell_script() {
        let mut pairs = full(&sealed());
        pairs.push((HOOK_JOB_STARTED, "/opt/hooks/started.sh".into()));
        assert_eq!(
            plan(&pairs).unwrap().runner.chained_hook,
            Some(PathBuf::from("/opt/hooks/started.sh"))
        );
        let mut pairs = full(&sealed());
        pairs.push((HOOK_JOB_STARTED, "/opt/hooks/started.ps1".into()));
        let err = plan(&pairs).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("ACTIONS_RUNNER_HOOK_JOB_STARTED is not a .sh script"),
            "{err}"
        );
    }

    #[test]
    fn the_runner_inherits_no_credential_and_no_metadata_endpoint() {
        for name in [
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ECS_CONTAINER_METADATA_URI",
            "ECS_CONTAINER_METADATA_URI_V4",
            env::JIT_CONFIG_SEALED,
            env::KMS_KEY_ID,
        ] {
            assert!(NOT_FOR_THE_RUNNER.contains(&name), "{name}");
        }
    }
}
