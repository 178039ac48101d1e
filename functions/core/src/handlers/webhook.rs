//! The GitHub webhook: verify, classify (pure), then start an execution or deliver a callback.

use super::deliver;
use crate::domain::config::Config;
use crate::domain::job::{parse_runner_name, JobRef, WorkflowJobAction, WorkflowJobEvent};
use crate::domain::labels::is_ours;
use crate::domain::waits::{Registered, Signal};
use crate::error::StepError;
use crate::ports::{Executions, LifecycleStore};
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
    pub job_id: Option<u64>,
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

/// What to do with a delivery, decided without I/O.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Unauthorized(&'static str),
    Malformed(String),
    Ignore(String),
    Queue(JobRef),
    Signal { job_id: u64, signal: SignalKind },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SignalKind {
    Registered {
        runner_name: String,
        runner_id: u64,
        took_job: u64,
    },
    Completed {
        conclusion: String,
    },
    Cancelled,
}

impl SignalKind {
    fn into_signal(self) -> Signal {
        match self {
            SignalKind::Registered {
                runner_name,
                runner_id,
                took_job,
            } => Signal::Registered(Registered {
                runner_name,
                runner_id,
                job_id: took_job,
            }),
            SignalKind::Completed { conclusion } => Signal::Completed { conclusion },
            SignalKind::Cancelled => Signal::Cancelled,
        }
    }
}

pub fn decide(secret: &WebhookSecret, request: &WebhookRequest) -> Decision {
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
        return Decision::Ignore("no tasuki label".into());
    }
    let ours = job.runner_name.as_deref().and_then(parse_runner_name);
    match event.action {
        WorkflowJobAction::Queued => match JobRef::from_event(&event) {
            Some(job) => Decision::Queue(job),
            None => Decision::Malformed("no installation: is the GitHub App installed?".into()),
        },
        WorkflowJobAction::InProgress => match (ours, job.runner_id) {
            (Some((launched_for, _)), Some(runner_id)) => Decision::Signal {
                job_id: launched_for,
                signal: SignalKind::Registered {
                    runner_name: job.runner_name.clone().unwrap_or_default(),
                    runner_id,
                    took_job: job.id,
                },
            },
            _ => Decision::Ignore(format!(
                "taken by runner {:?}, which tasuki did not launch",
                job.runner_name
            )),
        },
        WorkflowJobAction::Completed => match (ours, job.conclusion.as_deref()) {
            (Some((launched_for, _)), conclusion) => Decision::Signal {
                job_id: launched_for,
                signal: SignalKind::Completed {
                    conclusion: conclusion.unwrap_or("unknown").to_string(),
                },
            },
            (None, Some("cancelled")) | (None, None) if job.runner_name.is_none() => {
                Decision::Signal {
                    job_id: job.id,
                    signal: SignalKind::Cancelled,
                }
            }
            _ => Decision::Ignore("completed on a runner tasuki did not launch".into()),
        },
        WorkflowJobAction::Waiting | WorkflowJobAction::Other => {
            Decision::Ignore("action not used".into())
        }
    }
}

pub struct Webhook {
    pub config: Arc<Config>,
    pub secret: WebhookSecret,
    pub store: Arc<dyn LifecycleStore>,
    pub executions: Arc<dyn Executions>,
}

impl Webhook {
    pub async fn handle(&self, request: WebhookRequest) -> WebhookResponse {
        let span = tracing::info_span!(
            "webhook",
            delivery = request.delivery.as_deref().unwrap_or("-"),
            event = request.event.as_deref().unwrap_or("-"),
            job_id = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        async {
            let decision = decide(&self.secret, &request);
            let response = match self.act(decision).await {
                Ok(response) => response,
                Err(error) => {
                    tracing::error!(%error, "webhook failed; GitHub will show the delivery as failed");
                    WebhookResponse::new(500, "error", error.name())
                }
            };
            tracing::info!(status = response.status, reason = ?response.reason, "webhook answered");
            response
        }
        .instrument(span)
        .await
    }

    async fn act(&self, decision: Decision) -> Result<WebhookResponse, StepError> {
        match decision {
            Decision::Unauthorized(reason) => Ok(WebhookResponse::new(401, "unauthorized", reason)),
            Decision::Malformed(reason) => Ok(WebhookResponse::new(400, "malformed", reason)),
            Decision::Ignore(reason) => Ok(WebhookResponse::new(200, "ignored", reason)),
            Decision::Queue(job) => {
                tracing::Span::current().record("job_id", job.job_id);
                let name = job.execution_name();
                let execution_arn = execution_arn(&self.config.state_machine_arn, &name);
                // Row first: a crash before StartExecution is healed by GitHub's redelivery.
                let created = self.store.create(&job, &execution_arn).await?;
                let input = serde_json::json!({ "job": job }).to_string();
                self.executions.start(&name, &input).await?;
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
            Decision::Signal { job_id, signal } => {
                tracing::Span::current().record("job_id", job_id);
                let Some(record) = self.store.signal(job_id, &signal.into_signal()).await? else {
                    return Ok(WebhookResponse::new(200, "ignored", "unknown job"));
                };
                let delivered = deliver(&*self.executions, &record).await?;
                Ok(WebhookResponse {
                    job_id: Some(job_id),
                    ..WebhookResponse::new(
                        202,
                        "accepted",
                        if delivered.is_some() {
                            "callback sent"
                        } else {
                            "signal recorded"
                        },
                    )
                })
            }
        }
    }
}

/// Execution ARNs follow from the state machine ARN and the execution name.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
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
        assert_eq!(job.job_id, 12877621891);
        assert_eq!(job.labels, ["self-hosted", "tasuki-4cpu-8gb"]);
    }

    #[test]
    fn in_progress_signals_the_job_the_runner_was_launched_for() {
        let body = payload("workflow_job.in_progress.3.json", |v| {
            v["workflow_job"]["labels"] = serde_json::json!(["tasuki"]);
            v["workflow_job"]["runner_name"] = "tasuki-99-2".into();
            v["workflow_job"]["runner_id"] = 17.into();
        });
        let Decision::Signal { job_id, signal } = decide(&secret(), &request("workflow_job", body))
        else {
            panic!()
        };
        assert_eq!(job_id, 99);
        assert!(matches!(
            signal,
            SignalKind::Registered { runner_id: 17, .. }
        ));
    }

    #[test]
    fn a_cancelled_job_without_a_runner_signals_cancellation() {
        let body = payload("workflow_job.completed.1.json", |v| {
            v["workflow_job"]["labels"] = serde_json::json!(["tasuki"]);
            v["workflow_job"]["runner_name"] = serde_json::Value::Null;
            v["workflow_job"]["runner_id"] = serde_json::Value::Null;
            v["workflow_job"]["conclusion"] = "cancelled".into();
            v["workflow_job"]["id"] = 5.into();
        });
        assert_eq!(
            decide(&secret(), &request("workflow_job", body)),
            Decision::Signal {
                job_id: 5,
                signal: SignalKind::Cancelled
            }
        );
    }

    #[test]
    fn execution_arns_follow_the_state_machine() {
        assert_eq!(
            execution_arn("arn:aws:states:us-east-1:1:stateMachine:sm", "7-1"),
            "arn:aws:states:us-east-1:1:execution:sm:7-1"
        );
    }
}
