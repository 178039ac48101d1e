//! The `LifecycleStore` contract, as tests any store must pass: DynamoDB on moto
//! (`tests/adapters.rs`) and the in-memory store the handler tests use (`tests/handlers.rs`) run
//! the same functions, so the fake is never kinder than the real thing.

/// One `#[tokio::test]` per contract function, each on a fresh store from `$store`.
#[macro_export]
macro_rules! store_contract_tests {
    ($store:expr) => {
        $crate::store_contract_tests!($store;
            a_job_is_created_once_with_its_received_event,
            a_commit_from_a_stale_read_is_a_conflict_and_writes_nothing,
            whichever_of_signal_and_wait_comes_second_sees_both,
            a_late_stop_of_an_older_attempt_does_not_hide_a_newer_one,
            ls_lists_the_window_newest_first_narrowed_by_state_and_repository,
            ls_reads_each_day_of_a_long_window_and_stops_at_the_limit,
            overdue_jobs_are_the_unfinished_ones_past_their_deadline,
            a_postponed_job_is_overdue_later_and_a_finished_one_is_not_touched,
            a_rerun_is_remembered_for_its_run_and_job_name_only,
        );
    };
    ($store:expr; $($name:ident,)*) => {$(
        #[tokio::test]
        async fn $name() {
            contract::$name(&$store).await;
        }
    )*};
}

use tasuki_core::domain::config::Timeouts;
use tasuki_core::domain::ids::{Attempt, JobId};
use tasuki_core::domain::job::{Conclusion, JobRef};
use tasuki_core::domain::lifecycle::{Happening, JobState, Position};
use tasuki_core::domain::listing::{JobFilter, Limit, RepositoryName, Window};
use tasuki_core::domain::record::{Commit, Event, JobRecord, Now};
use tasuki_core::domain::waits::{
    Completion, Registered, Signal, Stopped, TaskToken, Wait, WaitPhase,
};
use tasuki_core::ports::{LifecycleStore, StoreError};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn job(job_id: u64) -> JobRef {
    JobRef {
        job_id: JobId::new(job_id),
        run_id: 99,
        run_attempt: 1,
        repository: "octo-org/app".into(),
        private: true,
        workflow: "CI".into(),
        job_name: "build".into(),
        labels: vec!["self-hosted".into(), "tasuki".into()],
        installation_id: 1,
    }
}

pub fn now(epoch_seconds: u64) -> Now {
    Now {
        epoch_seconds,
        rfc3339: format!("2026-11-23T00:00:{:02}Z", epoch_seconds % 60),
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    registration_seconds: 300,
    job_seconds: 3600,
    capacity_wait_seconds: 900,
    rescue_grace_seconds: 300,
};

/// Creates the job as the webhook does; `false` when it already existed.
pub async fn create(store: &dyn LifecycleStore, job_id: u64, at: u64) -> bool {
    let received = JobRecord::received(job(job_id), "arn:exec".into(), &TIMEOUTS, &now(at));
    store.create(&received).await.unwrap()
}

fn id(job_id: u64) -> JobId {
    JobId::new(job_id)
}

fn commit(to: JobState, attempt: u32, happening: Happening) -> Commit {
    Commit {
        to: Position { state: to, attempt },
        happening,
        candidate: None,
        deadline: 1,
        task_arn: None,
        runner: None,
        conclusion: None,
    }
}

async fn apply(
    store: &dyn LifecycleStore,
    from: &JobRecord,
    commit: &Commit,
) -> Result<(), StoreError> {
    store.commit(from, &from.apply(commit, &now(2))).await
}

fn plan() -> Commit {
    commit(JobState::Planned, 0, Happening::Plan { candidates: 3 })
}

pub async fn a_job_is_created_once_with_its_received_event(store: &dyn LifecycleStore) {
    assert!(create(store, 1, 1).await);
    assert!(!create(store, 1, 1).await, "a redelivery creates nothing");
    let record = store.get(id(1)).await.unwrap().unwrap();
    assert_eq!(record.position, Position::RECEIVED);
    assert_eq!(record.job, job(1));
    assert_eq!(record.execution_arn, "arn:exec");
    assert_eq!(record.deadline, 1 + 300, "received: the grace alone");
    let timeline = store.timeline(id(1)).await.unwrap();
    assert_eq!(timeline.len(), 1);
    assert_eq!(
        (timeline[0].event, timeline[0].state),
        (Event::Entered(JobState::Received), JobState::Received)
    );
}

pub async fn a_commit_from_a_stale_read_is_a_conflict_and_writes_nothing(
    store: &dyn LifecycleStore,
) {
    create(store, 2, 1).await;
    let read = store.get(id(2)).await.unwrap().unwrap();
    apply(store, &read, &plan()).await.unwrap();
    let again = apply(store, &read, &plan()).await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");
    // A signal in between also makes an older read stale: nothing a webhook wrote is lost.
    let fresh = store.get(id(2)).await.unwrap().unwrap();
    store.signal(id(2), &Signal::Cancelled).await.unwrap();
    let launch = commit(
        JobState::Launching,
        1,
        Happening::Launch {
            attempt: Attempt::FIRST,
            candidate: "c".into(),
        },
    );
    assert!(matches!(
        apply(store, &fresh, &launch).await,
        Err(StoreError::Conflict)
    ));
    let now = store.get(id(2)).await.unwrap().unwrap();
    assert!(now.signals.cancelled);
    assert_eq!(now.position.state, JobState::Planned);
    assert_eq!(now.last_happening, Some(Happening::Plan { candidates: 3 }));
    let events: Vec<Event> = store
        .timeline(id(2))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        [
            Event::Entered(JobState::Received),
            Event::Entered(JobState::Planned)
        ]
    );
}

pub async fn whichever_of_signal_and_wait_comes_second_sees_both(store: &dyn LifecycleStore) {
    create(store, 5, 1).await;
    let registered = Signal::Registered(Registered {
        runner_name: "tasuki-5-1".into(),
        runner_id: 8,
        job_id: id(5),
    });
    // Signal first: the waiter's arm returns the signal.
    let after_signal = store.signal(id(5), &registered).await.unwrap().unwrap();
    assert!(after_signal.wait.is_none());
    let wait = Wait {
        token: TaskToken::new("tok-1"),
        phase: WaitPhase::Registration,
        attempt: Attempt::FIRST,
    };
    let armed = store.arm(id(5), &wait).await.unwrap();
    assert_eq!(armed.wait.as_ref(), Some(&wait));
    assert_eq!(armed.signals.registered.as_ref().unwrap().runner_id, 8);
    // Wait first: the signal's write returns the token.
    store.disarm(id(5), &TaskToken::new("tok-1")).await.unwrap();
    assert!(store.get(id(5)).await.unwrap().unwrap().wait.is_none());
    let wait2 = Wait {
        token: TaskToken::new("tok-2"),
        phase: WaitPhase::Completion,
        attempt: Attempt::FIRST,
    };
    store.arm(id(5), &wait2).await.unwrap();
    let completed = Signal::Completed(Completion {
        conclusion: Conclusion::Success,
    });
    let signalled = store.signal(id(5), &completed).await.unwrap().unwrap();
    assert_eq!(signalled.wait, Some(wait2));
    assert_eq!(signalled.signals.conclusion, Some(Conclusion::Success));
    // Disarming with a stale token leaves the current one alone.
    store.disarm(id(5), &TaskToken::new("tok-1")).await.unwrap();
    assert!(store.get(id(5)).await.unwrap().unwrap().wait.is_some());
}

pub async fn a_late_stop_of_an_older_attempt_does_not_hide_a_newer_one(store: &dyn LifecycleStore) {
    create(store, 6, 1).await;
    let stop = |attempt| {
        Signal::Stopped(Stopped {
            attempt: Attempt::new(attempt).unwrap(),
            reason: format!("stop {attempt}"),
            clean_exit: false,
        })
    };
    store.signal(id(6), &stop(2)).await.unwrap();
    let after = store.signal(id(6), &stop(1)).await.unwrap().unwrap();
    assert_eq!(after.signals.stopped.unwrap().attempt.get(), 2);
    assert!(
        store
            .signal(id(404), &Signal::Cancelled)
            .await
            .unwrap()
            .is_none(),
        "unknown jobs are not created"
    );
    assert!(store.get(id(404)).await.unwrap().is_none());
}

/// Creates a job of `repository` received at `created_at` (RFC 3339).
async fn received_at(store: &dyn LifecycleStore, job_id: u64, repository: &str, created_at: &str) {
    let job = JobRef {
        repository: repository.into(),
        ..job(job_id)
    };
    let at = Now {
        epoch_seconds: 1,
        rfc3339: created_at.into(),
    };
    let received = JobRecord::received(job, "arn:exec".into(), &TIMEOUTS, &at);
    assert!(store.create(&received).await.unwrap());
}

fn instant(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).unwrap()
}

/// Every job received from `since` to `until`, at most `limit`.
fn between(since: &str, until: &str, limit: usize) -> JobFilter {
    JobFilter::window(
        Window::new(instant(since), instant(until)).unwrap(),
        Limit::new(limit).unwrap(),
    )
}

async fn listed(store: &dyn LifecycleStore, filter: &JobFilter) -> Vec<u64> {
    store
        .list(filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.job.job_id.get())
        .collect()
}

pub async fn ls_lists_the_window_newest_first_narrowed_by_state_and_repository(
    store: &dyn LifecycleStore,
) {
    received_at(store, 50, "octo-org/a", "2026-11-21T23:59:59Z").await;
    received_at(store, 51, "octo-org/a", "2026-11-22T00:00:00.5Z").await;
    received_at(store, 52, "octo-org/b", "2026-11-22T12:00:00Z").await;
    received_at(store, 53, "octo-org/a", "2026-11-23T08:00:00.123456Z").await;
    received_at(store, 54, "octo-org/a", "2026-11-24T00:00:00Z").await;
    let read = store.get(id(53)).await.unwrap().unwrap();
    let refuse = commit(
        JobState::Refused,
        0,
        Happening::Refuse {
            reason: "gpu".into(),
        },
    );
    apply(store, &read, &refuse).await.unwrap();
    let window = between("2026-11-22T00:00:00Z", "2026-11-23T23:59:59Z", 10);
    assert_eq!(listed(store, &window).await, [53, 52, 51]);
    let two = between("2026-11-22T00:00:00Z", "2026-11-23T23:59:59Z", 2);
    assert_eq!(listed(store, &two).await, [53, 52], "the newest two");
    let received = JobFilter {
        states: vec![JobState::Received],
        ..window.clone()
    };
    assert_eq!(listed(store, &received).await, [52, 51]);
    let refused_or_running = JobFilter {
        states: vec![JobState::Refused, JobState::Running],
        ..window.clone()
    };
    assert_eq!(
        listed(store, &refused_or_running).await,
        [53],
        "a commit keeps the job listed under the day it was received"
    );
    let of_b = JobFilter {
        repository: Some(RepositoryName::parse("octo-org/b").unwrap()),
        ..window.clone()
    };
    assert_eq!(listed(store, &of_b).await, [52]);
    let received_of_a = JobFilter {
        repository: Some(RepositoryName::parse("octo-org/a").unwrap()),
        ..received
    };
    assert_eq!(listed(store, &received_of_a).await, [51]);
    let one_second = between("2026-11-21T23:59:59Z", "2026-11-21T23:59:59Z", 10);
    assert_eq!(listed(store, &one_second).await, [50], "both ends included");
}

pub async fn ls_reads_each_day_of_a_long_window_and_stops_at_the_limit(store: &dyn LifecycleStore) {
    for day in 1..=9u64 {
        let at = format!("2026-10-0{day}T12:00:00Z");
        received_at(store, 60 + day, "octo-org/app", &at).await;
    }
    let all = between("2026-09-01T00:00:00Z", "2026-11-24T10:00:00Z", 100);
    assert_eq!(
        listed(store, &all).await,
        [69, 68, 67, 66, 65, 64, 63, 62, 61]
    );
    let three = between("2026-09-01T00:00:00Z", "2026-11-24T10:00:00Z", 3);
    assert_eq!(listed(store, &three).await, [69, 68, 67]);
    let none = between("2026-10-09T12:00:01Z", "2026-11-24T10:00:00Z", 3);
    assert!(listed(store, &none).await.is_empty());
}

pub async fn overdue_jobs_are_the_unfinished_ones_past_their_deadline(store: &dyn LifecycleStore) {
    // Received at 100 and 200: deadlines 400 and 500 (the grace alone).
    create(store, 20, 100).await;
    create(store, 21, 200).await;
    create(store, 22, 100).await;
    let done = store.get(id(22)).await.unwrap().unwrap();
    let refuse = commit(
        JobState::Refused,
        0,
        Happening::Refuse {
            reason: "gpu".into(),
        },
    );
    apply(store, &done, &refuse).await.unwrap();
    let overdue = |now| async move {
        store
            .overdue(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.job.job_id.get())
            .collect::<Vec<_>>()
    };
    assert_eq!(overdue(400).await, Vec::<u64>::new(), "not yet");
    assert_eq!(overdue(401).await, [20]);
    assert_eq!(
        overdue(10_000).await,
        [20, 21],
        "most overdue first; finished jobs never"
    );
    assert_eq!(store.overdue(10_000, 1).await.unwrap().len(), 1);
}

pub async fn a_postponed_job_is_overdue_later_and_a_finished_one_is_not_touched(
    store: &dyn LifecycleStore,
) {
    create(store, 30, 100).await;
    store.postpone(id(30), 900).await.unwrap();
    let overdue = store.overdue(800, 10).await.unwrap();
    assert!(overdue.is_empty(), "postponed past 800");
    let record = store.get(id(30)).await.unwrap().unwrap();
    assert_eq!((record.deadline, record.version), (900, 1));
    let refuse = commit(
        JobState::Refused,
        0,
        Happening::Refuse {
            reason: "gpu".into(),
        },
    );
    apply(store, &record, &refuse).await.unwrap();
    store.postpone(id(30), 5_000).await.unwrap();
    assert_eq!(store.get(id(30)).await.unwrap().unwrap().deadline, 1);
    store.postpone(id(404), 5_000).await.unwrap();
    assert!(
        store.get(id(404)).await.unwrap().is_none(),
        "unknown jobs are not created"
    );
}

pub async fn a_rerun_is_remembered_for_its_run_and_job_name_only(store: &dyn LifecycleStore) {
    let first = job(40);
    let next_attempt = JobRef {
        job_id: id(41),
        run_attempt: 2,
        ..job(40)
    };
    let other_job = JobRef {
        job_name: "test".into(),
        ..job(42)
    };
    assert!(!store.rerun_marked(&next_attempt.rerun_key()).await.unwrap());
    store.mark_rerun(&first.rerun_key()).await.unwrap();
    store.mark_rerun(&first.rerun_key()).await.unwrap();
    assert!(store.rerun_marked(&next_attempt.rerun_key()).await.unwrap());
    assert!(!store.rerun_marked(&other_job.rerun_key()).await.unwrap());
    assert!(
        store.get(id(40)).await.unwrap().is_none(),
        "a mark is no job"
    );
    let today = between("2026-11-23T00:00:00Z", "2026-11-23T23:59:59Z", 100);
    assert!(!listed(store, &today).await.contains(&40));
}
