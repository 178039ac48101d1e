//! The ids that cross boundaries (webhook → state machine → ECS → runner → webhook), as types:
//! a job id is not an attempt, an attempt is never 0, and a runner name we launched always says
//! which job and attempt it was launched for.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// GitHub's `workflow_job.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(u64);

impl JobId {
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// A launch attempt of a job, counted from 1 across rounds of candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Attempt(u32);

impl Attempt {
    pub const FIRST: Attempt = Attempt(1);

    /// `None` for 0: attempts count from 1.
    pub const fn new(number: u32) -> Option<Self> {
        if number == 0 {
            None
        } else {
            Some(Self(number))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }
}

impl TryFrom<u32> for Attempt {
    type Error = String;
    fn try_from(number: u32) -> Result<Self, Self::Error> {
        Self::new(number).ok_or_else(|| "attempts count from 1".to_string())
    }
}

impl From<Attempt> for u32 {
    fn from(attempt: Attempt) -> u32 {
        attempt.0
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Attempt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u32>().map_err(|e| e.to_string())?.try_into()
    }
}

/// The name of a runner tasuki launched: `tasuki-<job>-<attempt>`. GitHub reports it back in
/// `in_progress`, which is how a runner that took another job is traced to the job it was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunnerName {
    pub job: JobId,
    pub attempt: Attempt,
}

impl RunnerName {
    pub const fn new(job: JobId, attempt: Attempt) -> Self {
        Self { job, attempt }
    }

    /// The job and attempt a runner name was launched for, if it is one of ours: exactly the
    /// name `Display` writes (`tasuki-05-1` or `tasuki-+5-1` is someone else's runner).
    pub fn parse(name: &str) -> Option<Self> {
        let (job, attempt) = name.strip_prefix("tasuki-")?.split_once('-')?;
        let parsed = Self::new(job.parse().ok()?, attempt.parse().ok()?);
        (parsed.to_string() == name).then_some(parsed)
    }
}

impl fmt::Display for RunnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tasuki-{}-{}", self.job, self.attempt)
    }
}

impl TryFrom<String> for RunnerName {
    type Error = String;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name).ok_or_else(|| format!("`{name}` is not a tasuki runner name"))
    }
}

impl From<RunnerName> for String {
    fn from(name: RunnerName) -> String {
        name.to_string()
    }
}

impl PartialEq<str> for RunnerName {
    fn eq(&self, other: &str) -> bool {
        Self::parse(other).as_ref() == Some(self)
    }
}

/// ECS `startedBy`: ties a task back to its job and attempt (`tasuki/<job>/<attempt>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartedBy {
    pub job: JobId,
    pub attempt: Attempt,
}

impl StartedBy {
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.strip_prefix("tasuki/")?.split('/');
        let job = parts.next()?.parse().ok()?;
        let attempt = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Self { job, attempt })
    }
}

impl fmt::Display for StartedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tasuki/{}/{}", self.job, self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn foreign_and_malformed_names_are_not_ours() {
        for name in [
            "GitHub Actions 5",
            "tasuki-x-1",
            "tasuki-7-0",
            "tasuki-7",
            "tasuki-7-1-2",
            "tasuki-07-1",
            "tasuki-+7-1",
            "tasuki-7-+1",
        ] {
            assert_eq!(RunnerName::parse(name), None, "{name}");
        }
        assert_eq!(StartedBy::parse("tasuki/42/3/4"), None);
        assert_eq!(StartedBy::parse("ecs-svc/123"), None);
        assert_eq!(StartedBy::parse("tasuki/42/0"), None);
    }

    #[test]
    fn attempt_zero_does_not_parse_from_json() {
        assert!(serde_json::from_str::<Attempt>("0").is_err());
        assert_eq!(serde_json::from_str::<Attempt>("3").unwrap().get(), 3);
        assert_eq!(
            serde_json::to_string(&RunnerName::new(JobId::new(7), Attempt::FIRST)).unwrap(),
            "\"tasuki-7-1\""
        );
    }

    proptest! {
        #[test]
        fn runner_names_and_started_by_round_trip(job in any::<u64>(), attempt in 1u32..) {
            let (job, attempt) = (JobId::new(job), Attempt::new(attempt).unwrap());
            let name = RunnerName::new(job, attempt);
            prop_assert_eq!(RunnerName::parse(&name.to_string()), Some(name));
            let started_by = StartedBy { job, attempt };
            prop_assert_eq!(StartedBy::parse(&started_by.to_string()), Some(started_by));
        }
    }
}
