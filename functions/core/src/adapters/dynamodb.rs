//! The lifecycle store on DynamoDB: one table, conditional writes, an event row per transition.

use crate::domain::job::JobRef;
use crate::domain::lifecycle::{JobState, Position};
use crate::domain::waits::{Registered, Signal, Signals, Stopped, Taken, Wait, WaitPhase};
use crate::ports::{Commit, JobRecord, LifecycleEvent, LifecycleStore, StoreError};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The GSI the rescue sweep reads: non-terminal jobs by state, oldest deadline first.
pub const STATE_DEADLINE_INDEX: &str = "by-state-deadline";
const JOB_SK: &str = "JOB";
const MAX_PAGES: usize = 50;

#[derive(Clone)]
pub struct DynamoLifecycleStore {
    client: Client,
    table: String,
    retention_seconds: u64,
}

impl DynamoLifecycleStore {
    pub fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        Self {
            client,
            table: table.into(),
            retention_seconds: u64::from(retention_days) * 86_400,
        }
    }

    fn expires_at(&self) -> u64 {
        crate::handlers::now_epoch() + self.retention_seconds
    }
}

fn pk(job_id: u64) -> String {
    format!("JOB#{job_id}")
}

fn event_sk(seq: u32) -> String {
    format!("EVENT#{seq:06}")
}

fn now_text() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The job item, attribute for attribute (schema in README).
#[derive(Debug, Serialize, Deserialize)]
struct JobItem {
    pk: String,
    sk: String,
    job_id: u64,
    run_id: u64,
    run_attempt: u32,
    repository: String,
    private: bool,
    workflow: String,
    job_name: String,
    labels: Vec<String>,
    installation_id: u64,
    state: JobState,
    attempt: u32,
    seq: u32,
    version: u64,
    created_at: String,
    updated_at: String,
    deadline: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi_state: Option<JobState>,
    expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execution_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runner_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runner_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conclusion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_phase: Option<WaitPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_registered: Option<Registered>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_conclusion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_stopped: Option<Stopped>,
    #[serde(default)]
    sig_cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_taken: Option<Taken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_happening: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EventItem {
    pk: String,
    sk: String,
    seq: u32,
    at: String,
    event: String,
    state: JobState,
    attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    candidate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    expires_at: u64,
}

impl JobItem {
    fn into_record(self) -> JobRecord {
        let wait = match (self.task_token, self.wait_phase, self.wait_attempt) {
            (Some(token), Some(phase), Some(attempt)) => Some(Wait {
                token,
                phase,
                attempt,
            }),
            _ => None,
        };
        JobRecord {
            job: JobRef {
                job_id: self.job_id,
                run_id: self.run_id,
                run_attempt: self.run_attempt,
                repository: self.repository,
                private: self.private,
                workflow: self.workflow,
                job_name: self.job_name,
                labels: self.labels,
                installation_id: self.installation_id,
            },
            position: Position {
                state: self.state,
                attempt: self.attempt,
            },
            seq: self.seq,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deadline: self.deadline,
            execution_arn: self.execution_arn,
            task_arn: self.task_arn,
            runner_name: self.runner_name,
            runner_id: self.runner_id,
            conclusion: self.conclusion,
            reason: self.reason,
            wait,
            signals: Signals {
                registered: self.sig_registered,
                conclusion: self.sig_conclusion,
                stopped: self.sig_stopped,
                cancelled: self.sig_cancelled,
                taken: self.sig_taken,
            },
            last_happening: self
                .last_happening
                .and_then(|h| serde_json::from_str(&h).ok()),
        }
    }

    fn from_record(record: &JobRecord, expires_at: u64) -> Self {
        let job = &record.job;
        let state = record.position.state;
        Self {
            pk: pk(job.job_id),
            sk: JOB_SK.into(),
            job_id: job.job_id,
            run_id: job.run_id,
            run_attempt: job.run_attempt,
            repository: job.repository.clone(),
            private: job.private,
            workflow: job.workflow.clone(),
            job_name: job.job_name.clone(),
            labels: job.labels.clone(),
            installation_id: job.installation_id,
            state,
            attempt: record.position.attempt,
            seq: record.seq,
            version: record.version,
            created_at: record.created_at.clone(),
            updated_at: record.updated_at.clone(),
            deadline: record.deadline,
            gsi_state: (!state.is_terminal()).then_some(state),
            expires_at,
            execution_arn: record.execution_arn.clone(),
            task_arn: record.task_arn.clone(),
            runner_name: record.runner_name.clone(),
            runner_id: record.runner_id,
            conclusion: record.conclusion.clone(),
            reason: record.reason.clone(),
            task_token: record.wait.as_ref().map(|w| w.token.clone()),
            wait_phase: record.wait.as_ref().map(|w| w.phase),
            wait_attempt: record.wait.as_ref().map(|w| w.attempt),
            sig_registered: record.signals.registered.clone(),
            sig_conclusion: record.signals.conclusion.clone(),
            sig_stopped: record.signals.stopped.clone(),
            sig_cancelled: record.signals.cancelled,
            sig_taken: record.signals.taken.clone(),
            last_happening: record
                .last_happening
                .as_ref()
                .and_then(|h| serde_json::to_string(h).ok()),
        }
    }
}

fn to_item<T: Serialize>(value: &T) -> Result<HashMap<String, AttributeValue>, StoreError> {
    serde_dynamo::to_item(value).map_err(|e| StoreError::Failure(format!("encode: {e}")))
}

fn from_item<T: for<'de> Deserialize<'de>>(
    item: HashMap<String, AttributeValue>,
) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Failure(format!("decode: {e}")))
}

fn store_error<E: ProvideErrorMetadata + std::fmt::Debug, R>(error: SdkError<E, R>) -> StoreError
where
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default().to_string();
    let message = error.message().unwrap_or_default().to_string();
    match code.as_str() {
        "ConditionalCheckFailedException" => StoreError::Conflict,
        "TransactionCanceledException" if message.contains("ConditionalCheckFailed") => {
            StoreError::Conflict
        }
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TransactionConflictException" => StoreError::Throttled(format!("{code}: {message}")),
        "" => StoreError::Failure(format!("{error:?}")),
        _ => StoreError::Failure(format!("{code}: {message}")),
    }
}

fn event_item(
    job_id: u64,
    seq: u32,
    position: Position,
    event: &str,
    candidate: Option<String>,
    reason: Option<String>,
    expires_at: u64,
) -> EventItem {
    EventItem {
        pk: pk(job_id),
        sk: event_sk(seq),
        seq,
        at: now_text(),
        event: event.to_string(),
        state: position.state,
        attempt: position.attempt,
        candidate,
        reason,
        expires_at,
    }
}

impl DynamoLifecycleStore {
    fn put(
        &self,
        item: HashMap<String, AttributeValue>,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        if !values.is_empty() {
            put = put.set_expression_attribute_values(Some(values));
        }
        let put = put
            .build()
            .map_err(|e| StoreError::Failure(e.to_string()))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn update_returning(
        &self,
        job_id: u64,
        expression: &str,
        condition: &str,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Option<JobRecord>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(job_id)))
            .key("sk", AttributeValue::S(JOB_SK.into()))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(item) => Ok(Some(from_item::<JobItem>(item)?.into_record())),
                None => Ok(None),
            },
            Err(e) => match store_error(e) {
                StoreError::Conflict => Ok(None),
                other => Err(other),
            },
        }
    }
}

fn values<const N: usize>(pairs: [(&str, AttributeValue); N]) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn number(n: impl ToString) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

fn encoded<T: Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(|e| StoreError::Failure(format!("encode: {e}")))
}

#[async_trait]
impl LifecycleStore for DynamoLifecycleStore {
    async fn create(&self, job: &JobRef, execution_arn: &str) -> Result<bool, StoreError> {
        let now = now_text();
        let expires_at = self.expires_at();
        let record = JobRecord {
            job: job.clone(),
            position: Position::RECEIVED,
            seq: 1,
            version: 1,
            created_at: now.clone(),
            updated_at: now,
            deadline: crate::handlers::now_epoch() + 900,
            execution_arn: Some(execution_arn.to_string()),
            task_arn: None,
            runner_name: None,
            runner_id: None,
            conclusion: None,
            reason: None,
            wait: None,
            signals: Signals::default(),
            last_happening: None,
        };
        let job_item = to_item(&JobItem::from_record(&record, expires_at))?;
        let event = to_item(&event_item(
            job.job_id,
            1,
            Position::RECEIVED,
            JobState::Received.as_str(),
            None,
            None,
            expires_at,
        ))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(self.put(job_item, "attribute_not_exists(pk)", HashMap::new())?)
            .transact_items(self.put(event, "attribute_not_exists(pk)", HashMap::new())?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match store_error(e) {
                StoreError::Conflict => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn get(&self, job_id: u64) -> Result<Option<JobRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk(job_id)))
            .key("sk", AttributeValue::S(JOB_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        out.item
            .map(|item| from_item::<JobItem>(item).map(JobItem::into_record))
            .transpose()
    }

    async fn commit(&self, from: &JobRecord, commit: &Commit) -> Result<(), StoreError> {
        let seq = from.seq + 1;
        let mut next = from.clone();
        next.position = commit.to;
        next.seq = seq;
        next.version = from.version + 1;
        next.updated_at = now_text();
        next.deadline = commit.deadline;
        next.last_happening = Some(commit.happening.clone());
        if let Some(task_arn) = &commit.task_arn {
            next.task_arn = Some(task_arn.clone());
        }
        if let Some((name, id)) = &commit.runner {
            next.runner_name = Some(name.clone());
            next.runner_id = Some(*id);
        }
        if let Some(conclusion) = &commit.conclusion {
            next.conclusion = Some(conclusion.clone());
        }
        if let Some(reason) = commit.happening.reason() {
            next.reason = Some(reason.to_string());
        }
        let expires_at = self.expires_at();
        let job_item = to_item(&JobItem::from_record(&next, expires_at))?;
        let event = to_item(&event_item(
            from.job.job_id,
            seq,
            commit.to,
            commit.happening.event_name(commit.to.state),
            commit.candidate.clone(),
            commit.happening.reason().map(str::to_string),
            expires_at,
        ))?;
        self.client
            .transact_write_items()
            .transact_items(self.put(
                job_item,
                "version = :v",
                values([(":v", number(from.version))]),
            )?)
            .transact_items(self.put(event, "attribute_not_exists(pk)", HashMap::new())?)
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn arm(&self, job_id: u64, wait: &Wait) -> Result<JobRecord, StoreError> {
        self.update_returning(
            job_id,
            "SET task_token = :t, wait_phase = :p, wait_attempt = :a ADD version :one",
            "attribute_exists(pk)",
            values([
                (":t", AttributeValue::S(wait.token.clone())),
                (":p", encoded(&wait.phase)?),
                (":a", number(wait.attempt)),
                (":one", number(1)),
            ]),
        )
        .await?
        .ok_or(StoreError::NotFound(job_id))
    }

    async fn disarm(&self, job_id: u64, token: &str) -> Result<(), StoreError> {
        // A token already replaced or removed is fine: the condition just doesn't match.
        self.update_returning(
            job_id,
            "REMOVE task_token, wait_phase, wait_attempt ADD version :one",
            "task_token = :t",
            values([(":t", AttributeValue::S(token.into())), (":one", number(1))]),
        )
        .await?;
        Ok(())
    }

    async fn signal(&self, job_id: u64, signal: &Signal) -> Result<Option<JobRecord>, StoreError> {
        let (attribute, value) = match signal {
            Signal::Registered(registered) => ("sig_registered", encoded(registered)?),
            Signal::Completed { conclusion } => {
                ("sig_conclusion", AttributeValue::S(conclusion.clone()))
            }
            Signal::Cancelled => ("sig_cancelled", AttributeValue::Bool(true)),
            Signal::RunnerTaken(taken) => ("sig_taken", encoded(taken)?),
            Signal::Stopped(stopped) => ("sig_stopped", encoded(stopped)?),
        };
        let mut condition = "attribute_exists(pk)".to_string();
        let mut expression_values = values([(":s", value), (":one", number(1))]);
        if let Signal::Stopped(stopped) = signal {
            // A late event about an older attempt must not hide a newer attempt's stop.
            condition += " AND (attribute_not_exists(sig_stopped) OR sig_stopped.attempt <= :a)";
            expression_values.insert(":a".into(), number(stopped.attempt));
        }
        let expression = format!("SET {attribute} = :s ADD version :one");
        match self
            .update_returning(job_id, &expression, &condition, expression_values)
            .await?
        {
            Some(record) => Ok(Some(record)),
            // Unknown job, or an outdated stop: the job as it is (None when unknown).
            None => self.get(job_id).await,
        }
    }

    async fn timeline(&self, job_id: u64) -> Result<Vec<LifecycleEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", AttributeValue::S(pk(job_id)))
                .expression_attribute_values(":prefix", AttributeValue::S("EVENT#".into()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            for item in out.items.unwrap_or_default() {
                let e: EventItem = from_item(item)?;
                events.push(LifecycleEvent {
                    seq: e.seq,
                    at: e.at,
                    event: e.event,
                    state: e.state,
                    attempt: e.attempt,
                    candidate: e.candidate,
                    reason: e.reason,
                });
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(events)
    }

    async fn list(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs = Vec::new();
        let mut start = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :job")
                .expression_attribute_values(":job", AttributeValue::S(JOB_SK.into()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(store_error)?;
            for item in out.items.unwrap_or_default() {
                jobs.push(from_item::<JobItem>(item)?.into_record());
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        jobs.truncate(limit);
        Ok(jobs)
    }
}
