//! A job as stored, and how a transition changes it: pure, so every store (DynamoDB, the
//! in-memory one of the handler tests) writes exactly the same record and event row.

use crate::domain::config::Timeouts;
use crate::domain::job::{Conclusion, JobRef};
use crate::domain::lifecycle::{Happening, JobState, Position};
use crate::domain::waits::{Signals, Wait};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The time, as the clock port reads it: epoch seconds for deadlines, RFC 3339 for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Now {
    pub epoch_seconds: u64,
    pub rfc3339: String,
}

/// When the rescue sweep next checks an unfinished job against GitHub (it reads the
/// state/deadline index): `timeouts.rescue_grace_seconds` after its last change or check. Waits
/// get no longer: a lost `completed` must be found before the completion wait times out, so a
/// running job is checked every grace period, and each check that finds nothing to do postpones
/// the next.
pub fn deadline(timeouts: &Timeouts, now: &Now) -> u64 {
    now.epoch_seconds + u64::from(timeouts.rescue_grace_seconds)
}

/// The runner a job runs (or will run) on: ours, or any runner GitHub gave it to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRef {
    pub name: String,
    pub id: u64,
}

/// A job as stored: where it stands, what it is waiting for, and what it has been told.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: JobRef,
    pub position: Position,
    pub seq: u32,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub deadline: u64,
    pub execution_arn: String,
    pub task_arn: Option<String>,
    pub runner: Option<RunnerRef>,
    pub conclusion: Option<Conclusion>,
    pub reason: Option<String>,
    pub wait: Option<Wait>,
    pub signals: Signals,
    pub last_happening: Option<Happening>,
}

/// What a lifecycle row records: the state entered, or a failed attempt (the state stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Event {
    Entered(JobState),
    AttemptFailed,
    /// The rescue sweep acted (the state stays).
    Rescued,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Entered(state) => state.as_str(),
            Event::AttemptFailed => "attempt-failed",
            Event::Rescued => "rescued",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Event {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "attempt-failed" => Ok(Event::AttemptFailed),
            "rescued" => Ok(Event::Rescued),
            state => state.parse().map(Event::Entered),
        }
    }
}

impl TryFrom<String> for Event {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Event> for String {
    fn from(event: Event) -> String {
        event.as_str().to_string()
    }
}

/// One row of a job's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    pub seq: u32,
    pub at: String,
    pub event: Event,
    pub state: JobState,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A job's new record and the timeline row that records the change: a store writes both or
/// neither.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub record: JobRecord,
    pub event: LifecycleEvent,
}

/// A transition to commit: the new position, its event row, and the job attributes it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    pub to: Position,
    pub happening: Happening,
    pub candidate: Option<String>,
    pub deadline: u64,
    pub task_arn: Option<String>,
    pub runner: Option<RunnerRef>,
    pub conclusion: Option<Conclusion>,
}

impl JobRecord {
    /// A job just received, and its first timeline row.
    pub fn received(job: JobRef, execution_arn: String, timeouts: &Timeouts, now: &Now) -> Change {
        let record = JobRecord {
            job,
            position: Position::RECEIVED,
            seq: 1,
            version: 1,
            created_at: now.rfc3339.clone(),
            updated_at: now.rfc3339.clone(),
            deadline: deadline(timeouts, now),
            execution_arn,
            task_arn: None,
            runner: None,
            conclusion: None,
            reason: None,
            wait: None,
            signals: Signals::default(),
            last_happening: None,
        };
        let event = LifecycleEvent {
            seq: 1,
            at: now.rfc3339.clone(),
            event: Event::Entered(JobState::Received),
            state: JobState::Received,
            attempt: 0,
            candidate: None,
            reason: None,
        };
        Change { record, event }
    }

    /// The job after `commit`, and the timeline row that records it. A store writes both, on the
    /// condition that the job is still at `self.version`.
    pub fn apply(&self, commit: &Commit, now: &Now) -> Change {
        let mut next = self.clone();
        next.position = commit.to;
        next.seq = self.seq + 1;
        next.version = self.version + 1;
        next.updated_at = now.rfc3339.clone();
        next.deadline = commit.deadline;
        next.last_happening = Some(commit.happening.clone());
        if let Some(task_arn) = &commit.task_arn {
            next.task_arn = Some(task_arn.clone());
        }
        if let Some(runner) = &commit.runner {
            next.runner = Some(runner.clone());
        }
        if let Some(conclusion) = commit.conclusion {
            next.conclusion = Some(conclusion);
        }
        let reason = commit.happening.reason().map(str::to_string);
        if let Some(reason) = &reason {
            next.reason = Some(reason.clone());
        }
        let event = LifecycleEvent {
            seq: next.seq,
            at: now.rfc3339.clone(),
            event: commit.happening.event(commit.to.state),
            state: commit.to.state,
            attempt: commit.to.attempt,
            candidate: commit.candidate.clone(),
            reason,
        };
        Change {
            record: next,
            event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::ids::Attempt;
    use crate::domain::job::tests::job_ref;

    pub(crate) fn now(epoch_seconds: u64) -> Now {
        Now {
            epoch_seconds,
            rfc3339: format!("t{epoch_seconds}"),
        }
    }

    fn job() -> JobRef {
        job_ref(&["tasuki"])
    }

    #[test]
    fn an_unfinished_job_is_checked_one_grace_period_after_its_last_change() {
        let t = example().timeouts;
        assert_eq!(deadline(&t, &now(1000)), 1300);
        assert!(
            deadline(&t, &now(1000)) < 1000 + u64::from(t.job_seconds),
            "a running job is checked before its completion wait times out"
        );
    }

    #[test]
    fn a_commit_moves_the_job_and_writes_the_next_row_with_its_reason() {
        let Change {
            record,
            event: first,
        } = JobRecord::received(job(), "arn:exec".into(), &example().timeouts, &now(1));
        assert_eq!((first.seq, first.event.as_str()), (1, "received"));
        let commit = Commit {
            to: Position {
                state: JobState::Launching,
                attempt: 1,
            },
            happening: Happening::AttemptFailed {
                attempt: Attempt::FIRST,
                reason: "CapacityUnavailable".into(),
            },
            candidate: None,
            deadline: 99,
            task_arn: Some("arn:task".into()),
            runner: None,
            conclusion: None,
        };
        let Change {
            record: next,
            event: row,
        } = record.apply(&commit, &now(5));
        assert_eq!((next.seq, next.version, next.deadline), (2, 2, 99));
        assert_eq!(next.task_arn.as_deref(), Some("arn:task"));
        assert_eq!(next.reason.as_deref(), Some("CapacityUnavailable"));
        assert_eq!(next.updated_at, "t5");
        assert_eq!(next.created_at, "t1");
        assert_eq!(row.event, Event::AttemptFailed);
        assert_eq!(row.reason.as_deref(), Some("CapacityUnavailable"));
        assert_eq!(next.last_happening, Some(commit.happening));
    }

    #[test]
    fn event_names_round_trip() {
        for event in JobState::ALL
            .map(Event::Entered)
            .into_iter()
            .chain([Event::AttemptFailed, Event::Rescued])
        {
            assert_eq!(event.as_str().parse::<Event>(), Ok(event));
        }
        assert!("launched".parse::<Event>().is_err());
    }
}
