//! The lifecycle store on DynamoDB: one table, conditional writes, an event row per transition.

use crate::adapters::clock::SystemClock;
use crate::domain::ids::{Attempt, JobId};
use crate::domain::job::{Conclusion, JobRef, RerunKey};
use crate::domain::lifecycle::{JobState, Position};
use crate::domain::listing::{day_partition, list_partition, JobFilter};
use crate::domain::record::{Change, Event, JobRecord, LifecycleEvent, RunnerRef};
use crate::domain::waits::{
    Registered, Signal, Signals, Stopped, Taken, TaskToken, Wait, WaitPhase,
};
use crate::ports::{Clock, LifecycleStore, StoreError, StoreResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The GSI the rescue sweep reads: non-terminal jobs by state, oldest deadline first.
pub const STATE_DEADLINE_INDEX: &str = "by-state-deadline";
/// The GSI `tasuki jobs ls` reads: every job by the UTC day it was received (`gsi_list`,
/// `LIST#YYYY-MM-DD`), newest `created_at` first (`domain::listing`).
pub const RECEIVED_DAY_INDEX: &str = "by-received-day";
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
        SystemClock.now().epoch_seconds + self.retention_seconds
    }
}

fn pk(job_id: JobId) -> String {
    format!("JOB#{job_id}")
}

/// The item that marks a re-run job of a workflow run (`LifecycleStore::mark_rerun`).
fn rerun_pk(key: &RerunKey) -> String {
    format!("RERUN#{}", key.as_str())
}

const RERUN_SK: &str = "RERUN";

fn event_sk(seq: u32) -> String {
    format!("EVENT#{seq:06}")
}

/// The job item, attribute for attribute (schema in README).
#[derive(Debug, Serialize, Deserialize)]
struct JobItem {
    pk: String,
    sk: String,
    job_id: JobId,
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
    /// The job's partition in [`RECEIVED_DAY_INDEX`]; written with every put of the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gsi_list: Option<String>,
    expires_at: u64,
    execution_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runner_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runner_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conclusion: Option<Conclusion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_token: Option<TaskToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_phase: Option<WaitPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait_attempt: Option<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_registered: Option<Registered>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sig_conclusion: Option<Conclusion>,
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
    event: Event,
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
            runner: match (self.runner_name, self.runner_id) {
                (Some(name), Some(id)) => Some(RunnerRef { name, id }),
                _ => None,
            },
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
            gsi_list: list_partition(&record.created_at),
            expires_at,
            execution_arn: record.execution_arn.clone(),
            task_arn: record.task_arn.clone(),
            runner_name: record.runner.as_ref().map(|r| r.name.clone()),
            runner_id: record.runner.as_ref().map(|r| r.id),
            conclusion: record.conclusion,
            reason: record.reason.clone(),
            task_token: record.wait.as_ref().map(|w| w.token.clone()),
            wait_phase: record.wait.as_ref().map(|w| w.phase),
            wait_attempt: record.wait.as_ref().map(|w| w.attempt),
            sig_registered: record.signals.registered.clone(),
            sig_conclusion: record.signals.conclusion,
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

/// Classifies an SDK error by what a person (or a retry) can do about it; every message is one
/// line of text, never the SDK's debug structure.
fn store_error<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
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
        "ResourceNotFoundException" => StoreError::NoTable(message),
        "" => unanswered(&error),
        _ => StoreError::Failure(format!("{code}: {message}")),
    }
}

/// An error with no service code: the request was not sent, or not answered.
fn unanswered<E, R>(error: &SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    // The chain of causes, each as its Display says (DisplayErrorContext would append the Debug
    // structure). The credentials chain fails before anything is sent ("the credential provider
    // was not enabled", "no providers in chain provided credentials"); its error reaches here
    // boxed as a connector error's source, so its text is what is left to read.
    let mut causes = vec![error.to_string()];
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        causes.push(source.to_string());
        cause = source;
    }
    let cause = causes.last().cloned().unwrap_or_default();
    let text = causes.join(": ");
    if text.to_lowercase().contains("credential") {
        return StoreError::NoCredentials(cause);
    }
    match error {
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            StoreError::Unreachable(cause)
        }
        SdkError::TimeoutError(_) => StoreError::Unreachable(cause),
        _ => StoreError::Failure(text),
    }
}

impl EventItem {
    fn new(job_id: JobId, event: &LifecycleEvent, expires_at: u64) -> Self {
        Self {
            pk: pk(job_id),
            sk: event_sk(event.seq),
            seq: event.seq,
            at: event.at.clone(),
            event: event.event,
            state: event.state,
            attempt: event.attempt,
            candidate: event.candidate.clone(),
            reason: event.reason.clone(),
            expires_at,
        }
    }

    fn into_event(self) -> LifecycleEvent {
        LifecycleEvent {
            seq: self.seq,
            at: self.at,
            event: self.event,
            state: self.state,
            attempt: self.attempt,
            candidate: self.candidate,
            reason: self.reason,
        }
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
        job_id: JobId,
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
    async fn create(&self, received: &Change) -> StoreResult<bool> {
        let Change { record, event } = received;
        let expires_at = self.expires_at();
        let job_item = to_item(&JobItem::from_record(record, expires_at))?;
        let event = to_item(&EventItem::new(record.job.job_id, event, expires_at))?;
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

    async fn get(&self, job_id: JobId) -> StoreResult<Option<JobRecord>> {
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

    async fn commit(&self, from: &JobRecord, change: &Change) -> StoreResult<()> {
        let Change { record: to, event } = change;
        let expires_at = self.expires_at();
        let job_item = to_item(&JobItem::from_record(to, expires_at))?;
        let event = to_item(&EventItem::new(from.job.job_id, event, expires_at))?;
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

    async fn arm(&self, job_id: JobId, wait: &Wait) -> StoreResult<JobRecord> {
        self.update_returning(
            job_id,
            "SET task_token = :t, wait_phase = :p, wait_attempt = :a ADD version :one",
            "attribute_exists(pk)",
            values([
                (":t", AttributeValue::S(wait.token.as_str().to_string())),
                (":p", encoded(&wait.phase)?),
                (":a", number(wait.attempt)),
                (":one", number(1)),
            ]),
        )
        .await?
        .ok_or(StoreError::NotFound(job_id))
    }

    async fn disarm(&self, job_id: JobId, token: &TaskToken) -> StoreResult<()> {
        // A token already replaced or removed is fine: the condition just doesn't match.
        self.update_returning(
            job_id,
            "REMOVE task_token, wait_phase, wait_attempt ADD version :one",
            "task_token = :t",
            values([
                (":t", AttributeValue::S(token.as_str().to_string())),
                (":one", number(1)),
            ]),
        )
        .await?;
        Ok(())
    }

    async fn signal(&self, job_id: JobId, signal: &Signal) -> StoreResult<Option<JobRecord>> {
        let (attribute, value) = match signal {
            Signal::Registered(registered) => ("sig_registered", encoded(registered)?),
            Signal::Completed(completion) => ("sig_conclusion", encoded(&completion.conclusion)?),
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

    async fn timeline(&self, job_id: JobId) -> StoreResult<Vec<LifecycleEvent>> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(pk(job_id)))
            .expression_attribute_values(":prefix", AttributeValue::S("EVENT#".into()))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut events = Vec::new();
        for _ in 0..MAX_PAGES {
            let Some(page) = pages.next().await else {
                break;
            };
            for item in page.map_err(store_error)?.items.unwrap_or_default() {
                events.push(from_item::<EventItem>(item)?.into_event());
            }
        }
        Ok(events)
    }

    async fn overdue(&self, now_epoch: u64, limit: usize) -> StoreResult<Vec<JobRecord>> {
        let mut jobs = Vec::new();
        for state in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATE_DEADLINE_INDEX)
                .key_condition_expression("gsi_state = :s AND deadline < :now")
                .expression_attribute_values(":s", encoded(&state)?)
                .expression_attribute_values(":now", number(now_epoch))
                .into_paginator()
                .send();
            for _ in 0..MAX_PAGES {
                let Some(page) = pages.next().await else {
                    break;
                };
                for item in page.map_err(store_error)?.items.unwrap_or_default() {
                    jobs.push(from_item::<JobItem>(item)?.into_record());
                }
                if jobs.len() >= limit {
                    break;
                }
            }
        }
        jobs.sort_by_key(|r| r.deadline);
        jobs.truncate(limit);
        Ok(jobs)
    }

    async fn postpone(&self, job_id: JobId, deadline: u64) -> StoreResult<()> {
        // Only the index's sort key changes: a concurrent transition (which rewrites the item on
        // its version) is not disturbed, and a finished job (no gsi_state) is not touched.
        self.update_returning(
            job_id,
            "SET deadline = :d",
            "attribute_exists(gsi_state)",
            values([(":d", number(deadline))]),
        )
        .await?;
        Ok(())
    }

    async fn mark_rerun(&self, key: &RerunKey) -> StoreResult<()> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(rerun_pk(key)))
            .item("sk", AttributeValue::S(RERUN_SK.into()))
            .item("expires_at", number(self.expires_at()))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn rerun_marked(&self, key: &RerunKey) -> StoreResult<bool> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(rerun_pk(key)))
            .key("sk", AttributeValue::S(RERUN_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item.is_some())
    }

    async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<JobRecord>> {
        let limit = filter.limit.get();
        let (lowest, highest) = (filter.window.lowest(), filter.window.highest());
        let mut narrow = Vec::new();
        let mut names = HashMap::new();
        let mut bound = values([
            (":lowest", AttributeValue::S(lowest)),
            (":highest", AttributeValue::S(highest)),
        ]);
        if !filter.states.is_empty() {
            let mut placeholders = Vec::new();
            for (i, state) in filter.states.iter().enumerate() {
                placeholders.push(format!(":s{i}"));
                bound.insert(format!(":s{i}"), encoded(state)?);
            }
            names.insert("#state".to_string(), "state".to_string());
            narrow.push(format!("#state IN ({})", placeholders.join(", ")));
        }
        if let Some(repository) = &filter.repository {
            bound.insert(
                ":repository".into(),
                AttributeValue::S(repository.as_str().into()),
            );
            narrow.push("repository = :repository".into());
        }
        let mut jobs = Vec::new();
        // Newest day first; each day's partition newest first: the first `limit` found are the
        // newest. State and repository narrow each page (read capacity counts what the window
        // holds, which the day partitions already bound).
        'days: for day in filter.window.days() {
            bound.insert(":day".into(), AttributeValue::S(day_partition(day)));
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(RECEIVED_DAY_INDEX)
                .key_condition_expression(
                    "gsi_list = :day AND created_at BETWEEN :lowest AND :highest",
                )
                .set_expression_attribute_values(Some(bound.clone()))
                .scan_index_forward(false);
            if !narrow.is_empty() {
                query = query.filter_expression(narrow.join(" AND "));
            }
            if !names.is_empty() {
                query = query.set_expression_attribute_names(Some(names.clone()));
            }
            let mut pages = query.into_paginator().send();
            for _ in 0..MAX_PAGES {
                let Some(page) = pages.next().await else {
                    break;
                };
                for item in page.map_err(store_error)?.items.unwrap_or_default() {
                    jobs.push(from_item::<JobItem>(item)?.into_record());
                    if jobs.len() >= limit {
                        break 'days;
                    }
                }
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_dynamodb::operation::get_item::GetItemError;

    fn service(code: &str, message: &str) -> SdkError<GetItemError, ()> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(GetItemError::generic(meta), ())
    }

    fn dispatch(error: ConnectorError) -> SdkError<GetItemError, ()> {
        SdkError::dispatch_failure(error)
    }

    #[test]
    fn a_missing_table_and_throttling_are_told_apart_from_other_service_errors() {
        assert!(matches!(
            store_error(service("ResourceNotFoundException", "Requested resource not found")),
            StoreError::NoTable(m) if m == "Requested resource not found"
        ));
        for code in [
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
        ] {
            assert!(matches!(
                store_error(service(code, "slow down")),
                StoreError::Throttled(m) if m == format!("{code}: slow down")
            ));
        }
        assert!(matches!(
            store_error(service("ValidationException", "bad key")),
            StoreError::Failure(m) if m == "ValidationException: bad key"
        ));
    }

    #[test]
    fn a_refused_connection_is_unreachable_and_says_only_its_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = store_error(dispatch(ConnectorError::io(Box::new(refused))));
        assert!(
            matches!(&error, StoreError::Unreachable(m) if m == "connection refused"),
            "{error:?}"
        );
        let timeout = ConnectorError::timeout("no answer in 3.1s".into());
        assert!(matches!(
            store_error(dispatch(timeout)),
            StoreError::Unreachable(_)
        ));
    }

    #[test]
    fn a_credentials_chain_that_found_nothing_is_no_credentials() {
        let unsigned = ConnectorError::other(
            "failed to load credentials: no providers in chain provided credentials".into(),
            None,
        );
        assert!(matches!(
            store_error(dispatch(unsigned)),
            StoreError::NoCredentials(_)
        ));
    }

    #[test]
    fn an_unclassified_failure_is_one_line_of_text_not_a_debug_structure() {
        let other = ConnectorError::other("tls handshake: unknown issuer".into(), None);
        let StoreError::Failure(text) = store_error(dispatch(other)) else {
            panic!("not a failure");
        };
        assert!(text.contains("tls handshake: unknown issuer"), "{text}");
        assert!(
            !text.contains("DispatchFailure {") && !text.contains('\n'),
            "{text}"
        );
    }
}
