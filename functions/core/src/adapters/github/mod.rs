//! GitHub as a GitHub App (octocrab as the authenticated HTTP client): JIT runner configs, runner
//! lookups and removal with installation tokens, the App's webhook delivery log with its JWT.
//! Every call goes through [`call`], so rate limits and 5xx answers are handled one way
//! ([`policy`]); octocrab's own retry (immediate, POSTs included) is off.

mod policy;

use crate::domain::deliveries::DeliveryAttempt;
use crate::domain::ids::{JobId, RunnerName};
use crate::domain::job::{Conclusion, JobRef, WorkflowJobEvent};
use crate::domain::waits::{JobOnGitHub, Registered};
use crate::error::StepError;
use crate::metrics::{Datum, Metric, MetricSink};
use crate::ports::{JitConfig, RunnerOnGitHub, RunnerRegistry, Sensitive, WebhookDeliveries};
use async_trait::async_trait;
use octocrab::models::{AppId, InstallationId};
use octocrab::service::middleware::retry::RetryConfig;
use octocrab::Octocrab;
use policy::{
    next_cursor, percent_encode, server_error_backoff, verdict, RateLimit, Seen, Verdict, MAX_TRIES,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Installation clients are kept per container: each caches its installation token.
pub struct GitHubApp {
    app: Octocrab,
    installations: Mutex<HashMap<u64, Octocrab>>,
    runner_group_id: u64,
    /// Where the rate limit left goes, at each answer.
    metrics: Arc<dyn MetricSink>,
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
        metrics: Arc<dyn MetricSink>,
    ) -> Result<Self, GitHubSetupError> {
        let key = octocrab::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
            .map_err(|e| GitHubSetupError::Key(e.to_string()))?;
        let app = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| GitHubSetupError::Url(e.to_string()))?
            .add_retry_config(RetryConfig::None)
            .app(AppId(app_id), key)
            .build()
            .map_err(|e| GitHubSetupError::Url(e.to_string()))?;
        Ok(Self {
            app,
            installations: Mutex::new(HashMap::new()),
            runner_group_id,
            metrics,
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

/// A client-side or transport failure as a step error: unreachable GitHub is retried by the state
/// machine, a GitHub refusal fails the job.
fn github_error(what: &str, error: octocrab::Error) -> StepError {
    match &error {
        octocrab::Error::GitHub { source, .. } => {
            classify_status(what, source.status_code.as_u16(), &source.message)
        }
        other => StepError::Transient(format!("{what}: GitHub unreachable: {other}")),
    }
}

/// The step error of an answer the caller could not use (rate limits and 5xx are the policy's).
fn classify_status(what: &str, status: u16, message: &str) -> StepError {
    let detail = format!("{what}: HTTP {status}: {message}");
    if status == 429 || status >= 500 {
        StepError::Transient(detail)
    } else {
        StepError::GitHubError(detail)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Delete,
}

/// One GitHub answer, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    rate: RateLimit,
    link: Option<String>,
    body: String,
    /// GitHub's `message` for an error, else the start of the body.
    message: String,
}

/// GitHub's error body (`basic-error`).
#[derive(Debug, Deserialize)]
struct ErrorBody {
    message: String,
}

impl Answer {
    fn new(status: u16, rate: RateLimit, link: Option<String>, body: String) -> Self {
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        Self {
            status,
            rate,
            link,
            body,
            message,
        }
    }

    fn seen(&self) -> Seen<'_> {
        Seen {
            status: self.status,
            message: &self.message,
            rate: self.rate,
        }
    }

    /// Itself when its status is one of `expected`, else the step error its status means.
    fn expect(self, what: &str, expected: &[u16]) -> Result<Self, StepError> {
        if expected.contains(&self.status) {
            Ok(self)
        } else {
            Err(classify_status(what, self.status, &self.message))
        }
    }

    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, StepError> {
        serde_json::from_str(&self.body).map_err(|e| {
            StepError::GitHubError(format!("{what}: unexpected answer from GitHub: {e}"))
        })
    }
}

/// Calls GitHub under [`policy`]: rate limits waited out when short, 5xx and transport errors of
/// repeatable calls retried with jitter, at most [`MAX_TRIES`] tries. Every answer logs the rate
/// limit budget left.
async fn call<B: Serialize + Sync + ?Sized>(
    metrics: &dyn MetricSink,
    client: &Octocrab,
    what: &str,
    method: Method,
    route: &str,
    body: Option<&B>,
) -> Result<Answer, StepError> {
    let repeatable = method != Method::Post;
    let mut last = None;
    for try_ in 1..=MAX_TRIES {
        let sent = match method {
            Method::Get => client._get(route).await,
            Method::Post => client._post(route, body).await,
            Method::Delete => client._delete(route, body).await,
        };
        let answer = match sent {
            Ok(response) => {
                let headers = response.headers();
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                let (status, rate) = (response.status().as_u16(), RateLimit::from_headers(header));
                let link = header("link").map(str::to_string);
                let body = client.body_to_string(response).await.map_err(|e| {
                    StepError::Transient(format!("{what}: reading GitHub's answer: {e}"))
                })?;
                Answer::new(status, rate, link, body)
            }
            // The installation token request inside the client answered an error.
            Err(octocrab::Error::GitHub { source, .. }) => {
                let header = |name: &str| {
                    source
                        .headers
                        .as_ref()?
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                };
                let body = serde_json::json!({ "message": source.message }).to_string();
                Answer::new(
                    source.status_code.as_u16(),
                    RateLimit::from_headers(header),
                    None,
                    body,
                )
            }
            Err(other) if repeatable && try_ < MAX_TRIES => {
                tracing::warn!(call = what, try_, error = %other, "GitHub unreachable; trying again");
                tokio::time::sleep(server_error_backoff(try_)).await;
                last = Some(other);
                continue;
            }
            Err(other) => return Err(github_error(what, other)),
        };
        tracing::info!(
            call = what,
            status = answer.status,
            try_,
            github_rate_limit_remaining = answer.rate.remaining,
            github_rate_limit_limit = answer.rate.limit,
            "GitHub answered"
        );
        if let Some(remaining) = answer.rate.remaining {
            let datum = Datum::new(Metric::GitHubRateLimitRemaining, remaining as f64);
            metrics.emit(&[datum], now_epoch() * 1000, None);
        }
        match verdict(what, answer.seen(), repeatable, try_, now_epoch()) {
            Verdict::Use => return Ok(answer),
            Verdict::Stop(error) => return Err(error),
            Verdict::Again(wait) => {
                tracing::warn!(call = what, status = answer.status, wait_ms = wait.as_millis() as u64, budget = %answer.rate.budget(), "GitHub asked to wait; trying again");
                tokio::time::sleep(wait).await;
            }
        }
    }
    Err(StepError::Transient(format!(
        "{what}: no usable answer from GitHub after {MAX_TRIES} tries{}",
        last.map(|e| format!(": {e}")).unwrap_or_default()
    )))
}

fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// `POST …/actions/runners/generate-jitconfig` (actions/generate-runner-jitconfig-for-repo).
#[derive(Debug, Serialize)]
struct JitRequest<'a> {
    name: String,
    runner_group_id: u64,
    labels: &'a [String],
    work_folder: &'a str,
}

#[derive(Debug, Deserialize)]
struct JitAnswer {
    runner: JitRunner,
    encoded_jit_config: String,
}

#[derive(Debug, Deserialize)]
struct JitRunner {
    id: u64,
}

#[async_trait]
impl RunnerRegistry for GitHubApp {
    async fn job(&self, job: &JobRef) -> Result<JobOnGitHub, StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/jobs/{}", job.job_id);
        let now: WorkflowJobNow = call(
            &*self.metrics,
            &client,
            "get job",
            Method::Get,
            &route,
            None::<&()>,
        )
        .await?
        .expect("get job", &[200])?
        .json("get job")?;
        Ok(now.into_state())
    }

    async fn issue_jit_config(
        &self,
        job: &JobRef,
        runner_name: RunnerName,
        labels: &[String],
    ) -> Result<JitConfig, StepError> {
        const WHAT: &str = "generate-jitconfig";
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/runners/generate-jitconfig");
        let request = JitRequest {
            name: runner_name.to_string(),
            runner_group_id: self.runner_group_id,
            labels,
            work_folder: "_work",
        };
        let mut answer = call(
            &*self.metrics,
            &client,
            WHAT,
            Method::Post,
            &route,
            Some(&request),
        )
        .await?;
        if answer.status == 409 {
            // The name is this attempt's own: a retried IssueToken (its first answer lost to a
            // timeout or a 5xx) finds the runner it registered. Its config was never sealed, so
            // no task can run it: it is removed and registered again.
            match self.runner(job, runner_name).await? {
                Some(existing) if existing.busy => {
                    return Err(StepError::GitHubError(format!(
                        "{WHAT}: a runner named {runner_name} already exists and is running a job"
                    )))
                }
                Some(existing) => {
                    tracing::warn!(runner_name = %runner_name, runner_id = existing.id, "runner already registered by an earlier try; re-registering it");
                    self.delete_runner(job, existing.id).await?;
                }
                None => {}
            }
            answer = call(
                &*self.metrics,
                &client,
                WHAT,
                Method::Post,
                &route,
                Some(&request),
            )
            .await?;
        }
        let config: JitAnswer = answer.expect(WHAT, &[201])?.json(WHAT)?;
        Ok(JitConfig {
            runner_id: config.runner.id,
            encoded: Sensitive::new(config.encoded_jit_config),
        })
    }

    async fn delete_runner(&self, job: &JobRef, runner_id: u64) -> Result<(), StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/runners/{runner_id}");
        // 404: a JIT runner removes itself after its job; gone is what we wanted.
        call(
            &*self.metrics,
            &client,
            "delete runner",
            Method::Delete,
            &route,
            None::<&()>,
        )
        .await?
        .expect("delete runner", &[204, 404])?;
        Ok(())
    }

    async fn runner(
        &self,
        job: &JobRef,
        name: RunnerName,
    ) -> Result<Option<RunnerOnGitHub>, StepError> {
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!(
            "/repos/{owner}/{repo}/actions/runners?name={}",
            percent_encode(&name.to_string())
        );
        let listed: RunnersNamed = call(
            &*self.metrics,
            &client,
            "list runners",
            Method::Get,
            &route,
            None::<&()>,
        )
        .await?
        .expect("list runners", &[200])?
        .json("list runners")?;
        Ok(listed
            .runners
            .into_iter()
            .find(|r| name == *r.name.as_str())
            .map(|r| RunnerOnGitHub {
                id: r.id,
                busy: r.busy,
            }))
    }

    async fn run_completed(&self, job: &JobRef) -> Result<bool, StepError> {
        const WHAT: &str = "get workflow run";
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/runs/{}", job.run_id);
        let run: WorkflowRunNow = call(
            &*self.metrics,
            &client,
            WHAT,
            Method::Get,
            &route,
            None::<&()>,
        )
        .await?
        .expect(WHAT, &[200])?
        .json(WHAT)?;
        Ok(run.status.as_deref() == Some("completed"))
    }

    async fn rerun(&self, job: &JobRef) -> Result<(), StepError> {
        const WHAT: &str = "re-run job";
        let (owner, repo) = job.owner_and_name();
        let client = self.installation(job.installation_id)?;
        let route = format!("/repos/{owner}/{repo}/actions/jobs/{}/rerun", job.job_id);
        call(
            &*self.metrics,
            &client,
            WHAT,
            Method::Post,
            &route,
            None::<&()>,
        )
        .await?
        .expect(WHAT, &[201])?;
        Ok(())
    }
}

/// `GET /repos/{owner}/{repo}/actions/runs/{run_id}` (actions/get-workflow-run): `status` is
/// nullable in GitHub's description.
#[derive(Debug, Deserialize)]
struct WorkflowRunNow {
    status: Option<String>,
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

/// The largest page `GET /app/hook/deliveries` serves (`per_page` max 100).
const DELIVERY_PAGE: usize = 100;

/// An entry of the App's delivery log (`hook-delivery-item`).
#[derive(Debug, Deserialize)]
struct HookDeliveryItem {
    id: u64,
    guid: String,
    delivered_at: String,
    redelivery: bool,
    status_code: u16,
    event: String,
    action: Option<String>,
}

impl HookDeliveryItem {
    fn into_attempt(self) -> Result<DeliveryAttempt, StepError> {
        let at = OffsetDateTime::parse(&self.delivered_at, &Rfc3339).map_err(|e| {
            StepError::GitHubError(format!(
                "list deliveries: delivered_at {:?} is not RFC 3339: {e}",
                self.delivered_at
            ))
        })?;
        Ok(DeliveryAttempt {
            id: self.id,
            guid: self.guid,
            delivered_at_epoch: u64::try_from(at.unix_timestamp()).unwrap_or(0),
            redelivery: self.redelivery,
            status_code: self.status_code,
            event: self.event,
            action: self.action,
        })
    }
}

/// One delivery with its request (`hook-delivery`): the payload tells which job it was about.
#[derive(Debug, Deserialize)]
struct HookDelivery {
    event: String,
    request: DeliveryRequest,
}

#[derive(Debug, Deserialize)]
struct DeliveryRequest {
    payload: Option<serde_json::Value>,
}

#[async_trait]
impl WebhookDeliveries for GitHubApp {
    async fn recent(
        &self,
        since_epoch: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StepError> {
        const WHAT: &str = "list deliveries";
        let mut attempts = Vec::new();
        let mut cursor: Option<String> = None;
        // Newest first: stop at the first page that reaches back past `since_epoch`.
        for _ in 0..limit.div_ceil(DELIVERY_PAGE) {
            let mut route = format!("/app/hook/deliveries?per_page={DELIVERY_PAGE}");
            if let Some(cursor) = &cursor {
                route.push_str("&cursor=");
                route.push_str(&percent_encode(cursor));
            }
            let answer = call(
                &*self.metrics,
                &self.app,
                WHAT,
                Method::Get,
                &route,
                None::<&()>,
            )
            .await?
            .expect(WHAT, &[200])?;
            let page: Vec<HookDeliveryItem> = answer.json(WHAT)?;
            let mut reached_since = false;
            for item in page {
                let attempt = item.into_attempt()?;
                reached_since |= attempt.delivered_at_epoch < since_epoch;
                if attempt.delivered_at_epoch >= since_epoch {
                    attempts.push(attempt);
                }
            }
            cursor = answer.link.as_deref().and_then(next_cursor);
            if reached_since || cursor.is_none() || attempts.len() >= limit {
                break;
            }
        }
        attempts.truncate(limit);
        Ok(attempts)
    }

    async fn job_of(&self, delivery_id: u64) -> Result<Option<JobRef>, StepError> {
        const WHAT: &str = "get delivery";
        let route = format!("/app/hook/deliveries/{delivery_id}");
        let answer = call(
            &*self.metrics,
            &self.app,
            WHAT,
            Method::Get,
            &route,
            None::<&()>,
        )
        .await?
        .expect(WHAT, &[200, 404])?;
        if answer.status == 404 {
            return Ok(None);
        }
        let delivery: HookDelivery = answer.json(WHAT)?;
        if delivery.event != "workflow_job" {
            return Ok(None);
        }
        Ok(delivery
            .request
            .payload
            .and_then(|payload| serde_json::from_value::<WorkflowJobEvent>(payload).ok())
            .and_then(|event| JobRef::from_event(&event)))
    }

    async fn redeliver(&self, delivery_id: u64) -> Result<(), StepError> {
        const WHAT: &str = "redeliver";
        let route = format!("/app/hook/deliveries/{delivery_id}/attempts");
        call(
            &*self.metrics,
            &self.app,
            WHAT,
            Method::Post,
            &route,
            None::<&()>,
        )
        .await?
        .expect(WHAT, &[202])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::metrics::RecordedMetrics;
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A GitHub on 127.0.0.1 that answers from a script, one connection per request, and keeps
    /// what it was asked ("METHOD /path?query" and the body).
    struct Scripted {
        url: String,
        asked: Arc<Mutex<Vec<(String, String)>>>,
        metrics: Arc<RecordedMetrics>,
    }

    type Reply = (u16, Vec<(&'static str, String)>, String);

    async fn scripted(replies: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let mut replies: VecDeque<Reply> = replies.into();
        tokio::spawn(async move {
            while let Some((status, headers, body)) = replies.pop_front() {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then as many body bytes as content-length says.
                loop {
                    let n = socket.read(&mut chunk).await.unwrap_or(0);
                    request.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length || n == 0 {
                            let line = text.lines().next().unwrap_or_default();
                            let target = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
                            log.lock()
                                .unwrap()
                                .push((target, text[end + 4..].to_string()));
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let mut head = format!("HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Scripted {
            url,
            asked,
            metrics: Arc::default(),
        }
    }

    impl Scripted {
        fn asked(&self) -> Vec<String> {
            self.asked
                .lock()
                .unwrap()
                .iter()
                .map(|(t, _)| t.clone())
                .collect()
        }

        /// The App as the Lambdas hold it, with installation 7's client already made (no token
        /// request: that needs a real key and is octocrab's, not ours).
        fn app(&self) -> GitHubApp {
            let client = Octocrab::builder()
                .base_uri(self.url.as_str())
                .unwrap()
                .add_retry_config(RetryConfig::None)
                .build()
                .unwrap();
            GitHubApp {
                app: client.clone(),
                installations: Mutex::new(HashMap::from([(7, client)])),
                runner_group_id: 1,
                metrics: self.metrics.clone(),
            }
        }
    }

    fn job() -> JobRef {
        JobRef {
            job_id: JobId::new(42),
            installation_id: 7,
            ..crate::domain::job::tests::job_ref(&["self-hosted"])
        }
    }

    fn ok(body: &str) -> Reply {
        (200, vec![], body.to_string())
    }

    fn error(status: u16, message: &str, headers: Vec<(&'static str, String)>) -> Reply {
        (
            status,
            headers,
            format!(
                r#"{{"message":"{message}","documentation_url":"https://docs.github.com/rest"}}"#
            ),
        )
    }

    const QUEUED: &str =
        r#"{"id":42,"status":"queued","conclusion":null,"runner_id":null,"runner_name":null}"#;

    #[tokio::test]
    async fn a_server_error_on_a_read_is_retried_and_then_answered() {
        let github = scripted(vec![error(502, "Server Error", vec![]), ok(QUEUED)]).await;
        let state = github.app().job(&job()).await.unwrap();
        assert_eq!(state, JobOnGitHub::NotStarted);
        assert_eq!(github.asked().len(), 2);
    }

    #[tokio::test]
    async fn server_errors_on_every_try_are_transient_after_max_tries() {
        let replies = (0..MAX_TRIES)
            .map(|_| error(503, "Service Unavailable", vec![]))
            .collect();
        let github = scripted(replies).await;
        let error = github.app().job(&job()).await.unwrap_err();
        assert_eq!(error.name(), "Transient");
        assert_eq!(github.asked().len(), MAX_TRIES as usize);
    }

    #[tokio::test]
    async fn a_short_secondary_rate_limit_is_waited_out_once() {
        let limited = error(
            429,
            "You have exceeded a secondary rate limit.",
            vec![("retry-after", "1".into())],
        );
        let github = scripted(vec![limited, ok(QUEUED)]).await;
        let started = std::time::Instant::now();
        github.app().job(&job()).await.unwrap();
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(1),
            "waited as asked"
        );
        assert_eq!(github.asked().len(), 2);
    }

    #[tokio::test]
    async fn an_exhausted_primary_rate_limit_is_throttled_without_calling_again() {
        let reset = (now_epoch() + 1800).to_string();
        let limited = error(
            403,
            "API rate limit exceeded for installation ID 7.",
            vec![
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-limit", "5000".into()),
                ("x-ratelimit-reset", reset),
            ],
        );
        let github = scripted(vec![limited]).await;
        let error = github.app().job(&job()).await.unwrap_err();
        assert_eq!(error.name(), "Throttled");
        assert!(error.to_string().contains("0 of 5000 left"), "{error}");
        assert_eq!(github.asked().len(), 1);
        let left: Vec<(Metric, f64)> = github
            .metrics
            .taken()
            .iter()
            .map(|d| (d.metric, d.value))
            .collect();
        assert_eq!(left, [(Metric::GitHubRateLimitRemaining, 0.0)]);
    }

    #[tokio::test]
    async fn a_server_error_on_generate_jitconfig_is_not_repeated_blindly() {
        let github = scripted(vec![error(500, "Server Error", vec![])]).await;
        let name = RunnerName::new(JobId::new(42), crate::domain::ids::Attempt::FIRST);
        let error = github
            .app()
            .issue_jit_config(&job(), name, &[])
            .await
            .unwrap_err();
        assert_eq!(error.name(), "Transient");
        assert_eq!(github.asked().len(), 1);
    }

    #[tokio::test]
    async fn a_runner_left_registered_by_an_earlier_try_is_removed_and_registered_again() {
        let name = RunnerName::new(JobId::new(42), crate::domain::ids::Attempt::FIRST);
        let listed =
            format!(r#"{{"total_count":1,"runners":[{{"id":5,"name":"{name}","busy":false}}]}}"#);
        let jit = r#"{"runner":{"id":6},"encoded_jit_config":"e30="}"#;
        let github = scripted(vec![
            error(
                409,
                "Already exists - A runner with the name already exists.",
                vec![],
            ),
            ok(&listed),
            (204, vec![], String::new()),
            (201, vec![], jit.into()),
        ])
        .await;
        let config = github
            .app()
            .issue_jit_config(&job(), name, &["self-hosted".into()])
            .await
            .unwrap();
        assert_eq!(config.runner_id, 6);
        let asked = github.asked();
        assert_eq!(
            asked[1],
            format!("GET /repos/octo-org/app/actions/runners?name={name}")
        );
        assert_eq!(asked[2], "DELETE /repos/octo-org/app/actions/runners/5");
        assert_eq!(
            asked[3],
            "POST /repos/octo-org/app/actions/runners/generate-jitconfig"
        );
    }

    #[tokio::test]
    async fn a_busy_runner_with_our_name_is_never_removed() {
        let name = RunnerName::new(JobId::new(42), crate::domain::ids::Attempt::FIRST);
        let listed =
            format!(r#"{{"total_count":1,"runners":[{{"id":5,"name":"{name}","busy":true}}]}}"#);
        let github = scripted(vec![error(409, "Already exists", vec![]), ok(&listed)]).await;
        let error = github
            .app()
            .issue_jit_config(&job(), name, &[])
            .await
            .unwrap_err();
        assert_eq!(error.name(), "GitHubError");
        assert!(!github.asked().iter().any(|a| a.starts_with("DELETE")));
    }

    #[tokio::test]
    async fn the_delivery_log_is_read_page_by_page_until_the_lookback() {
        let item = |id: u64, at: &str, status: u16| {
            format!(
                r#"{{"id":{id},"guid":"g{id}","delivered_at":"{at}","redelivery":false,"duration":0.1,"status":"x","status_code":{status},"event":"workflow_job","action":"queued","installation_id":7,"repository_id":1,"throttled_at":null}}"#
            )
        };
        let page1 = format!(
            "[{},{}]",
            item(9, "2026-11-24T10:00:00Z", 502),
            item(8, "2026-11-24T09:59:00Z", 200)
        );
        let page2 = format!(
            "[{},{}]",
            item(7, "2026-11-24T09:58:00Z", 200),
            item(6, "2026-11-24T08:00:00Z", 200)
        );
        let next = |cursor: &str| {
            vec![("link", format!("<http://elsewhere.example/app/hook/deliveries?per_page=100&cursor={cursor}>; rel=\"next\""))]
        };
        let github = scripted(vec![
            (200, next("v1%2B8"), page1),
            (200, next("v1_6"), page2),
        ])
        .await;
        let since = OffsetDateTime::parse("2026-11-24T09:30:00Z", &Rfc3339)
            .unwrap()
            .unix_timestamp() as u64;
        let attempts = github.app().recent(since, 500).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![9, 8, 7],
            "none older than the lookback"
        );
        assert_eq!(attempts[0].status_code, 502);
        assert_eq!(
            github.asked(),
            vec![
                "GET /app/hook/deliveries?per_page=100".to_string(),
                "GET /app/hook/deliveries?per_page=100&cursor=v1%2B8".to_string(),
            ],
            "the cursor is asked of our GitHub, not the link's host; no page past the lookback"
        );
    }

    #[tokio::test]
    async fn a_delivery_names_its_job_and_is_redelivered_with_a_new_attempt() {
        let payload =
            include_str!("../../../../../tests/fixtures/webhooks/workflow_job.queued.2.json");
        let delivery = format!(
            r#"{{"id":9,"guid":"g","event":"workflow_job","action":"queued","request":{{"headers":{{}},"payload":{payload}}},"response":{{"headers":{{}},"payload":null}}}}"#
        );
        let github = scripted(vec![
            ok(&delivery),
            (202, vec![], "{}".into()),
            error(404, "Not Found", vec![]),
        ])
        .await;
        let app = github.app();
        let job = app
            .job_of(9)
            .await
            .unwrap()
            .expect("a workflow_job delivery");
        let event: WorkflowJobEvent = serde_json::from_str(payload).unwrap();
        assert_eq!(job.job_id, event.workflow_job.id);
        app.redeliver(9).await.unwrap();
        assert_eq!(
            app.job_of(10).await.unwrap(),
            None,
            "a delivery GitHub no longer has"
        );
        assert_eq!(github.asked()[1], "POST /app/hook/deliveries/9/attempts");
    }

    #[test]
    fn client_errors_fail_the_job_and_server_errors_are_retried() {
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
        let error = GitHubApp::new(
            "https://api.github.com",
            1,
            &Sensitive::new("not a key"),
            1,
            Arc::new(RecordedMetrics::default()),
        )
        .err()
        .expect("must fail");
        assert!(error.to_string().contains("not a valid RSA PEM key"));
    }
}
