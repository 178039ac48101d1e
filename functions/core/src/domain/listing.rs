//! Which jobs `tasuki jobs ls` asks for, as a [`JobFilter`] that cannot hold a bad value: a time
//! window no longer than [`MAX_WINDOW_DAYS`], states tasuki knows, a repository shaped
//! `owner/name`, a limit between 1 and [`MAX_LIMIT`]. The words a person types are parsed here once
//! (`2h`, `3d`, RFC 3339); the stores only read the parsed value.
//!
//! The lifecycle table answers "recent jobs" from an index partitioned by the UTC day a job was
//! received (`LIST#YYYY-MM-DD`, [`list_partition`]) and sorted by `created_at`, so a window is a
//! Query per day it touches, newest day first ([`Window::days`]), never a scan. Both stores compare
//! `created_at` as text against the same bounds ([`Window::contains`]): RFC 3339 in UTC sorts as
//! time does.

use crate::domain::lifecycle::JobState;
use crate::domain::record::JobRecord;
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

/// The longest window `--since` may open: one Query per day, and the table keeps a job for
/// `retention_days` (90 by default) anyway.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// The most jobs one listing returns.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error(
        "`{0}` is neither a duration (30m, 2h, 3d, 1w) nor an RFC 3339 time (2026-11-23T08:00:00Z)"
    )]
    Since(String),
    #[error("the window starts after it ends ({since} > {until})")]
    Backwards { since: String, until: String },
    #[error("the window is longer than {MAX_WINDOW_DAYS} days")]
    TooLong,
    #[error("unknown job state `{0}` (one of: {states})", states = state_names())]
    State(String),
    #[error("`{0}` is not a repository `owner/name`")]
    Repository(String),
    #[error("the limit must be between 1 and {MAX_LIMIT}, not {0}")]
    Limit(usize),
}

fn state_names() -> String {
    JobState::ALL.map(JobState::as_str).join(", ")
}

/// `--since` as typed: a duration back from now, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(OffsetDateTime),
}

impl Since {
    /// `30m`, `2h`, `3d`, `1w` (a whole number and one unit), or RFC 3339.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let bad = || FilterError::Since(text.to_string());
        if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(Since::At(at));
        }
        let unit = text.chars().last().ok_or_else(bad)?;
        let count: i64 = text[..text.len() - unit.len_utf8()]
            .parse()
            .map_err(|_| bad())?;
        let seconds = match unit {
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let ago = count
            .checked_mul(seconds)
            .filter(|s| *s >= 0)
            .ok_or_else(bad)?;
        Ok(Since::Ago(Duration::seconds(ago)))
    }

    /// The instant it names, reading a duration back from `now`.
    pub fn resolve(self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Since::Ago(ago) => now.saturating_sub(ago),
            Since::At(at) => at,
        }
    }
}

/// From `since` to `until`, both included, to the second, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    since: OffsetDateTime,
    until: OffsetDateTime,
}

impl Window {
    pub fn new(since: OffsetDateTime, until: OffsetDateTime) -> Result<Self, FilterError> {
        let (since, until) = (second(since), second(until));
        if since > until {
            return Err(FilterError::Backwards {
                since: stamp(since),
                until: stamp(until),
            });
        }
        if (until.date() - since.date()).whole_days() >= MAX_WINDOW_DAYS {
            return Err(FilterError::TooLong);
        }
        Ok(Self { since, until })
    }

    /// The UTC days the window touches, newest first: one index partition each.
    pub fn days(&self) -> Vec<Date> {
        let mut days = vec![self.until.date()];
        while let Some(before) = days.last().and_then(|d| d.previous_day()) {
            if before < self.since.date() {
                break;
            }
            days.push(before);
        }
        days
    }

    /// The lowest `created_at` inside the window, as text: every RFC 3339 time in the window's
    /// first second or later sorts at or above it (`…T08:00:00` ≤ `…T08:00:00.5Z`).
    pub fn lowest(&self) -> String {
        self.since
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]"
            ))
            .unwrap_or_default()
    }

    /// The highest `created_at` inside the window, as text: `~` sorts after the `Z`, `.` and
    /// digits any time in the window's last second goes on with.
    pub fn highest(&self) -> String {
        format!(
            "{}~",
            self.until
                .format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]"
                ))
                .unwrap_or_default()
        )
    }

    /// Whether a job received at `created_at` (RFC 3339, UTC) falls in the window.
    pub fn contains(&self, created_at: &str) -> bool {
        (self.lowest().as_str()..=self.highest().as_str()).contains(&created_at)
    }
}

fn second(at: OffsetDateTime) -> OffsetDateTime {
    at.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at)
}

fn stamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// The index partition of jobs received on the day `created_at` (RFC 3339, UTC) names:
/// `LIST#YYYY-MM-DD`; `None` for a time that does not start with a date.
pub fn list_partition(created_at: &str) -> Option<String> {
    let day = created_at.get(..10)?;
    Date::parse(day, format_description!("[year]-[month]-[day]")).ok()?;
    Some(format!("LIST#{day}"))
}

/// The partition of one day of the window.
pub fn day_partition(day: Date) -> String {
    format!("LIST#{day}")
}

/// A repository as GitHub spells its full name: `owner/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryName(String);

impl RepositoryName {
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let allowed = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match text.split_once('/') {
            Some((owner, name)) if allowed(owner) && allowed(name) => Ok(Self(text.to_string())),
            _ => Err(FilterError::Repository(text.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many jobs at most: 1 to [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(usize);

impl Limit {
    pub fn new(limit: usize) -> Result<Self, FilterError> {
        if (1..=MAX_LIMIT).contains(&limit) {
            Ok(Self(limit))
        } else {
            Err(FilterError::Limit(limit))
        }
    }

    pub fn get(self) -> usize {
        self.0
    }
}

/// Parses `--state` values: each may be a comma list; repeats are dropped.
pub fn parse_states<S: AsRef<str>>(values: &[S]) -> Result<Vec<JobState>, FilterError> {
    let mut states = Vec::new();
    for word in values.iter().flat_map(|v| v.as_ref().split(',')) {
        let word = word.trim();
        let state: JobState = word
            .parse()
            .map_err(|_| FilterError::State(word.to_string()))?;
        if !states.contains(&state) {
            states.push(state);
        }
    }
    Ok(states)
}

/// The jobs received in a window, in any of `states` (any state when empty), of one repository
/// or all; newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFilter {
    pub window: Window,
    pub states: Vec<JobState>,
    pub repository: Option<RepositoryName>,
    pub limit: Limit,
}

impl JobFilter {
    /// Every job of the window, newest first.
    pub fn window(window: Window, limit: Limit) -> Self {
        Self {
            window,
            states: Vec::new(),
            repository: None,
            limit,
        }
    }

    pub fn matches(&self, record: &JobRecord) -> bool {
        self.window.contains(&record.created_at)
            && (self.states.is_empty() || self.states.contains(&record.position.state))
            && self
                .repository
                .as_ref()
                .is_none_or(|r| r.as_str() == record.job.repository)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 10:30:15.25 UTC);

    #[test]
    fn durations_count_back_from_now_and_rfc3339_names_an_instant() {
        let since = |text| Since::parse(text).unwrap().resolve(NOW);
        assert_eq!(since("30m"), datetime!(2026-11-24 10:00:15.25 UTC));
        assert_eq!(since("2h"), datetime!(2026-11-24 08:30:15.25 UTC));
        assert_eq!(since("3d"), datetime!(2026-11-21 10:30:15.25 UTC));
        assert_eq!(since("1w"), datetime!(2026-11-17 10:30:15.25 UTC));
        assert_eq!(
            since("2026-11-23T08:00:00+02:00"),
            datetime!(2026-11-23 06:00:00 UTC)
        );
    }

    #[test]
    fn anything_else_is_not_a_since() {
        for text in ["", "h", "2", "2x", "-1d", "1.5h", "yesterday", "2026-11-23"] {
            assert_eq!(
                Since::parse(text),
                Err(FilterError::Since(text.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn a_window_lists_its_days_newest_first_and_bounds_created_at_to_the_second() {
        let window = Window::new(datetime!(2026-11-22 23:59:59.9 UTC), NOW).unwrap();
        let days: Vec<String> = window.days().into_iter().map(day_partition).collect();
        assert_eq!(
            days,
            ["LIST#2026-11-24", "LIST#2026-11-23", "LIST#2026-11-22"]
        );
        assert!(window.contains("2026-11-22T23:59:59Z"));
        assert!(window.contains("2026-11-22T23:59:59.123Z"));
        assert!(window.contains("2026-11-24T10:30:15.999999Z"));
        assert!(!window.contains("2026-11-22T23:59:58.999Z"));
        assert!(!window.contains("2026-11-24T10:30:16Z"));
    }

    #[test]
    fn a_backwards_or_overlong_window_cannot_be_made() {
        assert!(matches!(
            Window::new(NOW, NOW - Duration::seconds(1)),
            Err(FilterError::Backwards { .. })
        ));
        assert!(Window::new(NOW - Duration::days(MAX_WINDOW_DAYS - 1), NOW).is_ok());
        assert_eq!(
            Window::new(NOW - Duration::days(MAX_WINDOW_DAYS), NOW),
            Err(FilterError::TooLong)
        );
    }

    #[test]
    fn states_may_repeat_or_come_as_a_comma_list() {
        assert_eq!(
            parse_states(&["running,failed", "running", " timed-out"]).unwrap(),
            [JobState::Running, JobState::Failed, JobState::TimedOut]
        );
        let error = parse_states(&["runing"]).unwrap_err();
        assert_eq!(error, FilterError::State("runing".into()));
        assert!(error.to_string().contains("waiting-for-registration"));
    }

    #[test]
    fn a_repository_is_owner_slash_name() {
        assert_eq!(
            RepositoryName::parse("octo-org/app.js").unwrap().as_str(),
            "octo-org/app.js"
        );
        for text in ["app", "/app", "octo/", "a/b/c", "octo org/app", ""] {
            assert!(RepositoryName::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_limit_is_between_one_and_the_maximum() {
        assert!(Limit::new(0).is_err());
        assert_eq!(Limit::new(MAX_LIMIT).unwrap().get(), MAX_LIMIT);
        assert!(Limit::new(MAX_LIMIT + 1).is_err());
    }

    #[test]
    fn the_list_partition_is_the_day_a_job_was_received() {
        assert_eq!(
            list_partition("2026-11-24T10:30:15.25Z").as_deref(),
            Some("LIST#2026-11-24")
        );
        assert_eq!(list_partition("t5"), None);
        assert_eq!(list_partition("2026-13-01T00:00:00Z"), None);
    }
}
