//! The GitHub webhook: verify, classify (pure), then start an execution or deliver a callback.

use super::{deliver, Lifecycle};
use crate::domain::config::Config;
use crate::domain::ids::{JobId, RunnerName};
use crate::domain::job::{
    console_url, Conclusion, JobRef, WorkflowJob, WorkflowJobAction, WorkflowJobEvent,
};
use crate::domain::labels::is_ours;
use crate::domain::record::JobRecord;
use crate::domain::waits::{Completion, Registered, Signal, Taken};
use crate::error::StepError;
use crate::ports::Executions;
use crate::signature::WebhookSecret;
use serde::Serialize;
use std::sync::Arc;
use tracing::Instrument;

/// The parts of the HTTP request the webhook reads.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub event: Option<String>,
    pub delivery: Option<String>,
    pub signature: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookResponse {
    #[serde(skip)]
    pub status: u16,
    pub status_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
}

impl WebhookResponse {
    fn new(status: u16, status_text: &'static str, reason: impl Into<String>) -> Self {
        Self {
            status,
            status_text,
            reason: Some(reason.into()),
            job_id: None,
        }
    }
}

/// The largest body the webhook reads: 1 MiB. A larger one is answered 413 before its signature is
/// checked or its JSON parsed.
///
/// - GitHub caps webhook payloads at 25 MB and does not deliver larger ones
///   (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap>), and Lambda
///   takes at most 6 MB in a synchronous invocation, Function URL requests included
///   (<https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html>): those are the bounds
///   outside tasuki's choice.
/// - A `workflow_job` delivery is a few KB: GitHub's examples (`tests/fixtures/webhooks/`) are
///   8–14 KB, most of it the fixed `repository`/`organization`/`sender` objects. Only two parts grow
///   with the workflow: `labels` (a runner takes at most 100: `labels::MAX_RUNNER_LABELS`) and
///   `steps` (about 200 bytes each, and only in `in_progress`/`completed`). To reach 1 MiB a job
///   would need some 5 000 steps, or labels hundreds of times longer than any tasuki serves; the
///   limit is two orders of magnitude above a real delivery, yet keeps what an unauthenticated
///   caller can make the webhook hash and parse far below Lambda's own limit. A delivery refused
///   for its size shows as 413 in the GitHub App's delivery log, with this reason.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What to do with a delivery, decided without I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Over [`MAX_BODY_BYTES`]: refused unread (HTTP 413).
    TooLarge {
        bytes: usize,
    },
    Unauthorized(&'static str),
    Malformed(String),
    Ignore(String),
    Queue(JobRef),
    /// Signals for jobs: the job GitHub reports on, and the job a stolen runner was launched for;
    /// with the reported job when it is ours, so that a job first heard of here (its `queued`
    /// delivery late or lost) is recorded rather than forgotten.
    Signal(Vec<(JobId, Signal)>, Option<JobRef>),
}

pub fn decide(secret: &WebhookSecret, request: &WebhookRequest) -> Decision {
    if request.body.len() > MAX_BODY_BYTES {
        return Decision::TooLarge {
            bytes: request.body.len(),
        };
    }
    if request.signature.is_none() {
        return Decision::Unauthorized("missing X-Hub-Signature-256");
    }
    if !secret.verify(request.signature.as_deref(), &request.body) {
        return Decision::Unauthorized("signature does not match");
    }
    match request.event.as_deref() {
        Some("workflow_job") => {}
        Some("ping") => return Decision::Ignore("pong".into()),
        Some(other) => return Decision::Ignore(format!("`{other}` events are not used")),
        None => return Decision::Malformed("missing X-GitHub-Event".into()),
    }
    let event: WorkflowJobEvent = match serde_json::from_slice(&request.body) {
        Ok(event) => event,
        Err(e) => return Decision::Malformed(format!("not a workflow_job payload: {e}")),
    };
    let job = &event.workflow_job;
    if !is_ours(&job.labels) {
        // A job that is not ours still takes a runner tasuki launched when its labels are a subset
        // of the runner's (`runs-on: self-hosted`): the job that runner was for has lost it, and
        // must not wait for it nor stop the task that now runs someone else's job.
        let running = matches!(
            event.action,
            WorkflowJobAction::InProgress | WorkflowJobAction::Completed
        );
        if let Some(taken) = taken_from(job).filter(|_| running) {
            return Decision::Signal(vec![taken], None);
        }
        return Decision::Ignore("no tasuki label".into());
    }
    let reported = JobRef::from_event(&event);
    match event.action {
        WorkflowJobAction::Queued => match reported {
            Some(job) => Decision::Queue(job),
            None => Decision::Malformed("no installation: is the GitHub App installed?".into()),
        },
        WorkflowJobAction::InProgress => match running_on(job) {
            Some(signals) => Decision::Signal(signals, reported),
            None => Decision::Malformed("in_progress without runner_name/runner_id".into()),
        },
        WorkflowJobAction::Completed => match job.runner_name {
            // Ended before any runner took it (cancelled, or skipped).
            None => Decision::Signal(vec![(job.id, Signal::Cancelled)], reported),
            // Also says where it ran, in case the in_progress delivery was lost.
            Some(_) => {
                let mut signals = running_on(job).unwrap_or_default();
                signals.push((
                    job.id,
                    Signal::Completed(Completion {
                        conclusion: job.conclusion.unwrap_or(Conclusion::Unknown),
                    }),
                ));
                Decision::Signal(signals, reported)
            }
        },
        WorkflowJobAction::Waiting | WorkflowJobAction::Other => {
            Decision::Ignore("action not used".into())
        }
    }
}

/// The job runs on this runner; if tasuki launched the runner for another job, that job lost it.
/// GitHub gives a runner any queued job its labels match: pair by job, not by intent.
fn running_on(job: &WorkflowJob) -> Option<Vec<(JobId, Signal)>> {
    let (runner_name, runner_id) = (job.runner_name.clone()?, job.runner_id?);
    let mut signals = vec![(
        job.id,
        Signal::Registered(Registered {
            runner_name: runner_name.clone(),
            runner_id,
            job_id: job.id,
        }),
    )];
    signals.extend(taken_from(job));
    Some(signals)
}

/// The job runs on a runner tasuki launched for another job: that job's signal that it lost it.
fn taken_from(job: &WorkflowJob) -> Option<(JobId, Signal)> {
    let ours = RunnerName::parse(job.runner_name.as_deref()?)?;
    (ours.job != job.id).then_some((
        ours.job,
        Signal::RunnerTaken(Taken {
            runner_name: ours,
            by_job: job.id,
        }),
    ))
}

pub struct Webhook {
    pub config: Arc<Config>,
    pub secret: WebhookSecret,
    pub lifecycle: Lifecycle,
    pub executions: Arc<dyn Executions>,
}

impl Webhook {
    pub async fn handle(&self, request: WebhookRequest) -> WebhookResponse {
        let span = tracing::info_span!(
            "webhook",
            delivery = request.delivery.as_deref().unwrap_or("-"),
            event = request.event.as_deref().unwrap_or("-"),
            job_id = tracing::field::Empty,
            run_attempt = tracing::field::Empty,
            execution = tracing::field::Empty,
        );
        async {
            let decision = decide(&self.secret, &request);
            let response = match self.act(decision).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(%error, "webhook failed; GitHub will show the delivery as failed");
                    WebhookResponse::new(500, "error", error.name().as_str())
                }
            };
            tracing::info!(status = response.status, reason = ?response.reason, "webhook answered");
            response
        }
        .instrument(span)
        .await
    }

    /// Records a job of ours first heard of from a later action (its `queued` delivery is late or
    /// lost) and starts its execution, which launches nothing for a job GitHub already gave to a
    /// runner (`JobStarted`); a late `queued` then finds it started.
    async fn first_heard(&self, job: &JobRef, signal: &Signal) -> Result<JobRecord, StepError> {
        tracing::warn!(
            job_id = job.job_id.get(),
            "a job first heard of after its queued delivery: recording it"
        );
        self.receive(job).await?;
        let record = self
            .lifecycle
            .store
            .signal(job.job_id, signal)
            .await?
            .ok_or_else(|| StepError::Transient(format!("job {} vanished", job.job_id)))?;
        self.executions.start(job).await?;
        Ok(record)
    }

    /// Writes a job's `received` row; `false` when it was already there.
    async fn receive(&self, job: &JobRef) -> Result<bool, StepError> {
        let execution_arn = job.execution_arn(&self.config.state_machine_arn);
        let received = JobRecord::received(
            job.clone(),
            execution_arn,
            &self.lifecycle.timeouts,
            &self.lifecycle.clock.now(),
        );
        Ok(self.lifecycle.store.create(&received).await?)
    }

    async fn act(&self, decision: Decision) -> Result<WebhookResponse, StepError> {
        match decision {
            Decision::TooLarge { bytes } => Ok(WebhookResponse::new(
                413,
                "too-large",
                format!("body of {bytes} bytes is over the {MAX_BODY_BYTES}-byte limit"),
            )),
            Decision::Unauthorized(reason) => Ok(WebhookResponse::new(401, "unauthorized", reason)),
            Decision::Malformed(reason) => Ok(WebhookResponse::new(400, "malformed", reason)),
            Decision::Ignore(reason) => Ok(WebhookResponse::new(200, "ignored", reason)),
            Decision::Queue(job) => {
                let span = tracing::Span::current();
                span.record("job_id", job.job_id.get());
                span.record("run_attempt", job.run_attempt);
                span.record("execution", job.execution_name());
                // Row first: a crash before StartExecution is healed by the rescue sweep.
                let created = self.receive(&job).await?;
                let execution = self.executions.start(&job).await?;
                tracing::info!(
                    execution_arn = %execution,
                    console_url = console_url(&execution).unwrap_or_default(),
                    "execution started"
                );
                Ok(WebhookResponse {
                    job_id: Some(job.job_id),
                    ..WebhookResponse::new(
                        202,
                        "accepted",
                        if created {
                            "execution started"
                        } else {
                            "already started"
                        },
                    )
                })
            }
            Decision::Signal(signals, reported) => {
                let mut outcome = None;
                for (job_id, signal) in signals {
                    let record = match self.lifecycle.store.signal(job_id, &signal).await? {
                        Some(record) => record,
                        None => match reported.as_ref().filter(|job| job.job_id == job_id) {
                            Some(job) => self.first_heard(job, &signal).await?,
                            None => continue,
                        },
                    };
                    let delivered = deliver(&*self.executions, &record).await?;
                    tracing::info!(job_id = job_id.get(), signal = ?signal, delivered = delivered.is_some(), "signal");
                    outcome.get_or_insert((job_id, delivered.is_some()));
                }
                Ok(match outcome {
                    None => WebhookResponse::new(200, "ignored", "unknown job"),
                    Some((job_id, delivered)) => WebhookResponse {
                        job_id: Some(job_id),
                        ..WebhookResponse::new(
                            202,
                            "accepted",
                            if delivered {
                                "callback sent"
                            } else {
                                "signal recorded"
                            },
                        )
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::tests::fixture;

    fn secret() -> WebhookSecret {
        WebhookSecret::new("s3cr3t")
    }

    fn request(event: &str, body: Vec<u8>) -> WebhookRequest {
        WebhookRequest {
            event: Some(event.into()),
            delivery: Some("d".into()),
            signature: Some(secret().sign(&body)),
            body,
        }
    }

    fn payload(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut value: serde_json::Value = serde_json::from_slice(&fixture(name)).unwrap();
        edit(&mut value);
        serde_json::to_vec(&value).unwrap()
    }

    fn ours<'a>(labels: &'a [&'a str]) -> impl FnOnce(&mut serde_json::Value) + 'a {
        move |v| v["workflow_job"]["labels"] = serde_json::json!(labels)
    }

    /// A signed queued delivery of ours, padded with JSON whitespace to exactly `len` bytes.
    fn queued_of_length(len: usize) -> WebhookRequest {
        let mut body = payload("workflow_job.queued.2.json", ours(&["tasuki"]));
        assert!(body.len() <= len);
        body.resize(len, b' ');
        request("workflow_job", body)
    }

    #[test]
    fn a_body_of_the_limit_is_read_and_one_byte_more_is_refused_unread() {
        let at_limit = queued_of_length(MAX_BODY_BYTES);
        assert!(matches!(
            decide(&secret(), &at_limit),
            Decision::Queue(job) if job.labels == ["tasuki"]
        ));
        let over = queued_of_length(MAX_BODY_BYTES + 1);
        assert_eq!(
            decide(&secret(), &over),
            Decision::TooLarge {
                bytes: MAX_BODY_BYTES + 1
            }
        );
        // Refused before the signature is checked or the event read.
        let unsigned = WebhookRequest {
            event: None,
            delivery: None,
            signature: None,
            body: vec![0xff; MAX_BODY_BYTES + 1],
        };
        assert_eq!(
            decide(&secret(), &unsigned),
            Decision::TooLarge {
                bytes: MAX_BODY_BYTES + 1
            }
        );
    }

    #[test]
    fn missing_or_wrong_signatures_are_unauthorized() {
        let body = fixture("workflow_job.queued.2.json");
        let mut missing = request("workflow_job", body.clone());
        missing.signature = None;
        assert!(matches!(
            decide(&secret(), &missing),
            Decision::Unauthorized(_)
        ));
        let mut wrong = request("workflow_job", body);
        wrong.signature = Some(WebhookSecret::new("other").sign(&wrong.body));
        assert!(matches!(
            decide(&secret(), &wrong),
            Decision::Unauthorized(_)
        ));
    }

    #[test]
    fn malformed_bodies_are_rejected_after_the_signature_check() {
        assert!(matches!(
            decide(&secret(), &request("workflow_job", b"{not json".to_vec())),
            Decision::Malformed(_)
        ));
        assert!(matches!(
            decide(
                &secret(),
                &request("workflow_job", b"{\"action\":\"queued\"}".to_vec())
            ),
            Decision::Malformed(_)
        ));
    }

    #[test]
    fn pings_other_events_and_foreign_labels_are_ignored() {
        assert_eq!(
            decide(&secret(), &request("ping", fixture("ping.event.1.json"))),
            Decision::Ignore("pong".into())
        );
        assert!(matches!(
            decide(
                &secret(),
                &request("workflow_run", fixture("workflow_run.completed.1.json"))
            ),
            Decision::Ignore(_)
        ));
        assert!(matches!(
            decide(
                &secret(),
                &request("workflow_job", fixture("workflow_job.queued.2.json"))
            ),
            Decision::Ignore(_)
        ));
    }

    #[test]
    fn a_queued_job_with_our_label_is_queued() {
        let body = payload(
            "workflow_job.queued.2.json",
            ours(&["self-hosted", "tasuki-4cpu-8gb"]),
        );
        let Decision::Queue(job) = decide(&secret(), &request("workflow_job", body)) else {
            panic!()
        };
        assert_eq!(job.job_id, JobId::new(12877621891));
        assert_eq!(job.labels, ["self-hosted", "tasuki-4cpu-8gb"]);
    }

    #[test]
    fn in_progress_marks_the_job_running_and_a_stolen_runner_taken() {
        let body = payload("workflow_job.in_progress.3.json", |v| {
            v["workflow_job"]["labels"] = serde_json::json!(["tasuki"]);
            v["workflow_job"]["runner_name"] = "tasuki-99-2".into();
            v["workflow_job"]["runner_id"] = 17.into();
        });
        let Decision::Signal(signals, _) = decide(&secret(), &request("workflow_job", body)) else {
            panic!()
        };
        let job = signals[0].0;
        assert!(
            matches!(&signals[0].1, Signal::Registered(r) if r.runner_id == 17 && r.job_id == job)
        );
        let taken = Taken {
            runner_name: RunnerName::parse("tasuki-99-2").unwrap(),
            by_job: job,
        };
        assert_eq!(signals[1], (JobId::new(99), Signal::RunnerTaken(taken)));
        assert_eq!(signals.len(), 2);
    }

    #[test]
    fn a_job_that_is_not_ours_taking_our_runner_is_a_theft_and_nothing_else() {
        let on = |action: &str, runner: Option<&str>| {
            let body = payload("workflow_job.in_progress.3.json", |v| {
                v["action"] = action.into();
                v["workflow_job"]["labels"] = serde_json::json!(["self-hosted"]);
                v["workflow_job"]["id"] = 5.into();
                v["workflow_job"]["runner_name"] = serde_json::json!(runner);
                v["workflow_job"]["runner_id"] = 17.into();
            });
            decide(&secret(), &request("workflow_job", body))
        };
        let taken = Decision::Signal(
            vec![(
                JobId::new(99),
                Signal::RunnerTaken(Taken {
                    runner_name: RunnerName::parse("tasuki-99-2").unwrap(),
                    by_job: JobId::new(5),
                }),
            )],
            None,
        );
        assert_eq!(on("in_progress", Some("tasuki-99-2")), taken);
        assert_eq!(on("completed", Some("tasuki-99-2")), taken);
        for (action, runner) in [
            ("in_progress", Some("build-box-1")),
            ("in_progress", None),
            ("queued", Some("tasuki-99-2")),
            ("waiting", Some("tasuki-99-2")),
            ("in_progress", Some("tasuki-5-1")),
        ] {
            assert_eq!(
                on(action, runner),
                Decision::Ignore("no tasuki label".into()),
                "{action} {runner:?}"
            );
        }
    }

    #[test]
    fn a_cancelled_job_without_a_runner_signals_cancellation() {
        let body = payload("workflow_job.completed.1.json", |v| {
            v["workflow_job"]["labels"] = serde_json::json!(["tasuki"]);
            v["workflow_job"]["runner_name"] = serde_json::Value::Null;
            v["workflow_job"]["runner_id"] = serde_json::Value::Null;
            v["workflow_job"]["conclusion"] = "cancelled".into();
            v["workflow_job"]["id"] = 5.into();
            v["installation"] = serde_json::json!({"id": 42});
        });
        let Decision::Signal(signals, Some(job)) =
            decide(&secret(), &request("workflow_job", body))
        else {
            panic!("a signal about a job of ours")
        };
        assert_eq!(signals, vec![(JobId::new(5), Signal::Cancelled)]);
        assert_eq!(job.job_id, JobId::new(5));
    }

    #[test]
    fn a_completed_job_also_says_where_it_ran_in_case_in_progress_was_lost() {
        let body = payload("workflow_job.completed.1.json", |v| {
            v["workflow_job"]["labels"] = serde_json::json!(["tasuki"]);
            v["workflow_job"]["id"] = 5.into();
            v["workflow_job"]["runner_name"] = "tasuki-5-1".into();
            v["workflow_job"]["runner_id"] = 3.into();
            v["workflow_job"]["conclusion"] = "failure".into();
        });
        let Decision::Signal(signals, _) = decide(&secret(), &request("workflow_job", body)) else {
            panic!()
        };
        let five = JobId::new(5);
        assert!(
            matches!(&signals[0], (id, Signal::Registered(r)) if *id == five && r.runner_id == 3)
        );
        assert_eq!(
            signals[1],
            (
                five,
                Signal::Completed(Completion {
                    conclusion: Conclusion::Failure
                })
            )
        );
        assert_eq!(signals.len(), 2);
    }
}
