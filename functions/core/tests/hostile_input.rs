//! Hostile input: the webhook parser and the label grammar fuzzed within a bounded run.
//!
//! cargo-fuzz needs a nightly toolchain; these are the same targets as proptest properties with a
//! fixed number of cases each, so the file runs in seconds with `cargo test` (and so in `make
//! test`). `PROPTEST_CASES=<n>` runs every property `n` times instead, for a longer soak.
//!
//! - `webhook::decide`: arbitrary bytes signed with the right secret, arbitrary signature and event
//!   headers, GitHub's own fixtures with arbitrary JSON mutations, bodies over the size limit.
//! - `labels::resolve`: arbitrary Unicode, look-alikes of `tasuki`, very long labels, hundreds of
//!   labels, case and order variations, unique labels well- and malformed.
#![cfg(feature = "aws")]

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tasuki_core::domain::config::Config;
use tasuki_core::domain::ids::{JobId, RunnerName};
use tasuki_core::domain::job::{Conclusion, JobRef, WorkflowJobAction, WorkflowJobEvent};
use tasuki_core::domain::labels::{
    is_ours, resolve, LabelVerdict, Refusal, MAX_RUNNER_LABELS, MAX_UNIQUE_ID_LEN,
};
use tasuki_core::domain::waits::{Completion, Registered, Signal, Taken};
use tasuki_core::fakes::{FixedClock, MemoryStore, RecordingExecutions};
use tasuki_core::handlers::webhook::{
    decide, Decision, Webhook, WebhookRequest, WebhookResponse, MAX_BODY_BYTES,
};
use tasuki_core::handlers::Lifecycle;
use tasuki_core::metrics::RecordedMetrics;
use tasuki_core::signature::WebhookSecret;

/// A runtime config with every capacity, docker and a security-group allowlist (shared with
/// tests/handlers.rs).
const CONFIG: &str = include_str!("../../../tests/fixtures/config/runtime.json");

/// How many of its own labels a job may have with this config's one extra label.
const JOB_LABELS_MAX: usize = MAX_RUNNER_LABELS - 1;

/// How many characters of a label a refusal quotes.
const QUOTED_CHARS: usize = 256;

fn config() -> &'static Config {
    static CONFIG_ONCE: OnceLock<Config> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| Config::from_json(CONFIG).expect("test config is valid"))
}

fn secret() -> WebhookSecret {
    WebhookSecret::new("s3cr3t")
}

/// `n` cases, or `PROPTEST_CASES` when set.
fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig::with_cases(n)
}

/// GitHub's example deliveries (`tests/fixtures/webhooks/`): (file name, parsed body).
fn fixtures() -> &'static [(String, Value)] {
    static FIXTURES: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let dir = format!(
            "{}/../../tests/fixtures/webhooks",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut all: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                let body = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                (name, body)
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert!(
            all.iter()
                .filter(|(n, _)| n.starts_with("workflow_job."))
                .count()
                >= 5
        );
        all
    })
}

fn workflow_job_fixtures() -> Vec<&'static Value> {
    fixtures()
        .iter()
        .filter(|(name, _)| name.starts_with("workflow_job."))
        .map(|(_, body)| body)
        .collect()
}

fn signed(event: Option<&str>, body: Vec<u8>) -> WebhookRequest {
    WebhookRequest {
        event: event.map(str::to_string),
        delivery: Some("d".into()),
        signature: Some(secret().sign(&body)),
        body,
    }
}

// ---- strategies --------------------------------------------------------------------------------

/// Look-alikes of tasuki's labels: full-width, Turkish and long-s letters, Cyrillic, the Kelvin
/// sign, zero-width and bidi characters, NUL, combining marks, surrounding spaces.
const ODD: &[&str] = &[
    "ｔａｓｕｋｉ",
    "TASUKİ",
    "tasukı",
    "taſuki",
    "tаsuki",
    "tasu\u{212a}i",
    "ⓣⓐⓢⓤⓚⓘ",
    "tasuki\u{200b}",
    "\u{200b}tasuki",
    "\u{feff}tasuki",
    "tasuki\u{0}",
    "tasuki\u{301}",
    "\u{202e}ikusat",
    " tasuki",
    "tasuki ",
    "tasuki\n",
    "tasuki_4cpu-8gb",
    "tasuki—large",
    "tasuki‐large",
    "😀",
    "",
];

/// Labels that are odd inside: tasuki's prefixes followed by anything.
const ODD_TAILS: &[&str] = &[
    "４cpu-８gb",
    "4cpu-8gb\u{200b}",
    "large\u{0}",
    "１",
    "1\u{0}",
    "😀",
    "${{ github.run_id }}",
    "9999cpu-9999gb",
    "99999999999999999999cpu-1gb",
    "cpu-",
    "=",
    "db\u{301}",
    "fal\u{17f}e",
];

fn label() -> impl Strategy<Value = String> {
    let prefix = prop::sample::select(vec![
        "",
        "tasuki",
        "tasuki-",
        "TASUKI-",
        "tasuki-run=",
        "Tasuki-Run=",
        "sg-",
        "SG-",
        "spot=",
        "self-hosted",
        "linux",
        "x64",
        "ARM64",
        "docker",
    ]);
    let tail = prop_oneof![
        2 => Just(String::new()),
        2 => "[a-zA-Z0-9=._-]{0,16}",
        2 => any::<String>(),
        1 => prop::sample::select(ODD_TAILS).prop_map(str::to_string),
        1 => prop::sample::select(vec!["small", "large", "db", "false", "true", "4cpu-8gb", "3cpu-1gb"])
            .prop_map(str::to_string),
    ];
    prop_oneof![
        6 => (prefix, tail).prop_map(|(p, t)| format!("{p}{t}")),
        1 => prop::sample::select(ODD).prop_map(str::to_string),
    ]
}

/// A job's labels: tasuki's, odd ones, or a mix.
fn labels() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        prop::collection::vec(label(), 0..8),
        prop::collection::vec(good_label(), 1..6),
        prop::collection::vec(prop_oneof![3 => good_label(), 1 => label()], 1..8),
    ]
}

/// A label tasuki accepts (given the test config), in some case.
fn good_label() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "self-hosted",
        "linux",
        "tasuki",
        "tasuki-small",
        "tasuki-2cpu-4gb",
        "x64",
        "spot=true",
        "docker",
        "sg-db",
        "tasuki-run=1-1-build-0",
    ]);
    (word, any::<bool>()).prop_map(|(w, upper)| {
        if upper {
            w.to_ascii_uppercase()
        } else {
            w.to_string()
        }
    })
}

/// A unique label's id, as the recommended expression or anything the grammar allows.
fn unique_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            any::<u64>(),
            1u32..60,
            "[A-Za-z_][A-Za-z0-9_-]{0,40}",
            0u32..256
        )
            .prop_map(|(run, attempt, job, index)| format!("{run}-{attempt}-{job}-{index}")),
        "[A-Za-z0-9._-]{1,200}",
    ]
}

/// An id the grammar refuses: empty, too long, or with a character outside `[A-Za-z0-9._-]`.
fn bad_unique_id() -> impl Strategy<Value = String> {
    let outside = any::<char>().prop_filter("outside the id alphabet", |c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    });
    prop_oneof![
        Just(String::new()),
        "[a-z0-9]{201,400}",
        ("[A-Za-z0-9._-]{0,20}", outside, "[A-Za-z0-9._-]{0,20}")
            .prop_map(|(a, c, b)| format!("{a}{c}{b}")),
    ]
}

/// An `X-GitHub-Event` header: the ones tasuki reads, another, anything, or none.
fn event_header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        2 => prop::sample::select(vec!["workflow_job", "ping", "workflow_run", "Workflow_Job", ""])
            .prop_map(|e| Some(e.to_string())),
        2 => any::<String>().prop_map(Some),
    ]
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        label().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A change to a delivery: anywhere in it, or where tasuki reads.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value reached by following child indexes (modulo each level's size).
    Replace(Vec<usize>, Value),
    /// Remove the child reached that way.
    Remove(Vec<usize>),
    Job(&'static str, Value),
    Top(&'static str, Value),
}

fn runner_name() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (0u64..1_000, 0u32..4).prop_map(|(job, attempt)| json!(format!("tasuki-{job}-{attempt}"))),
        any::<u64>().prop_map(|job| json!(format!("tasuki-{job}-1"))),
        prop::sample::select(vec![
            "tasuki-+5-1",
            "tasuki-5-",
            "tasuki--1",
            "tasuki-5-1-2",
            "TASUKI-5-1",
            "tasuki-٥-1"
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::collection::vec(any::<usize>(), 1..5);
    let action = prop_oneof![
        4 => prop::sample::select(vec!["queued", "waiting", "in_progress", "completed", "Queued", ""])
            .prop_map(Value::from),
        1 => json_value(),
    ];
    let job_labels = prop_oneof![
        4 => labels().prop_map(|l| json!(l)),
        1 => prop::collection::vec(good_label(), 90..300).prop_map(|l| json!(l)),
        1 => json_value(),
    ];
    let id = prop_oneof![
        4 => any::<u64>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(Value::from),
        1 => json_value(),
    ];
    prop_oneof![
        2 => (path.clone(), json_value()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        1 => path.prop_map(Mutation::Remove),
        3 => job_labels.prop_map(|v| Mutation::Job("labels", v)),
        2 => action.prop_map(|v| Mutation::Top("action", v)),
        2 => runner_name().prop_map(|v| Mutation::Job("runner_name", v)),
        1 => prop_oneof![2 => Just(Value::Null), 3 => any::<u64>().prop_map(Value::from), 1 => json_value()]
            .prop_map(|v| Mutation::Job("runner_id", v)),
        1 => id.prop_map(|v| Mutation::Job("id", v)),
        1 => prop_oneof![2 => Just(Value::Null), 2 => Just(json!({"id": 1})), 1 => json_value()]
            .prop_map(|v| Mutation::Top("installation", v)),
        1 => prop_oneof![
            4 => prop::sample::select(vec!["success", "failure", "cancelled", "timed_out", "new_one"]).prop_map(Value::from),
            1 => json_value(),
        ]
        .prop_map(|v| Mutation::Job("conclusion", v)),
    ]
}

fn has_children(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

/// The child at `index`, modulo the number of children (the value has some).
fn child(value: &mut Value, index: usize) -> &mut Value {
    match value {
        Value::Object(map) => {
            let key = map.keys().nth(index % map.len()).unwrap().clone();
            map.get_mut(&key).unwrap()
        }
        Value::Array(items) => {
            let len = items.len();
            &mut items[index % len]
        }
        _ => unreachable!("has_children"),
    }
}

fn replace_at(value: &mut Value, path: &[usize], new: &Value) {
    match path.split_first() {
        Some((&index, rest)) if has_children(value) => replace_at(child(value, index), rest, new),
        _ => *value = new.clone(),
    }
}

fn remove_at(value: &mut Value, path: &[usize]) {
    if !has_children(value) {
        return;
    }
    match path {
        [] => {}
        [last] => match value {
            Value::Object(map) => {
                let key = map.keys().nth(last % map.len()).unwrap().clone();
                map.remove(&key);
            }
            Value::Array(items) => {
                let len = items.len();
                items.remove(last % len);
            }
            _ => {}
        },
        [index, rest @ ..] => remove_at(child(value, *index), rest),
    }
}

fn apply(body: &mut Value, mutation: &Mutation) {
    match mutation {
        Mutation::Replace(path, new) => replace_at(body, path, new),
        Mutation::Remove(path) => remove_at(body, path),
        Mutation::Job(field, new) => {
            if let Some(job) = body.get_mut("workflow_job").and_then(Value::as_object_mut) {
                job.insert(field.to_string(), new.clone());
            }
        }
        Mutation::Top(field, new) => {
            if let Some(top) = body.as_object_mut() {
                top.insert(field.to_string(), new.clone());
            }
        }
    }
}

// ---- what must hold ----------------------------------------------------------------------------

/// Ours exactly when a label is `tasuki` or starts with `tasuki-`, comparing ASCII letters only.
fn ours_by_the_readme(labels: &[String]) -> bool {
    labels.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l == "tasuki" || l.starts_with("tasuki-")
    })
}

/// A refusal's text names one of the job's labels (quoted whole up to 256 characters) and stays
/// small whatever the labels are.
fn check_refusal(refusal: &Refusal, labels: &[String]) -> Result<(), TestCaseError> {
    let text = refusal.to_string();
    let named = labels.iter().any(|l| {
        let quoted = if l.chars().count() > QUOTED_CHARS {
            format!("`{}…`", l.chars().take(QUOTED_CHARS).collect::<String>())
        } else {
            format!("`{l}`")
        };
        text.contains(&quoted)
    });
    prop_assert!(named, "{} names none of {:?}", text, labels);
    prop_assert!(
        text.len() <= 2 * 4 * QUOTED_CHARS + 400,
        "{} bytes",
        text.len()
    );
    Ok(())
}

fn kind(verdict: &LabelVerdict) -> &'static str {
    match verdict {
        LabelVerdict::NotOurs => "not ours",
        LabelVerdict::Refused(_) => "refused",
        LabelVerdict::Accepted(_) => "accepted",
    }
}

/// What `decide` must answer a signed `workflow_job` delivery, given the body as sent.
fn check_workflow_job(body: &[u8], decision: &Decision) -> Result<(), TestCaseError> {
    let event: WorkflowJobEvent = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(_) => {
            prop_assert!(
                matches!(decision, Decision::Malformed(_)),
                "unparsable body answered {:?}",
                decision
            );
            return Ok(());
        }
    };
    let job = &event.workflow_job;
    // A runner launched for another job (its name says which) that now runs this one.
    let theft = || {
        let name = job.runner_name.as_deref()?;
        let launched_for = RunnerName::parse(name)?;
        if launched_for.job == job.id {
            return None;
        }
        let taken = Taken {
            runner_name: launched_for,
            by_job: job.id,
        };
        Some((launched_for.job, Signal::RunnerTaken(taken)))
    };
    let running = matches!(
        event.action,
        WorkflowJobAction::InProgress | WorkflowJobAction::Completed
    );
    if !is_ours(&job.labels) {
        // Not ours: ignored, unless it took a runner tasuki launched for another job.
        match (running.then(theft).flatten(), decision) {
            (None, Decision::Ignore(_)) => {}
            (Some(taken), Decision::Signal(signals, None)) => {
                prop_assert_eq!(signals, &vec![taken])
            }
            (_, other) => prop_assert!(false, "not ours, answered {:?}", other),
        }
        return Ok(());
    }
    match (&event.action, decision) {
        (WorkflowJobAction::Queued, Decision::Queue(queued)) => {
            // The job tasuki queues is the one GitHub sent, labels and all.
            let sent = JobRef::from_event(&event);
            prop_assert_eq!(Some(queued), sent.as_ref());
            prop_assert_eq!(&queued.labels, &job.labels);
            prop_assert_eq!(queued.job_id, job.id);
        }
        (WorkflowJobAction::Queued, Decision::Malformed(_)) => {
            prop_assert!(event.installation.is_none())
        }
        (WorkflowJobAction::InProgress, Decision::Signal(signals, reported)) => {
            prop_assert_eq!(reported, &JobRef::from_event(&event));
            let registered = Signal::Registered(Registered {
                runner_name: job.runner_name.clone().unwrap(),
                runner_id: job.runner_id.unwrap(),
                job_id: job.id,
            });
            let mut expected = vec![(job.id, registered)];
            expected.extend(theft());
            prop_assert_eq!(signals, &expected);
        }
        (WorkflowJobAction::InProgress, Decision::Malformed(_)) => {
            prop_assert!(job.runner_name.is_none() || job.runner_id.is_none())
        }
        (WorkflowJobAction::Completed, Decision::Signal(signals, reported)) => {
            prop_assert_eq!(reported, &JobRef::from_event(&event));
            let (last_job, last) = signals.last().unwrap();
            prop_assert_eq!(*last_job, job.id);
            match &job.runner_name {
                None => prop_assert_eq!(signals, &vec![(job.id, Signal::Cancelled)]),
                Some(_) => prop_assert_eq!(
                    last,
                    &Signal::Completed(Completion {
                        conclusion: job.conclusion.unwrap_or(Conclusion::Unknown)
                    })
                ),
            }
            // Every signal is for this job or for the job whose runner it took.
            let victim = theft().map(|(id, _)| id);
            for (id, _) in signals {
                prop_assert!(*id == job.id || Some(*id) == victim);
            }
        }
        (WorkflowJobAction::Waiting | WorkflowJobAction::Other, Decision::Ignore(_)) => {}
        (action, other) => prop_assert!(false, "{:?} answered {:?}", action, other),
    }
    Ok(())
}

// ---- the webhook -------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(384))]

    /// Arbitrary bytes with a valid signature: never a panic, never unauthorized, and a body that
    /// is not a `workflow_job` payload is malformed (400), never queued.
    #[test]
    fn signed_garbage_is_malformed_never_queued(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<String>().prop_map(String::into_bytes),
            json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ],
        event in prop::sample::select(vec![Some("workflow_job"), Some("ping"), Some("push"), None]),
    ) {
        let decision = decide(&secret(), &signed(event, body.clone()));
        match event {
            Some("workflow_job") => check_workflow_job(&body, &decision)?,
            Some(_) => prop_assert!(matches!(decision, Decision::Ignore(_)), "{:?}", decision),
            None => prop_assert!(matches!(decision, Decision::Malformed(_)), "{:?}", decision),
        }
    }

    /// Without the right signature nothing else is looked at: whatever the body and the event
    /// header, the answer is unauthorized.
    #[test]
    fn without_the_right_signature_everything_is_unauthorized(
        fixture in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..512),
        use_fixture in any::<bool>(),
        event in event_header(),
        header in prop_oneof![
            Just(None),
            any::<String>().prop_map(Some),
            "sha256=[0-9a-f]{0,80}".prop_map(Some),
            Just(Some("signed by someone else".to_string())),
            Just(Some("corrupted".to_string())),
        ],
        flip in any::<prop::sample::Index>(),
    ) {
        let body = if use_fixture {
            // A delivery that would be queued if it were signed.
            let jobs = workflow_job_fixtures();
            let mut value = jobs[fixture.index(jobs.len())].clone();
            value["action"] = "queued".into();
            value["workflow_job"]["labels"] = json!(["self-hosted", "tasuki"]);
            serde_json::to_vec(&value).unwrap()
        } else {
            garbage
        };
        let signature = match header.as_deref() {
            Some("signed by someone else") => Some(WebhookSecret::new("other").sign(&body)),
            Some("corrupted") => {
                // The right signature with one hex digit changed to another value.
                let mut right = secret().sign(&body).into_bytes();
                let at = "sha256=".len() + flip.index(64);
                right[at] = if right[at] == b'0' { b'1' } else { b'0' };
                Some(String::from_utf8(right).unwrap())
            }
            _ => header,
        };
        let request = WebhookRequest { event, delivery: None, signature, body };
        prop_assert!(matches!(decide(&secret(), &request), Decision::Unauthorized(_)));
    }

    /// Any event header: `workflow_job` is read, `ping` pongs, any other is ignored by name, a
    /// missing one is malformed. The delivery id never changes the decision.
    #[test]
    fn any_event_header_is_answered_by_what_it_names(
        event in event_header(),
        delivery in prop_oneof![any::<String>().prop_map(Some), Just(None)],
        fixture in any::<prop::sample::Index>(),
    ) {
        let (_, body) = &fixtures()[fixture.index(fixtures().len())];
        let body = serde_json::to_vec(body).unwrap();
        let mut request = signed(event.as_deref(), body);
        let decision = decide(&secret(), &request);
        request.delivery = delivery;
        prop_assert_eq!(&decide(&secret(), &request), &decision);
        match event.as_deref() {
            None => prop_assert!(matches!(decision, Decision::Malformed(_))),
            Some("workflow_job") => check_workflow_job(&request.body, &decision)?,
            Some("ping") => prop_assert_eq!(decision, Decision::Ignore("pong".into())),
            Some(other) => prop_assert_eq!(decision, Decision::Ignore(format!("`{other}` events are not used"))),
        }
    }

    /// GitHub's own deliveries, mutated anywhere and where tasuki reads: never a panic, and the
    /// decision follows from the body as the model in `check_workflow_job` says.
    #[test]
    fn mutated_deliveries_are_decided_by_what_they_say(
        fixture in any::<prop::sample::Index>(),
        ours in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let jobs = workflow_job_fixtures();
        let mut value = jobs[fixture.index(jobs.len())].clone();
        if ours {
            value["workflow_job"]["labels"] = json!(["self-hosted", "tasuki"]);
        }
        for mutation in &mutations {
            apply(&mut value, mutation);
        }
        let body = serde_json::to_vec(&value).unwrap();
        let decision = decide(&secret(), &signed(Some("workflow_job"), body.clone()));
        check_workflow_job(&body, &decision)?;
    }
}

proptest! {
    #![proptest_config(cases(12))]

    /// Over the limit, the answer is 413 whatever the body, its signature and its event: nothing
    /// is hashed or parsed.
    #[test]
    fn an_oversized_body_is_too_large_before_anything_else(
        extra in 1usize..65_536,
        byte in any::<u8>(),
        sign in any::<bool>(),
        event in event_header(),
    ) {
        let body = vec![byte; MAX_BODY_BYTES + extra];
        let signature = sign.then(|| secret().sign(&body));
        let request = WebhookRequest { event, delivery: None, signature, body };
        prop_assert_eq!(
            decide(&secret(), &request),
            Decision::TooLarge { bytes: MAX_BODY_BYTES + extra }
        );
    }
}

struct World {
    webhook: Webhook,
    store: Arc<MemoryStore>,
    executions: Arc<RecordingExecutions>,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::default());
    let executions = Arc::new(RecordingExecutions::default());
    let webhook = Webhook {
        config: Arc::new(config().clone()),
        secret: secret(),
        lifecycle: Lifecycle {
            store: store.clone(),
            clock: Arc::new(FixedClock::at(1_795_392_000)),
            timeouts: config().timeouts,
            metrics: Arc::new(RecordedMetrics::default()),
        },
        executions: executions.clone(),
    };
    World {
        webhook,
        store,
        executions,
    }
}

/// A signed queued delivery of ours for job 12877621891, padded with JSON whitespace to `len`.
fn queued_of_length(len: usize) -> (JobId, WebhookRequest) {
    let (_, fixture) = fixtures()
        .iter()
        .find(|(name, _)| name == "workflow_job.queued.2.json")
        .unwrap();
    let mut value = fixture.clone();
    value["workflow_job"]["labels"] = json!(["self-hosted", "tasuki"]);
    let job = JobId::new(value["workflow_job"]["id"].as_u64().unwrap());
    let mut body = serde_json::to_vec(&value).unwrap();
    body.resize(len, b' ');
    (job, signed(Some("workflow_job"), body))
}

#[tokio::test]
async fn the_webhook_answers_413_over_the_limit_and_writes_nothing() {
    let world = world();
    let (job, over) = queued_of_length(MAX_BODY_BYTES + 1);
    let answer = world.webhook.handle(over).await;
    assert_eq!(
        answer,
        WebhookResponse {
            status: 413,
            status_text: "too-large",
            reason: Some(format!(
                "body of {} bytes is over the {MAX_BODY_BYTES}-byte limit",
                MAX_BODY_BYTES + 1
            )),
            job_id: None,
        }
    );
    assert!(world.store.record(job).is_none(), "nothing stored");
    assert!(world.executions.started.lock().unwrap().is_empty());
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(json["status_text"], "too-large");

    // The same delivery at exactly the limit is read, stored and started.
    let (job, at_limit) = queued_of_length(MAX_BODY_BYTES);
    let answer = world.webhook.handle(at_limit).await;
    assert_eq!((answer.status, answer.job_id), (202, Some(job)));
    assert!(world.store.record(job).is_some());
    assert_eq!(world.executions.started.lock().unwrap().len(), 1);
}

#[test]
fn malformed_and_unauthorized_deliveries_are_400_and_401_and_write_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let world = world();
    let mut runner = proptest::test_runner::TestRunner::new(cases(64));
    runner
        .run(
            &(prop::collection::vec(any::<u8>(), 0..256), any::<bool>()),
            |(body, sign)| {
                let request = WebhookRequest {
                    event: Some("workflow_job".into()),
                    delivery: None,
                    signature: Some(if sign {
                        secret().sign(&body)
                    } else {
                        WebhookSecret::new("other").sign(&body)
                    }),
                    body,
                };
                let answer = runtime.block_on(world.webhook.handle(request));
                let expected = if sign {
                    (400, "malformed")
                } else {
                    (401, "unauthorized")
                };
                prop_assert_eq!((answer.status, answer.status_text), expected);
                prop_assert!(answer.job_id.is_none());
                Ok(())
            },
        )
        .unwrap();
    assert!(world.executions.started.lock().unwrap().is_empty());
}

// ---- the label grammar -------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    /// Whatever the labels: no panic, the same verdict twice, ours exactly as the README says, and
    /// a refusal names one of them.
    #[test]
    fn any_labels_get_a_verdict_that_names_the_label_at_fault(list in labels()) {
        let verdict = resolve(&list, config());
        prop_assert_eq!(&resolve(&list, config()), &verdict);
        prop_assert_eq!(verdict == LabelVerdict::NotOurs, !ours_by_the_readme(&list));
        if let LabelVerdict::Refused(refusal) = &verdict {
            check_refusal(refusal, &list)?;
        }
    }

    /// Order never changes whether a job is ours, refused or accepted, nor what it is given; only
    /// which of two faults a refusal names first.
    #[test]
    fn order_does_not_change_the_verdict(
        (list, shuffled) in prop::collection::vec(prop_oneof![4 => good_label(), 1 => label()], 0..8)
            .prop_flat_map(|l| (Just(l.clone()), Just(l).prop_shuffle())),
    ) {
        let (a, b) = (resolve(&list, config()), resolve(&shuffled, config()));
        prop_assert_eq!(kind(&a), kind(&b));
        if let (LabelVerdict::Accepted(a), LabelVerdict::Accepted(b)) = (&a, &b) {
            prop_assert_eq!(a, b);
        }
    }

    /// ASCII case never changes the verdict (GitHub matches labels case-insensitively), odd
    /// Unicode included.
    #[test]
    fn ascii_case_does_not_change_the_verdict(list in prop::collection::vec(prop_oneof![4 => good_label(), 1 => label()], 0..8)) {
        let upper: Vec<String> = list.iter().map(|l| l.to_ascii_uppercase()).collect();
        let lower: Vec<String> = list.iter().map(|l| l.to_ascii_lowercase()).collect();
        let (u, l) = (resolve(&upper, config()), resolve(&lower, config()));
        prop_assert_eq!(kind(&u), kind(&l));
        if let (LabelVerdict::Accepted(u), LabelVerdict::Accepted(l)) = (&u, &l) {
            prop_assert_eq!(u, l);
        }
    }

    /// Labels that only look like tasuki's are not ours: a job of look-alikes is never served.
    #[test]
    fn look_alikes_are_not_ours(list in prop::collection::vec(prop::sample::select(ODD), 1..6)) {
        prop_assert_eq!(resolve(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), config()), LabelVerdict::NotOurs);
    }

    /// Only labels tasuki accepts: accepted up to the runner's 100 labels, refused past them.
    #[test]
    fn hundreds_of_labels_are_refused_past_what_a_runner_takes(list in prop::collection::vec(good_label(), 1..400)) {
        let mut list = list;
        list.push("tasuki".into());
        // `good_label`s never conflict with each other: only the count can refuse them.
        match resolve(&list, config()) {
            LabelVerdict::Accepted(_) => prop_assert!(list.len() <= JOB_LABELS_MAX),
            LabelVerdict::Refused(Refusal::TooManyLabels { label, count }) => {
                prop_assert!(list.len() > JOB_LABELS_MAX);
                prop_assert_eq!(count, list.len() + 1);
                prop_assert_eq!(&label, &list[JOB_LABELS_MAX]);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// A label of up to 100 000 characters: never accepted, and the refusal stays small.
    #[test]
    fn very_long_labels_are_refused_in_a_few_words(
        prefix in prop::sample::select(vec!["tasuki-", "tasuki-run=", "sg-", "TASUKI-", "x", "tasuki-9"]),
        unit in prop_oneof![Just("a".to_string()), Just("é".to_string()), Just("😀".to_string()), any::<char>().prop_map(String::from)],
        repeat in 300usize..100_000,
        suffix in prop::sample::select(vec!["", "cpu-8gb", "cpu-", "gb"]),
        others in prop::collection::vec(good_label(), 0..4),
    ) {
        let long = format!("{prefix}{}{suffix}", unit.repeat(repeat));
        let mut list = others;
        list.push("tasuki".into());
        list.push(long);
        let verdict = resolve(&list, config());
        let LabelVerdict::Refused(refusal) = &verdict else {
            return Err(TestCaseError::fail(format!("{:?}", kind(&verdict))));
        };
        check_refusal(refusal, &list)?;
    }

    /// A well-formed unique label changes nothing else; two different ones conflict and both are
    /// named; the same id in another case is the same label.
    #[test]
    fn unique_labels_are_honoured(
        id in unique_id(),
        other in unique_id(),
        rest in prop::collection::vec(prop::sample::select(vec!["self-hosted", "tasuki-large", "ARM64", "spot=false", "sg-db"]), 0..5),
        upper in any::<bool>(),
    ) {
        let mut base: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        base.push("tasuki".into());
        let unique = format!("tasuki-run={id}");
        let same = if upper { unique.to_ascii_uppercase() } else { unique.to_ascii_lowercase() };
        let mut with = base.clone();
        with.insert(0, unique.clone());
        with.push(same);
        let (plain, with_unique) = (resolve(&base, config()), resolve(&with, config()));
        prop_assert!(matches!(plain, LabelVerdict::Accepted(_)), "{:?}", plain);
        prop_assert_eq!(&with_unique, &plain);

        let second = format!("tasuki-run={other}");
        with.push(second.clone());
        let verdict = resolve(&with, config());
        if other.eq_ignore_ascii_case(&id) {
            prop_assert_eq!(verdict, plain);
        } else {
            prop_assert_eq!(
                verdict,
                LabelVerdict::Refused(Refusal::Conflict {
                    first: unique,
                    second,
                    what: "unique labels",
                })
            );
        }
    }

    /// A malformed unique label is refused, by name, whatever else the job asks for.
    #[test]
    fn malformed_unique_labels_are_refused_by_name(
        id in bad_unique_id(),
        rest in prop::collection::vec(good_label(), 0..5),
        prefix in prop::sample::select(vec!["tasuki-run=", "TASUKI-RUN=", "Tasuki-Run="]),
    ) {
        let label = format!("{prefix}{id}");
        let mut list = rest;
        list.push(label.clone());
        match resolve(&list, config()) {
            LabelVerdict::Refused(Refusal::BadUniqueLabel { label: named }) => prop_assert_eq!(named, label),
            // Another label of the job may be at fault first (two different Spot settings...).
            LabelVerdict::Refused(refusal) => check_refusal(&refusal, &list)?,
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

#[test]
fn the_runner_label_limit_is_exact() {
    let list = |n: usize| vec!["tasuki".to_string(); n];
    assert!(matches!(
        resolve(&list(JOB_LABELS_MAX), config()),
        LabelVerdict::Accepted(_)
    ));
    assert_eq!(
        resolve(&list(JOB_LABELS_MAX + 1), config()),
        LabelVerdict::Refused(Refusal::TooManyLabels {
            label: "tasuki".into(),
            count: MAX_RUNNER_LABELS + 1
        })
    );
    let longest = format!("tasuki-run={}", "9".repeat(MAX_UNIQUE_ID_LEN));
    assert!(matches!(
        resolve(&[longest], config()),
        LabelVerdict::Accepted(_)
    ));
}

#[test]
fn the_fixtures_cover_every_action_the_webhook_reads() {
    let actions: BTreeMap<String, usize> =
        workflow_job_fixtures()
            .iter()
            .fold(BTreeMap::new(), |mut seen, body| {
                *seen
                    .entry(body["action"].as_str().unwrap().to_string())
                    .or_default() += 1;
                seen
            });
    for action in ["queued", "waiting", "in_progress", "completed"] {
        assert!(actions.contains_key(action), "{actions:?}");
    }
}
