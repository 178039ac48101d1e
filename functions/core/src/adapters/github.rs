//! GitHub as a GitHub App (octocrab): JIT runner configs and runner removal.

use crate::domain::ids::{JobId, RunnerName};
use crate::domain::job::{Conclusion, JobRef};
use crate::domain::waits::{JobOnGitHub, Registered};
use crate::error::StepError;
use crate::ports::{JitConfig, RunnerOnGitHub, RunnerRegistry, Sensitive};
use async_trait::async_trait;
use octocrab::models::{AppId, InstallationId, RunnerGroupId, RunnerId};
use octocrab::Octocrab;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;

/// Installation clients are kept per container: each caches its installation token.
pub struct GitHubApp {
    app: Octocrab,
    installations: Mutex<HashMap<u64, Octocrab>>,
    runner_group_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubSetupError {
    #[error("GitHub App private key is not a valid RSA PEM key: {0}")]
    Key(String),
    #[error("GitHub API URL is invalid: {0}")]
    Url(String),
}

impl GitHubApp {
    pub fn new(
        api_url: &str,
        app_id: u64,
        private_key_pem: &Sensitive,
        runner_group_id: u64,
    ) -> Result<Self, GitHubSetupError> {
        let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|e| GitHubSetupError::Key(e.to_string()))?;
        let app = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| GitHubSetupError::Url(e.to_string()))?
            .app(AppId(app_id), key)
            .build()
            .map_err(|e| GitHubSetupError::Url(e.to_string()))?;
        Ok(Self {
            app,
            installations: Mutex::new(HashMap::new()),
            runner_group_id,
        })
    }

    fn installation(&self, id: u64) -> Result<Octocrab, StepError> {
        let mut cache = self
            .installations
            .lock()
            .map_err(|_| StepError::Transient("installation cache poisoned".into()))?;
        if let Some(client) = cache.get(&id) {
            return Ok(client.clone());
        }
        let client = self
            .app
            .installation(InstallationId(id))
            .map_err(|e| github_error("installation client", e))?;
        cache.insert(id, client.clone());
        Ok(client)
    }
}

/// An octocrab error as a step error; rate limits are retried, the rest fail the job.
pub fn github_error(what: &str, error: octocrab::Error) -> StepError {
    match &error {
        octocrab::Error::GitHub { source, .. } => {
            classify_status(what, source.status_code.as_u16(), &source.message)
        }
        other => StepError::Transient(format!("{what}: GitHub unreachable: {other}")),
    }
}

pub fn classify_status(what: &str, status: u16, message: &str) -> StepError {
    let detail = format!("{what}: HTTP {status}: {message}");
    let rate_limited =
        status == 429 || (status == 403 && message.to_ascii_lowercase().contains("rate limit"));
    if rate_limited {
        StepError::Throttled(detail)
    } else if status >= 500 {
        StepError::Transient(detail)
    } else {
        StepError::GitHubError(detail)
    }
}

/// The fields of GitHub's `job` object (`GET /repos/{owner}/{repo}/actions/jobs/{job_id}`) read
/// here; `status` is one of queued, in_progress, completed, waiting, requested, pending.
#[derive(Debug, Deserialize)]
struct WorkflowJobNow {
    id: JobId,
    status: String,
    conclusion: Option<Conclusion>,
    runner_id: Option<u64>,
    runner_name: Option<String>,
}

impl WorkflowJobNow {
    fn into_state(self) -> JobOnGitHub {
        let ran_on = match (self.runner_name, self.runner_id) {
            (Some(runner_name), Some(runner_id)) if !runner_name.is_empty() => Some(Registered {
                runner_name,
                runner_id,
                job_id: self.id,
            }),
            _ => None,
        };
        match (self.status.as_str(), ran_on) {
            ("completed", ran_on) => JobOnGitHub::Completed {
                conclusion: self.conclusion.unwrap_or(Conclusion::Unknown),
                ran_on,
            },
            ("in_progress", Some(registered)) => JobOnGitHub::Running(registered),
            _ => JobOnGitHub::NotStarted,
        }
    }
}

#[async_trait]
impl RunnerRegistry for GitHubApp {
    async fn job(&self, job: &JobRef) -> Result<JobOnGitHub, StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/jobs/{}", job.job_id);
        let now: WorkflowJobNow = client
            .get(route, None::<&()>)
            .await
            .map_err(|e| github_error("get job", e))?;
        Ok(now.into_state())
    }

    async fn issue_jit_config(
        &self,
        job: &JobRef,
        runner_name: RunnerName,
        labels: &[String],
    ) -> Result<JitConfig, StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let config = client
            .actions()
            .create_repo_jit_runner_config(
                owner,
                repo,
                runner_name.to_string(),
                RunnerGroupId(self.runner_group_id),
                labels.to_vec(),
            )
            .work_folder("_work")
            .send()
            .await
            .map_err(|e| github_error("generate-jitconfig", e))?;
        Ok(JitConfig {
            runner_id: config.runner.id.0,
            encoded: Sensitive::new(config.encoded_jit_config),
        })
    }

    async fn delete_runner(&self, job: &JobRef, runner_id: u64) -> Result<(), StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        match client
            .actions()
            .delete_repo_runner(owner, repo, RunnerId(runner_id))
            .await
        {
            Ok(()) => Ok(()),
            // A JIT runner removes itself after its job; gone is what we wanted.
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
                Ok(())
            }
            Err(e) => Err(github_error("delete runner", e)),
        }
    }

    async fn runner(
        &self,
        job: &JobRef,
        name: RunnerName,
    ) -> Result<Option<RunnerOnGitHub>, StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/runners");
        let listed: RunnersNamed = client
            .get(route, Some(&[("name", name.to_string())]))
            .await
            .map_err(|e| github_error("list runners", e))?;
        Ok(listed
            .runners
            .into_iter()
            .find(|r| name == *r.name.as_str())
            .map(|r| RunnerOnGitHub {
                id: r.id,
                busy: r.busy,
            }))
    }
}

/// `GET /repos/{owner}/{repo}/actions/runners?name=` (actions/list-self-hosted-runners-for-repo).
#[derive(Debug, Deserialize)]
struct RunnersNamed {
    runners: Vec<RunnerNamed>,
}

#[derive(Debug, Deserialize)]
struct RunnerNamed {
    id: u64,
    name: String,
    busy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_retried_and_client_errors_fail_the_job() {
        assert_eq!(
            classify_status("x", 403, "API rate limit exceeded").name(),
            "Throttled"
        );
        assert_eq!(classify_status("x", 429, "slow down").name(), "Throttled");
        assert_eq!(classify_status("x", 502, "bad gateway").name(), "Transient");
        assert_eq!(
            classify_status("x", 403, "Resource not accessible by integration").name(),
            "GitHubError"
        );
        assert_eq!(
            classify_status("x", 422, "Validation Failed").name(),
            "GitHubError"
        );
    }

    #[test]
    fn a_bad_private_key_is_a_clear_setup_error() {
        let error = GitHubApp::new("https://api.github.com", 1, &Sensitive::new("not a key"), 1)
            .err()
            .expect("must fail");
        assert!(error.to_string().contains("not a valid RSA PEM key"));
    }
}
