//! The state machine and the Rust code agree: error names, Lambdas, and the graph itself.

use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use tasuki_core::domain::ids::{Attempt, JobId, RunnerName};
use tasuki_core::domain::lifecycle::JobState;
use tasuki_core::domain::outcome::Outcome;
use tasuki_core::domain::rounds::{NextAttempt, Progress, Try};
use tasuki_core::error::ErrorName;
use tasuki_core::handlers::state::{
    AfterCleanup, ExecutionState, Finalized, IssuedRunner, LaunchedTask, Limits,
};

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn asl() -> Value {
    let path = root().join("statemachines/runner-job.asl.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn states(asl: &Value) -> &serde_json::Map<String, Value> {
    asl["States"].as_object().unwrap()
}

fn error_names(asl: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for state in states(asl).values() {
        for key in ["Retry", "Catch"] {
            for rule in state[key].as_array().into_iter().flatten() {
                for name in rule["ErrorEquals"].as_array().unwrap() {
                    names.insert(name.as_str().unwrap().to_string());
                }
            }
        }
    }
    names
}

/// Raised, but left to `States.ALL` on purpose: a malformed input is a contract bug that no retry
/// and no dedicated branch can fix; the job fails with the parse error as its reason.
const LEFT_TO_STATES_ALL: [ErrorName; 1] = [ErrorName::MalformedInput];

#[test]
fn every_error_the_asl_handles_is_one_the_lambdas_raise_and_vice_versa() {
    let handled: BTreeSet<String> = error_names(&asl())
        .into_iter()
        .filter(|n| !n.starts_with("States.") && !n.starts_with("Lambda."))
        .collect();
    let raised: BTreeSet<String> = ErrorName::ALL
        .iter()
        .filter(|n| !LEFT_TO_STATES_ALL.contains(n))
        .map(|n| n.as_str().to_string())
        .collect();
    assert_eq!(handled, raised, "ASL Retry/Catch names vs ErrorName::ALL");
}

#[test]
fn a_malformed_input_is_never_retried_and_every_task_catches_everything() {
    let asl = asl();
    for (name, state) in states(&asl) {
        if state["Type"] != "Task" {
            continue;
        }
        for rule in state["Retry"].as_array().into_iter().flatten() {
            let names = rule["ErrorEquals"].as_array().unwrap();
            assert!(
                !names
                    .iter()
                    .any(|n| n == "MalformedInput" || n == "States.ALL"),
                "{name} retries {names:?}"
            );
        }
        let catches_all = state["Catch"].as_array().into_iter().flatten().any(|rule| {
            rule["ErrorEquals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "States.ALL")
        });
        assert!(catches_all, "{name} has no States.ALL catch");
    }
}

fn keys(value: Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn every_result_path_names_a_field_of_the_execution_state() {
    let minimal: ExecutionState = serde_json::from_value(serde_json::json!({"job": {
        "job_id": 1, "run_id": 1, "run_attempt": 1, "repository": "o/r", "private": true,
        "workflow": "w", "job_name": "j", "labels": ["tasuki"], "installation_id": 1
    }}))
    .unwrap();
    // Unset fields serialize as null: the keys are every field the state can hold.
    let fields = keys(serde_json::to_value(minimal).unwrap());
    let asl = asl();
    let mut paths = BTreeSet::new();
    for (name, state) in states(&asl) {
        let mut results: Vec<&Value> = vec![&state["ResultPath"]];
        results.extend(
            state["Catch"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| &c["ResultPath"]),
        );
        for path in results.into_iter().filter_map(Value::as_str) {
            let field = path.strip_prefix("$.").unwrap_or(path);
            assert!(
                fields.contains(field),
                "{name}: {path} is not a field of ExecutionState ({fields:?})"
            );
            paths.insert(field.to_string());
        }
    }
    let built_elsewhere = ["job"]; // the execution's input
    for field in &fields {
        assert!(
            paths.contains(field)
                || built_elsewhere.contains(&field.as_str())
                || field == "attempt",
            "ExecutionState.{field} is written by no state"
        );
    }
}

#[test]
fn each_result_selector_picks_exactly_the_fields_of_its_lambdas_output() {
    let attempt = Attempt::FIRST;
    let outputs = [
        (
            "Validate",
            serde_json::to_value(Limits {
                registration_seconds: 1,
                job_seconds: 2,
            }),
        ),
        (
            "IssueToken",
            serde_json::to_value(IssuedRunner {
                name: RunnerName::new(JobId::new(1), attempt),
                id: 1,
                jit_config_sealed: "s".into(),
                grant_id: "g".into(),
            }),
        ),
        (
            "RunTask",
            serde_json::to_value(LaunchedTask {
                task_arn: "t".into(),
            }),
        ),
        (
            "CleanupAttempt",
            serde_json::to_value(AfterCleanup {
                next: NextAttempt {
                    number: attempt,
                    try_: Try::FIRST,
                    relaunches: 0,
                    wait_seconds: 0,
                    exhausted: false,
                },
                running: None,
            }),
        ),
        (
            "FinalizeFailed",
            serde_json::to_value(Finalized {
                state: JobState::Failed,
                reason: None,
            }),
        ),
    ];
    let asl = asl();
    for (name, output) in outputs {
        let selected: BTreeSet<String> = keys(states(&asl)[name]["ResultSelector"].clone())
            .into_iter()
            .map(|k| k.trim_end_matches(".$").to_string())
            .collect();
        assert_eq!(selected, keys(output.unwrap()), "{name}");
    }
    let plan = &states(&asl)["ResolveLabels"]["ResultSelector"];
    assert_eq!(
        keys(plan.clone()),
        BTreeSet::from(["candidates.$".to_string(), "count.$".to_string()])
    );
}

#[test]
fn every_lambda_the_asl_invokes_is_a_binary_of_the_workspace() {
    let text = std::fs::read_to_string(root().join("statemachines/runner-job.asl.json")).unwrap();
    let bins: HashSet<String> = std::fs::read_dir(root().join("functions/lambdas/src/bin"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .map(|bin| {
            bin.split('-')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect::<String>()
                + "FunctionArn"
        })
        .collect();
    let placeholders: HashSet<String> = text
        .split("${")
        .skip(1)
        .map(|rest| rest.split('}').next().unwrap().to_string())
        .collect();
    assert!(!placeholders.is_empty());
    for placeholder in placeholders.iter().filter(|p| *p != "Partition") {
        assert!(
            bins.contains(placeholder),
            "${{{placeholder}}} has no binary"
        );
    }
}

#[test]
fn every_state_is_reachable_and_every_transition_lands_on_a_state() {
    let asl = asl();
    let states = states(&asl);
    let targets = |state: &Value| -> Vec<String> {
        let mut out = vec![];
        for key in ["Next", "Default"] {
            if let Some(t) = state[key].as_str() {
                out.push(t.to_string());
            }
        }
        for list in ["Catch", "Choices"] {
            for rule in state[list].as_array().into_iter().flatten() {
                out.push(rule["Next"].as_str().unwrap().to_string());
            }
        }
        out
    };
    let mut seen = HashSet::new();
    let mut todo = vec![asl["StartAt"].as_str().unwrap().to_string()];
    while let Some(name) = todo.pop() {
        let state = states
            .get(&name)
            .unwrap_or_else(|| panic!("no state {name}"));
        if seen.insert(name.clone()) {
            todo.extend(targets(state));
        }
    }
    let all: HashSet<String> = states.keys().cloned().collect();
    assert_eq!(seen, all, "unreachable states");
}

#[test]
fn both_callback_waits_are_bounded_by_the_configured_timeouts() {
    let asl = asl();
    let states = states(&asl);
    for (name, path) in [
        ("WaitForRegistration", "$.limits.registration_seconds"),
        ("WaitForCompletion", "$.limits.job_seconds"),
    ] {
        let state = &states[name];
        assert!(state["Resource"]
            .as_str()
            .unwrap()
            .ends_with(".waitForTaskToken"));
        assert_eq!(state["TimeoutSecondsPath"], path, "{name}");
        assert_eq!(state["Parameters"]["Payload"]["token.$"], "$$.Task.Token");
    }
}

#[test]
fn the_runner_credential_is_only_passed_as_ciphertext() {
    let asl = asl();
    let issue = &states(&asl)["IssueToken"];
    let selected: Vec<&String> = issue["ResultSelector"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        selected,
        ["grant_id.$", "id.$", "jit_config_sealed.$", "name.$"]
    );
}

#[test]
fn service_integrations_take_the_partition_from_the_deployment() {
    let asl = asl();
    for (name, state) in states(&asl) {
        if let Some(resource) = state["Resource"].as_str() {
            assert!(
                resource.starts_with("arn:${Partition}:states:::"),
                "{name}: {resource} hard-codes a partition (aws-cn and aws-us-gov have their own)"
            );
        }
    }
}

#[test]
fn the_attempt_the_asl_builds_is_the_progress_cleanup_reads() {
    let asl = asl();
    let first: Progress =
        serde_json::from_value(states(&asl)["FirstCandidate"]["Result"].clone()).unwrap();
    assert_eq!(first, Progress::FIRST);
    let next = &states(&asl)["NextCandidate"]["Parameters"]["attempt"];
    let from_next: BTreeSet<String> = keys(next.clone())
        .into_iter()
        .map(|k| k.trim_end_matches(".$").to_string())
        .collect();
    assert_eq!(
        from_next,
        keys(serde_json::to_value(Progress::FIRST).unwrap())
    );
    for (key, path) in next.as_object().unwrap() {
        assert_eq!(path, &format!("$.next.{}", key.trim_end_matches(".$")));
    }
}

#[test]
fn a_job_github_says_is_running_goes_on_to_wait_for_its_completion() {
    let asl = asl();
    let first = &states(&asl)["HasCandidate"]["Choices"][0];
    assert_eq!(first["Not"]["Variable"], "$.next.running");
    assert_eq!(first["Not"]["IsNull"], true);
    let pass = &states(&asl)[first["Next"].as_str().unwrap()];
    assert_eq!(
        (&pass["InputPath"], &pass["ResultPath"], &pass["Next"]),
        (
            &Value::from("$.next.running"),
            &Value::from("$.registration"),
            &Value::from("WaitForCompletion")
        )
    );
}

/// Where IssueToken's `Catch` sends an error name.
fn issue_token_catch(asl: &Value, name: &str) -> String {
    states(asl)["IssueToken"]["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["ErrorEquals"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == name)
        })
        .unwrap_or_else(|| panic!("IssueToken catches {name}"))["Next"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_job_cancelled_before_its_attempt_starts_is_finalized_as_cancelled() {
    assert_eq!(
        issue_token_catch(&asl(), "JobCancelled"),
        "FinalizeCancelled"
    );
}

#[test]
fn a_job_github_started_before_its_attempt_is_finalized_as_skipped_and_succeeds() {
    let asl = asl();
    assert_eq!(issue_token_catch(&asl, "JobStarted"), "FinalizeSkipped");
    let finalize = &states(&asl)["FinalizeSkipped"];
    assert_eq!(finalize["Parameters"]["Payload"]["outcome"], "skipped");
    let outcome: Outcome =
        serde_json::from_value(finalize["Parameters"]["Payload"]["outcome"].clone()).unwrap();
    assert_eq!(outcome, Outcome::Skipped);
    assert_eq!(
        states(&asl)[finalize["Next"].as_str().unwrap()]["Type"],
        "Succeed"
    );
}

#[test]
fn quota_failures_move_on_like_capacity_failures() {
    let asl = asl();
    let run_task = &states(&asl)["RunTask"];
    let to_cleanup = run_task["Catch"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Next"] == "CleanupAttempt")
        .unwrap();
    let names: Vec<&str> = to_cleanup["ErrorEquals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(names, ["CapacityUnavailable", "QuotaExceeded"]);
    let choice = &states(&asl)["HasCandidate"];
    let waits = choice["Choices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Next"] == "WaitForCapacity")
        .unwrap();
    assert_eq!(waits["NumericGreaterThan"], 0);
    assert_eq!(
        states(&asl)["WaitForCapacity"]["SecondsPath"],
        "$.next.wait_seconds"
    );
}
