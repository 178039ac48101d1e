//! Metrics as CloudWatch Embedded Metric Format lines: a JSON document on stdout, which Lambda
//! sends to CloudWatch Logs, which extracts the metrics — no PutMetricData call on a job's path
//! and no extra permission. Spec:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! Every datum is published with its one dimension and without any (`"Dimensions": [["Reason"],
//! []]`): alarms cannot sum over a dimension (no SEARCH in alarms), so they watch the
//! dimension-less series; dashboards split by the dimension. Dimension values are `&'static str`
//! so that a job id or a free-text reason can never become a dimension (each distinct value is a
//! billed custom metric).

use crate::domain::figures::{FallbackReason, JobFigures};
use crate::domain::ids::JobId;
use crate::domain::lifecycle::{Happening, JobState};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::sync::Mutex;

pub const NAMESPACE: &str = "Tasuki";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Metric {
    /// `queued` received → a runner of ours registered (`in_progress`); dimension `Capacity`.
    QueuedToRunningSeconds,
    /// The task started → its runner registered; dimension `Capacity`.
    LaunchToRegisteredSeconds,
    /// Launch attempts of a finished job.
    AttemptsPerJob,
    /// A failed attempt, after which the next candidate is tried; dimension `Reason`.
    Fallbacks,
    /// A job reached a final state; dimension `State`.
    JobsFinished,
    /// Runner seconds of a finished job, over all its attempts.
    RunnerSeconds,
    /// Estimated USD of a finished job: runner seconds at the candidates' prices plus
    /// orchestration (`domain::price`).
    JobCostUSD,
    /// The rescue sweep acted; dimension `Action`.
    RescueActions,
    /// The oldest job the sweep found still waiting for a runner (0 when none).
    OldestQueuedSeconds,
    /// What GitHub said is left of the App's rate limit, at each answer.
    GitHubRateLimitRemaining,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::QueuedToRunningSeconds => "QueuedToRunningSeconds",
            Metric::LaunchToRegisteredSeconds => "LaunchToRegisteredSeconds",
            Metric::AttemptsPerJob => "AttemptsPerJob",
            Metric::Fallbacks => "Fallbacks",
            Metric::JobsFinished => "JobsFinished",
            Metric::RunnerSeconds => "RunnerSeconds",
            Metric::JobCostUSD => "JobCostUSD",
            Metric::RescueActions => "RescueActions",
            Metric::OldestQueuedSeconds => "OldestQueuedSeconds",
            Metric::GitHubRateLimitRemaining => "GitHubRateLimitRemaining",
        }
    }

    /// A CloudWatch `StandardUnit`.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::QueuedToRunningSeconds
            | Metric::LaunchToRegisteredSeconds
            | Metric::RunnerSeconds
            | Metric::OldestQueuedSeconds => "Seconds",
            Metric::AttemptsPerJob
            | Metric::Fallbacks
            | Metric::JobsFinished
            | Metric::RescueActions
            | Metric::GitHubRateLimitRemaining => "Count",
            Metric::JobCostUSD => "None",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dimension {
    Capacity,
    Reason,
    State,
    Action,
}

impl Dimension {
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Capacity => "Capacity",
            Dimension::Reason => "Reason",
            Dimension::State => "State",
            Dimension::Action => "Action",
        }
    }
}

/// One value of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Datum {
    pub metric: Metric,
    pub value: f64,
    pub dimension: Option<(Dimension, &'static str)>,
}

impl Datum {
    pub fn new(metric: Metric, value: f64) -> Self {
        Self {
            metric,
            value,
            dimension: None,
        }
    }

    pub fn by(self, dimension: Dimension, value: &'static str) -> Self {
        Self {
            dimension: Some((dimension, value)),
            ..self
        }
    }

    /// The EMF document of this datum at `timestamp_ms`; `job` is a plain property (searchable
    /// in Logs Insights, not a dimension).
    pub fn document(&self, timestamp_ms: u64, job: Option<JobId>) -> Value {
        let dimensions: Vec<Vec<&str>> = match self.dimension {
            Some((dimension, _)) => vec![vec![dimension.name()], vec![]],
            None => vec![vec![]],
        };
        let mut doc = Map::new();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": [{"Name": self.metric.name(), "Unit": self.metric.unit()}],
                }],
            }),
        );
        if let Some((dimension, value)) = self.dimension {
            doc.insert(dimension.name().into(), value.into());
        }
        doc.insert(self.metric.name().into(), json!(self.value));
        if let Some(job) = job {
            doc.insert("job_id".into(), job.get().into());
        }
        Value::Object(doc)
    }
}

/// Where metrics go: stdout in a Lambda, a list in tests.
pub trait MetricSink: Send + Sync {
    fn emit(&self, data: &[Datum], timestamp_ms: u64, job: Option<JobId>);
}

/// One EMF line per datum on stdout, where Lambda's log capture (and the local stack's log file)
/// reads it.
pub struct StdoutMetrics;

impl MetricSink for StdoutMetrics {
    fn emit(&self, data: &[Datum], timestamp_ms: u64, job: Option<JobId>) {
        let mut out = std::io::stdout().lock();
        for datum in data {
            // A lost metric line must not fail the step that emitted it.
            let _ = writeln!(out, "{}", datum.document(timestamp_ms, job));
        }
        let _ = out.flush();
    }
}

/// Metrics nobody reads: the operator CLI's runs.
pub struct NoMetrics;

impl MetricSink for NoMetrics {
    fn emit(&self, _data: &[Datum], _timestamp_ms: u64, _job: Option<JobId>) {}
}

/// What was emitted, for tests.
#[derive(Default)]
pub struct RecordedMetrics(Mutex<Vec<Datum>>);

impl RecordedMetrics {
    pub fn taken(&self) -> Vec<Datum> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl MetricSink for RecordedMetrics {
    fn emit(&self, data: &[Datum], _timestamp_ms: u64, _job: Option<JobId>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
    }
}

/// Whether the metrics of a transition into `to` need the job's timeline (one read).
pub fn needs_figures(to: JobState) -> bool {
    to == JobState::Running || to.is_terminal()
}

/// The metrics a committed transition emits; `figures` are those of the timeline after it (read
/// when [`needs_figures`]).
pub fn of_transition(
    happening: &Happening,
    to: JobState,
    figures: Option<&JobFigures>,
) -> Vec<Datum> {
    let mut data = vec![];
    if let Happening::AttemptFailed { reason, .. } = happening {
        data.push(
            Datum::new(Metric::Fallbacks, 1.0)
                .by(Dimension::Reason, FallbackReason::of(reason).as_str()),
        );
    }
    let Some(figures) = figures else {
        return data;
    };
    let by_capacity = |datum: Datum| match figures.capacity {
        Some(capacity) => datum.by(Dimension::Capacity, capacity.as_str()),
        None => datum,
    };
    if to == JobState::Running {
        if let Some(seconds) = figures.queued_to_running_seconds {
            data.push(by_capacity(Datum::new(
                Metric::QueuedToRunningSeconds,
                seconds,
            )));
        }
        if let Some(seconds) = figures.launch_to_registered_seconds {
            data.push(by_capacity(Datum::new(
                Metric::LaunchToRegisteredSeconds,
                seconds,
            )));
        }
    }
    if to.is_terminal() {
        data.push(Datum::new(Metric::JobsFinished, 1.0).by(Dimension::State, to.as_str()));
        data.push(Datum::new(
            Metric::AttemptsPerJob,
            f64::from(figures.attempts),
        ));
        data.push(Datum::new(Metric::RunnerSeconds, figures.runner_seconds));
        if let Some(usd) = figures.cost_usd {
            data.push(Datum::new(Metric::JobCostUSD, usd));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::figures::tests::one_fallback;
    use crate::domain::ids::Attempt;

    fn figures() -> JobFigures {
        JobFigures::of(&one_fallback(), "2026-11-24T11:00:00Z").unwrap()
    }

    fn values(data: &[Datum]) -> Vec<(&'static str, f64, Option<&'static str>)> {
        data.iter()
            .map(|d| (d.metric.name(), d.value, d.dimension.map(|(_, v)| v)))
            .collect()
    }

    #[test]
    fn a_document_publishes_its_datum_with_and_without_its_dimension() {
        let datum = Datum::new(Metric::Fallbacks, 1.0).by(Dimension::Reason, "CapacityUnavailable");
        let doc = datum.document(1_795_392_000_000, Some(JobId::new(7)));
        assert_eq!(
            doc,
            json!({
                "_aws": {"Timestamp": 1_795_392_000_000u64, "CloudWatchMetrics": [{
                    "Namespace": "Tasuki",
                    "Dimensions": [["Reason"], []],
                    "Metrics": [{"Name": "Fallbacks", "Unit": "Count"}],
                }]},
                "Reason": "CapacityUnavailable",
                "Fallbacks": 1.0,
                "job_id": 7,
            })
        );
        let plain = Datum::new(Metric::OldestQueuedSeconds, 0.0).document(1, None);
        assert_eq!(
            plain["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert!(plain.get("job_id").is_none());
    }

    #[test]
    fn a_failed_attempt_is_one_fallback_by_its_error_name() {
        let failed = Happening::AttemptFailed {
            attempt: Attempt::FIRST,
            reason: "RegistrationTimeout: the runner did not register within 300 s".into(),
        };
        assert_eq!(
            values(&of_transition(&failed, JobState::Launching, None)),
            [("Fallbacks", 1.0, Some("RegistrationTimeout"))]
        );
    }

    #[test]
    fn a_registration_reports_both_latencies_by_the_capacity_the_job_got() {
        let register = Happening::Register {
            runner_name: "r".into(),
        };
        assert!(needs_figures(JobState::Running));
        assert_eq!(
            values(&of_transition(
                &register,
                JobState::Running,
                Some(&figures())
            )),
            [
                ("QueuedToRunningSeconds", 9.0, Some("fargate")),
                ("LaunchToRegisteredSeconds", 4.0, Some("fargate")),
            ]
        );
    }

    #[test]
    fn a_finished_job_reports_its_state_attempts_runner_seconds_and_cost() {
        let figures = figures();
        let complete = Happening::Complete {
            conclusion: crate::domain::job::Conclusion::Success,
        };
        let data = of_transition(&complete, JobState::Completed, Some(&figures));
        assert_eq!(
            values(&data)[..3],
            [
                ("JobsFinished", 1.0, Some("completed")),
                ("AttemptsPerJob", 2.0, None),
                ("RunnerSeconds", 35.0, None),
            ]
        );
        assert_eq!(data[3].metric, Metric::JobCostUSD);
        assert_eq!(Some(data[3].value), figures.cost_usd);
    }

    #[test]
    fn transitions_between_unfinished_states_need_no_figures_and_emit_nothing() {
        for state in [
            JobState::Planned,
            JobState::Launching,
            JobState::Interrupted,
        ] {
            assert!(!needs_figures(state));
        }
        let plan = Happening::Plan { candidates: 2 };
        assert!(of_transition(&plan, JobState::Planned, None).is_empty());
    }

    #[test]
    fn the_recorder_keeps_what_was_emitted_until_taken() {
        let sink = RecordedMetrics::default();
        sink.emit(
            &[Datum::new(Metric::GitHubRateLimitRemaining, 4999.0)],
            0,
            None,
        );
        assert_eq!(
            values(&sink.taken()),
            [("GitHubRateLimitRemaining", 4999.0, None)]
        );
        assert!(sink.taken().is_empty());
    }
}
