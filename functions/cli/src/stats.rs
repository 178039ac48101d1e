//! `tasuki stats`: what the jobs of a period add up to — how long they waited for a runner, how
//! often a candidate failed and why, what they cost per day. Computed from the table's timelines
//! with the same `JobFigures` the Lambdas' metrics come from, so `stats` and the dashboard agree
//! without CloudWatch (and work on the local stack).

use serde::Serialize;
use std::collections::BTreeMap;
use tasuki_core::domain::figures::JobFigures;

/// One job of the period: the day it was received (`YYYY-MM-DD`, UTC) and its figures.
pub struct JobSample {
    pub day: String,
    pub figures: JobFigures,
}

/// Nearest-rank percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for no values.
    pub fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = values.len();
            let index = ((p / 100.0) * n as f64).ceil() as usize;
            values[index.clamp(1, n) - 1]
        };
        Some(Self {
            count: values.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: values[values.len() - 1],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub jobs: usize,
    pub runner_seconds: f64,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub jobs: usize,
    pub by_state: BTreeMap<&'static str, usize>,
    pub queued_to_running_seconds: Option<Percentiles>,
    pub launch_to_registered_seconds: Option<Percentiles>,
    /// Failed attempts per job, and of jobs, those that needed at least one fallback.
    pub fallbacks_per_job: f64,
    pub jobs_with_a_fallback: f64,
    pub fallbacks_by_reason: BTreeMap<&'static str, usize>,
    pub per_day: BTreeMap<String, Day>,
}

pub fn stats(samples: &[JobSample]) -> Stats {
    let figures = || samples.iter().map(|s| &s.figures);
    let mut by_state = BTreeMap::new();
    let mut fallbacks_by_reason = BTreeMap::new();
    let mut per_day: BTreeMap<String, Day> = BTreeMap::new();
    for sample in samples {
        let f = &sample.figures;
        *by_state.entry(f.state.as_str()).or_insert(0) += 1;
        for reason in &f.fallbacks {
            *fallbacks_by_reason.entry(reason.as_str()).or_insert(0) += 1;
        }
        let day = per_day.entry(sample.day.clone()).or_insert(Day {
            jobs: 0,
            runner_seconds: 0.0,
            cost_usd: 0.0,
        });
        day.jobs += 1;
        day.runner_seconds += f.runner_seconds;
        day.cost_usd += f.cost_usd.unwrap_or_default();
    }
    let jobs = samples.len();
    let share = |n: usize| {
        if jobs == 0 {
            0.0
        } else {
            n as f64 / jobs as f64
        }
    };
    Stats {
        jobs,
        by_state,
        queued_to_running_seconds: Percentiles::of(
            figures()
                .filter_map(|f| f.queued_to_running_seconds)
                .collect(),
        ),
        launch_to_registered_seconds: Percentiles::of(
            figures()
                .filter_map(|f| f.launch_to_registered_seconds)
                .collect(),
        ),
        fallbacks_per_job: share(figures().map(|f| f.fallbacks.len()).sum()),
        jobs_with_a_fallback: share(figures().filter(|f| !f.fallbacks.is_empty()).count()),
        fallbacks_by_reason,
        per_day,
    }
}

/// The human form of [`Stats`].
pub fn render(stats: &Stats) -> String {
    let mut out = format!("{} job(s)", stats.jobs);
    let states: Vec<String> = stats
        .by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    if !states.is_empty() {
        out.push_str(&format!(": {}", states.join(", ")));
    }
    out.push('\n');
    for (what, p) in [
        ("queued → running", &stats.queued_to_running_seconds),
        ("launch → registered", &stats.launch_to_registered_seconds),
    ] {
        match p {
            Some(p) => out.push_str(&format!(
                "{what:<20} p50 {:.1} s  p90 {:.1} s  p99 {:.1} s  max {:.1} s  ({} jobs)\n",
                p.p50, p.p90, p.p99, p.max, p.count
            )),
            None => out.push_str(&format!("{what:<20} no job got that far\n")),
        }
    }
    out.push_str(&format!(
        "fallbacks            {:.2} per job, {:.0} % of jobs needed one",
        stats.fallbacks_per_job,
        stats.jobs_with_a_fallback * 100.0
    ));
    let reasons: Vec<String> = stats
        .fallbacks_by_reason
        .iter()
        .map(|(reason, n)| format!("{n} {reason}"))
        .collect();
    if !reasons.is_empty() {
        out.push_str(&format!(" ({})", reasons.join(", ")));
    }
    out.push('\n');
    if !stats.per_day.is_empty() {
        out.push_str(&format!(
            "{:<12} {:>6} {:>14} {:>12}\n",
            "day", "jobs", "runner hours", "cost (USD)"
        ));
        for (day, d) in &stats.per_day {
            out.push_str(&format!(
                "{day:<12} {:>6} {:>14.2} {:>12.4}\n",
                d.jobs,
                d.runner_seconds / 3600.0,
                d.cost_usd
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_core::domain::lifecycle::JobState;
    use tasuki_core::domain::record::{Event, LifecycleEvent};

    fn row(seq: u32, at: &str, event: Event, attempt: u32, extra: Option<&str>) -> LifecycleEvent {
        let state = match event {
            Event::Entered(state) => state,
            _ => JobState::Launching,
        };
        let (candidate, reason) = match event {
            Event::Entered(JobState::Launching) => (extra.map(str::to_string), None),
            _ => (None, extra.map(str::to_string)),
        };
        LifecycleEvent {
            seq,
            at: format!("2026-11-24T10:{at}Z"),
            event,
            state,
            attempt,
            candidate,
            reason,
        }
    }

    /// A job received at 10:00:00 that waited `wait` seconds (< 60) for its runner, after
    /// `fallbacks` failed attempts, and ran a minute.
    fn job(day: &str, wait: u32, fallbacks: u32) -> JobSample {
        use Event::{AttemptFailed, Entered};
        use JobState::*;
        let spot = "fargate-spot/us-east-1a/2cpu-4gb/x64";
        let mut rows = vec![row(1, "00:00", Entered(Received), 0, None)];
        for attempt in 1..=fallbacks {
            rows.push(row(0, "00:00", Entered(Launching), attempt, Some(spot)));
            rows.push(row(
                0,
                "00:00",
                AttemptFailed,
                attempt,
                Some("CapacityUnavailable: none"),
            ));
        }
        let last = fallbacks + 1;
        rows.push(row(0, "00:00", Entered(Launching), last, Some(spot)));
        rows.push(row(0, "00:00", Entered(WaitingForRegistration), last, None));
        rows.push(row(
            0,
            &format!("00:{wait:02}"),
            Entered(Running),
            last,
            None,
        ));
        rows.push(row(0, "01:00", Entered(Completed), last, None));
        for (i, r) in rows.iter_mut().enumerate() {
            r.seq = i as u32 + 1;
        }
        JobSample {
            day: day.into(),
            figures: JobFigures::of(&rows, "2026-11-24T11:00:00Z").unwrap(),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let one = Percentiles::of(vec![7.0]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert_eq!(Percentiles::of(vec![]), None);
    }

    #[test]
    fn stats_add_up_waits_fallbacks_and_cost_per_day() {
        let samples = [
            job("2026-11-23", 10, 0),
            job("2026-11-23", 20, 2),
            job("2026-11-24", 30, 0),
            job("2026-11-24", 40, 1),
        ];
        let s = stats(&samples);
        assert_eq!(s.jobs, 4);
        assert_eq!(s.by_state, BTreeMap::from([("completed", 4)]));
        let wait = s.queued_to_running_seconds.clone().unwrap();
        assert_eq!((wait.p50, wait.max), (20.0, 40.0));
        assert_eq!(s.fallbacks_per_job, 0.75);
        assert_eq!(s.jobs_with_a_fallback, 0.5);
        assert_eq!(
            s.fallbacks_by_reason,
            BTreeMap::from([("CapacityUnavailable", 3)])
        );
        let day = &s.per_day["2026-11-23"];
        assert_eq!((day.jobs, day.runner_seconds), (2, 120.0));
        let expected: f64 = samples[..2]
            .iter()
            .map(|j| j.figures.cost_usd.unwrap())
            .sum();
        assert!((day.cost_usd - expected).abs() < 1e-12);
        let text = render(&s);
        assert!(text.starts_with("4 job(s): 4 completed\n"), "{text}");
        assert!(
            text.contains("0.75 per job, 50 % of jobs needed one (3 CapacityUnavailable)"),
            "{text}"
        );
        assert!(text.contains("2026-11-24"), "{text}");
    }

    #[test]
    fn no_jobs_is_said_plainly() {
        let s = stats(&[]);
        assert_eq!(
            render(&s),
            "0 job(s)\nqueued → running     no job got that far\n\
             launch → registered  no job got that far\n\
             fallbacks            0.00 per job, 0 % of jobs needed one\n"
        );
    }
}
