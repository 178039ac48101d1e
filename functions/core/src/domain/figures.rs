//! What a job's timeline says in figures: how long it waited for a runner, how long its runner
//! took to register, how many attempts and fallbacks it took, and what it cost. Pure and read
//! off the same rows `tasuki jobs show` prints, so the metrics the Lambdas emit, the CLI's
//! figures and `tasuki stats` cannot disagree.

use crate::domain::config::{Arch, Capacity};
use crate::domain::lifecycle::JobState;
use crate::domain::price;
use crate::domain::record::{Event, LifecycleEvent};
use crate::domain::size::Size;
use crate::error::ErrorName;
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Why an attempt failed, in few enough values to be a metric dimension: the error name that
/// starts every attempt-failed reason (`CapacityUnavailable: …`, `RegistrationTimeout: …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum FallbackReason {
    Step(ErrorName),
    RegistrationTimeout,
    Other,
}

impl FallbackReason {
    pub fn of(reason: &str) -> Self {
        let name = reason.split([':', ';']).next().unwrap_or_default().trim();
        match ErrorName::parse(name) {
            Some(step) => FallbackReason::Step(step),
            None if name == "RegistrationTimeout" => FallbackReason::RegistrationTimeout,
            None => FallbackReason::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::Step(name) => name.as_str(),
            FallbackReason::RegistrationTimeout => "RegistrationTimeout",
            FallbackReason::Other => "Other",
        }
    }
}

impl From<FallbackReason> for &'static str {
    fn from(reason: FallbackReason) -> Self {
        reason.as_str()
    }
}

/// Where a candidate runs, as its name (`fargate-spot/us-east-1a/2cpu-4gb/x64`) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub capacity: Capacity,
    pub size: Size,
    pub arch: Arch,
}

impl Placement {
    pub fn of(candidate: &str) -> Option<Self> {
        let parts: Vec<&str> = candidate.split('/').collect();
        let [capacity, _az, size, arch] = parts[..] else {
            return None;
        };
        let word = |s: &str| serde_json::Value::String(s.to_string());
        Some(Self {
            capacity: serde_json::from_value(word(capacity)).ok()?,
            size: size.parse().ok()?,
            arch: serde_json::from_value(word(arch)).ok()?,
        })
    }
}

/// One launch attempt whose task started: where, and for how long it ran (to its failure, the
/// job's end, or `now` while it runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunnerUse {
    pub attempt: u32,
    pub candidate: String,
    pub seconds: f64,
    pub usd: Option<f64>,
}

/// A job's figures, from its timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobFigures {
    pub state: JobState,
    pub attempts: u32,
    pub fallbacks: Vec<FallbackReason>,
    /// `queued` received → a runner of ours registered for the job (`in_progress`).
    pub queued_to_running_seconds: Option<f64>,
    /// The registered attempt's task started (RunTask answered) → its runner registered.
    pub launch_to_registered_seconds: Option<f64>,
    /// The capacity the job ran on.
    pub capacity: Option<Capacity>,
    pub runners: Vec<RunnerUse>,
    pub runner_seconds: f64,
    /// Runner cost (None when a candidate's name cannot be priced) plus orchestration.
    pub cost_usd: Option<f64>,
}

/// Epoch seconds of an RFC 3339 time, as the clock writes them.
pub fn epoch(at: &str) -> Option<f64> {
    let t = OffsetDateTime::parse(at, &Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

fn between(from: &str, to: &str) -> Option<f64> {
    Some((epoch(to)? - epoch(from)?).max(0.0))
}

/// Rows that end an attempt's runner: its failure, the job's end, or Spot taking it.
fn ends_runner(row: &LifecycleEvent, attempt: u32) -> bool {
    row.attempt == attempt
        && (row.event == Event::AttemptFailed
            || row.state.is_terminal()
            || row.state == JobState::Interrupted)
}

impl JobFigures {
    /// The figures of `timeline` (rows in `seq` order); `now` (RFC 3339) ends the window of a
    /// runner still running.
    pub fn of(timeline: &[LifecycleEvent], now: &str) -> Option<Self> {
        let last = timeline.last()?;
        let received = timeline.first()?;
        let entered = |state, attempt: Option<u32>| {
            timeline.iter().find(|row| {
                row.event == Event::Entered(state) && attempt.is_none_or(|a| row.attempt == a)
            })
        };
        let running = entered(JobState::Running, None);
        let registered_launch =
            running.and_then(|r| entered(JobState::WaitingForRegistration, Some(r.attempt)));
        let candidate_of = |attempt| {
            timeline
                .iter()
                .find(|row| row.attempt == attempt && row.candidate.is_some())
                .and_then(|row| row.candidate.clone())
        };

        let runners: Vec<RunnerUse> = timeline
            .iter()
            .filter(|row| row.event == Event::Entered(JobState::WaitingForRegistration))
            .map(|launched| {
                let end = timeline
                    .iter()
                    .skip_while(|row| row.seq <= launched.seq)
                    .find(|row| ends_runner(row, launched.attempt))
                    .map_or(now, |row| row.at.as_str());
                let seconds = between(&launched.at, end).unwrap_or(0.0);
                let candidate = candidate_of(launched.attempt).unwrap_or_default();
                let usd = Placement::of(&candidate)
                    .map(|p| seconds * price::runner_per_second(p.capacity, p.size, p.arch));
                RunnerUse {
                    attempt: launched.attempt,
                    candidate,
                    seconds,
                    usd,
                }
            })
            .collect();
        let runner_seconds = runners.iter().map(|r| r.seconds).sum();
        let runner_usd: Option<f64> = runners.iter().map(|r| r.usd).sum();
        let attempts = last.attempt;
        Some(Self {
            state: last.state,
            attempts,
            fallbacks: timeline
                .iter()
                .filter(|row| row.event == Event::AttemptFailed)
                .map(|row| FallbackReason::of(row.reason.as_deref().unwrap_or_default()))
                .collect(),
            queued_to_running_seconds: running.and_then(|r| between(&received.at, &r.at)),
            launch_to_registered_seconds: running
                .zip(registered_launch)
                .and_then(|(r, l)| between(&l.at, &r.at)),
            capacity: running
                .and_then(|r| candidate_of(r.attempt))
                .and_then(|c| Placement::of(&c))
                .map(|p| p.capacity),
            runners,
            runner_seconds,
            cost_usd: runner_usd.map(|usd| usd + price::orchestration(attempts, timeline.len())),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn row(
        seq: u32,
        second: u32,
        event: Event,
        attempt: u32,
        candidate: Option<&str>,
        reason: Option<&str>,
    ) -> LifecycleEvent {
        let state = match event {
            Event::Entered(state) => state,
            _ => JobState::Launching,
        };
        LifecycleEvent {
            seq,
            at: format!("2026-11-24T10:00:{second:02}.500Z"),
            event,
            state,
            attempt,
            candidate: candidate.map(str::to_string),
            reason: reason.map(str::to_string),
        }
    }

    const SPOT: &str = "fargate-spot/us-east-1a/2cpu-4gb/x64";
    const ON_DEMAND: &str = "fargate/us-east-1a/2cpu-4gb/x64";

    /// Received at :00, Spot launched at :02 and refused for capacity at :03, on-demand launched
    /// at :05, registered at :09, completed at :39.
    pub(crate) fn one_fallback() -> Vec<LifecycleEvent> {
        use Event::{AttemptFailed, Entered};
        use JobState::*;
        vec![
            row(1, 0, Entered(Received), 0, None, None),
            row(2, 1, Entered(Planned), 0, None, None),
            row(3, 1, Entered(Launching), 1, Some(SPOT), None),
            row(4, 2, Entered(WaitingForRegistration), 1, None, None),
            row(
                5,
                3,
                AttemptFailed,
                1,
                None,
                Some("CapacityUnavailable: no Spot capacity"),
            ),
            row(6, 4, Entered(Launching), 2, Some(ON_DEMAND), None),
            row(7, 5, Entered(WaitingForRegistration), 2, None, None),
            row(8, 9, Entered(Running), 2, None, None),
            row(9, 39, Entered(Completed), 2, None, Some("success")),
        ]
    }

    #[test]
    fn a_job_with_one_capacity_fallback_counts_two_attempts_and_prices_both_runners() {
        let f = JobFigures::of(&one_fallback(), "2026-11-24T11:00:00Z").unwrap();
        assert_eq!(f.state, JobState::Completed);
        assert_eq!(f.attempts, 2);
        assert_eq!(
            f.fallbacks,
            [FallbackReason::Step(ErrorName::CapacityUnavailable)]
        );
        assert_eq!(f.queued_to_running_seconds, Some(9.0));
        assert_eq!(f.launch_to_registered_seconds, Some(4.0));
        assert_eq!(f.capacity, Some(Capacity::Fargate));
        let seconds: Vec<f64> = f.runners.iter().map(|r| r.seconds).collect();
        assert_eq!(seconds, [1.0, 34.0]);
        assert_eq!(f.runner_seconds, 35.0);
        let x64 = |c| price::runner_per_second(c, "2cpu-4gb".parse().unwrap(), Arch::X64);
        let runner = x64(Capacity::FargateSpot) + 34.0 * x64(Capacity::Fargate);
        let cost = f.cost_usd.unwrap();
        assert!((cost - runner - price::orchestration(2, 9)).abs() < 1e-12);
    }

    #[test]
    fn a_refused_job_has_no_runner_and_costs_only_its_orchestration() {
        let timeline = [
            row(1, 0, Event::Entered(JobState::Received), 0, None, None),
            row(
                2,
                0,
                Event::Entered(JobState::Refused),
                0,
                None,
                Some("label `gpu`"),
            ),
        ];
        let f = JobFigures::of(&timeline, "2026-11-24T11:00:00Z").unwrap();
        assert_eq!((f.state, f.attempts), (JobState::Refused, 0));
        assert!(f.runners.is_empty() && f.fallbacks.is_empty());
        assert_eq!(f.queued_to_running_seconds, None);
        assert_eq!(f.cost_usd, Some(price::orchestration(0, 2)));
    }

    #[test]
    fn a_runner_still_running_is_counted_until_now() {
        let running = &one_fallback()[..8];
        let f = JobFigures::of(running, "2026-11-24T10:01:05.500Z").unwrap();
        assert_eq!(f.state, JobState::Running);
        assert_eq!(f.runners[1].seconds, 60.0);
    }

    #[test]
    fn fallback_reasons_are_the_error_names_that_start_the_reason() {
        let of = |s| FallbackReason::of(s).as_str();
        assert_eq!(
            of("CapacityUnavailable: FARGATE_SPOT in us-east-1b"),
            "CapacityUnavailable"
        );
        assert_eq!(
            of("RegistrationTimeout: the runner did not register within 300 s"),
            "RegistrationTimeout"
        );
        assert_eq!(of("TaskStopped: Essential container exited"), "TaskStopped");
        assert_eq!(
            of("RunnerTaken; relaunching on the same candidate (1 of 3 relaunches)"),
            "RunnerTaken"
        );
        assert_eq!(of("Lambda.Unknown: out of memory"), "Other");
        assert_eq!(of(""), "Other");
    }

    #[test]
    fn candidate_names_parse_into_their_placement_or_not_at_all() {
        let p = Placement::of("fargate-spot/us-east-1a/4cpu-8gb/arm64").unwrap();
        assert_eq!((p.capacity, p.arch), (Capacity::FargateSpot, Arch::Arm64));
        assert_eq!(p.size, "4cpu-8gb".parse().unwrap());
        assert_eq!(
            Placement::of("ec2/us-east-1a/2cpu-4gb/x64")
                .unwrap()
                .capacity,
            Capacity::Ec2
        );
        assert!(Placement::of("gpu/us-east-1a/2cpu-4gb/x64").is_none());
        assert!(Placement::of("fargate/2cpu-4gb/x64").is_none());
    }
}
