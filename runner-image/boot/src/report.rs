//! Storing the task's usage at exit: one item in the lifecycle table, beside the job's own
//! (`pk = USAGE#<job id>`, `sk = USAGE#<attempt, 4 digits>`, docs/contracts.md), so `tasuki jobs
//! show` and `tasuki stats` read it with the job.
//!
//! Why it can never change the job's outcome: the boot's exit status is decided before, every
//! failure here is one line on stderr, and the write is bounded (2 s to connect, 3 s per attempt,
//! 5 s in all: a task stopped by SIGTERM still exits before ECS's SIGKILL).
//! First write wins (`attribute_not_exists(pk)`): a task cannot overwrite an attempt's usage.

use crate::error::one_line;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::Duration;
use tasuki_core::domain::ids::JobId;
use tasuki_core::domain::usage::{partition_key, sort_key, Usage};
use tasuki_core::runner_contract::env;

/// Where and how long to store the usage: the task definition's `TASUKI_TABLE` and
/// `TASUKI_RETENTION_DAYS`, with the job and attempt from `run-task`'s overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPlan {
    pub table: String,
    pub retention_days: u32,
    pub job_id: JobId,
    pub attempt: u32,
}

impl ReportPlan {
    /// Why there is nothing to report to, as the end of a line, when a variable is missing or
    /// malformed (never fatal: the job runs the same without).
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        job_id: JobId,
        attempt: Option<u32>,
    ) -> Result<Self, String> {
        let present = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let table = present(env::TABLE).ok_or_else(|| format!("{} is not set", env::TABLE))?;
        let retention_days = present(env::RETENTION_DAYS)
            .ok_or_else(|| format!("{} is not set", env::RETENTION_DAYS))?
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|days| *days > 0)
            .ok_or_else(|| format!("{} is not a number of days", env::RETENTION_DAYS))?;
        let attempt = attempt.ok_or_else(|| format!("{} is not set", env::ATTEMPT))?;
        Ok(Self {
            table: table.trim().to_string(),
            retention_days,
            job_id,
            attempt,
        })
    }

    /// The item: its keys, the usage's fields as numbers, and the TTL attribute `expires_at`
    /// (epoch seconds, `retention_days` from `now`, as every lifecycle item).
    pub fn item(&self, usage: &Usage, now_epoch: u64) -> HashMap<String, AttributeValue> {
        let mut item: HashMap<String, AttributeValue> = match serde_json::to_value(usage) {
            Ok(serde_json::Value::Object(fields)) => fields
                .into_iter()
                .map(|(name, value)| (name, AttributeValue::N(value.to_string())))
                .collect(),
            _ => HashMap::new(),
        };
        item.insert("pk".into(), AttributeValue::S(partition_key(self.job_id)));
        item.insert("sk".into(), AttributeValue::S(sort_key(self.attempt)));
        item.insert(
            "expires_at".into(),
            AttributeValue::N((now_epoch + u64::from(self.retention_days) * 86_400).to_string()),
        );
        item
    }

    /// `USAGE#87 USAGE#0001`, for the log line.
    pub fn describe(&self) -> String {
        format!("{} {}", partition_key(self.job_id), sort_key(self.attempt))
    }
}

/// How the write ended, for the one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Written,
    /// The item exists already (first write wins).
    AlreadyThere,
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// Writes the usage item with the standard AWS environment (the task role's credentials on ECS).
pub async fn store(plan: &ReportPlan, usage: &Usage) -> Result<Stored, String> {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let answer = aws_sdk_dynamodb::Client::new(&sdk)
        .put_item()
        .table_name(&plan.table)
        .set_item(Some(plan.item(usage, now)))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match answer {
        Ok(_) => Ok(Stored::Written),
        Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
            Ok(Stored::AlreadyThere)
        }
        Err(SdkError::ServiceError(e)) => Err(format!(
            "DynamoDB {}{}",
            e.err().code().unwrap_or("error"),
            e.err()
                .message()
                .map(|m| format!(": {}", one_line(m, 200)))
                .unwrap_or_default()
        )),
        Err(SdkError::TimeoutError(_)) => Err("DynamoDB did not answer in time".into()),
        Err(e) => Err(one_line(&DisplayErrorContext(&e).to_string(), 300)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_core::domain::usage::UsageFields;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn plan() -> ReportPlan {
        ReportPlan::from_env(
            env(&[(env::TABLE, "tasuki-Jobs"), (env::RETENTION_DAYS, "90")]),
            JobId::new(87),
            Some(2),
        )
        .unwrap()
    }

    #[test]
    fn the_table_the_retention_and_the_attempt_are_needed() {
        assert_eq!(plan().describe(), "USAGE#87 USAGE#0002");
        assert_eq!(
            ReportPlan::from_env(env(&[(env::RETENTION_DAYS, "90")]), JobId::new(1), Some(1)),
            Err("TASUKI_TABLE is not set".into())
        );
        assert_eq!(
            ReportPlan::from_env(
                env(&[(env::TABLE, "t"), (env::RETENTION_DAYS, "0")]),
                JobId::new(1),
                Some(1)
            ),
            Err("TASUKI_RETENTION_DAYS is not a number of days".into())
        );
        assert_eq!(
            ReportPlan::from_env(
                env(&[(env::TABLE, "t"), (env::RETENTION_DAYS, "9")]),
                JobId::new(1),
                None
            ),
            Err("TASUKI_ATTEMPT is not set".into())
        );
    }

    #[test]
    fn the_item_holds_the_keys_the_usage_as_numbers_and_the_expiry() {
        let usage = Usage::new(UsageFields {
            attempt: 2,
            seconds: 610,
            samples: 123,
            cpu_avg_vcpu: 0.75,
            cpu_peak_vcpu: 1.5,
            memory_avg_mib: 900,
            memory_peak_mib: 1500,
            cpu_limit_vcpu: 2.0,
            memory_limit_mib: 4096,
        })
        .unwrap();
        let item = plan().item(&usage, 1_800_000_000);
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = tasuki_core::domain::usage::ITEM_ATTRIBUTES.to_vec();
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert_eq!(item["pk"], AttributeValue::S("USAGE#87".into()));
        assert_eq!(item["sk"], AttributeValue::S("USAGE#0002".into()));
        assert_eq!(item["cpu_peak_vcpu"], AttributeValue::N("1.5".into()));
        assert_eq!(item["memory_limit_mib"], AttributeValue::N("4096".into()));
        assert_eq!(
            item["expires_at"],
            AttributeValue::N((1_800_000_000u64 + 90 * 86_400).to_string())
        );
    }
}
