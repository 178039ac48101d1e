//! The `runs-on` label grammar: which jobs are ours and what runner they ask for.

use crate::domain::config::{Arch, Config};
use crate::domain::size::{Size, SizeError};
use serde::{Deserialize, Serialize};

/// The most labels a runner can be registered with: GitHub's just-in-time runner configuration
/// (`POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`) takes `labels` with "Maximum
/// items: 100" (GitHub's REST API description). The runner gets the job's labels plus
/// `runner.extra_labels`, so a job with more is refused here rather than failing at IssueToken.
pub const MAX_RUNNER_LABELS: usize = 100;

/// The opt-in unique label: `tasuki-run=<id>`, e.g.
/// `tasuki-run=${{ github.run_id }}-${{ github.run_attempt }}-${{ github.job }}-${{ strategy.job-index }}`.
/// GitHub hands a queued job to any idle runner whose labels include all of the job's; a runner
/// tasuki launches is registered with its job's labels, so when every job carries an id of its
/// own, no other job's labels are a subset of that runner's and no other job can take it.
pub const UNIQUE_LABEL_PREFIX: &str = "tasuki-run=";

/// The longest id a unique label may carry. The expressions above give digits, `-` and a job id
/// (letters, digits, `-`, `_`); matrix values may add `.`.
pub const MAX_UNIQUE_ID_LEN: usize = 200;

/// How much of a label a refusal quotes: longer than any label tasuki accepts, short enough that
/// a refusal (stored as the job's reason) stays small whatever a workflow puts in `runs-on`.
const QUOTED_CHARS: usize = 256;

/// A label as a refusal quotes it: whole, or its first [`QUOTED_CHARS`] characters and `…`.
fn quoted(label: &str) -> String {
    match label.char_indices().nth(QUOTED_CHARS) {
        None => label.to_string(),
        Some((cut, _)) => format!("{}…", &label[..cut]),
    }
}

/// Whether `id` is a unique label's id: 1 to [`MAX_UNIQUE_ID_LEN`] ASCII letters, digits, `-`, `_`, `.`.
fn is_unique_id(id: &str) -> bool {
    (1..=MAX_UNIQUE_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What a job asks of its runner, once its labels are understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerSpec {
    pub size: Size,
    pub arch: Arch,
    pub spot_allowed: bool,
    /// `spot=rerun`: when Spot interrupts the job mid-run, GitHub is asked to re-run it (once,
    /// after its workflow run completes), and the re-run avoids Spot.
    #[serde(default)]
    pub rerun_if_interrupted: bool,
    pub docker: bool,
    /// Allowlisted security groups the job asked for, on top of the default ones.
    pub extra_security_groups: Vec<String>,
}

/// Why a job's labels are refused. Each names the label at fault (quoted whole up to 256
/// characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("label `{}` is not one tasuki serves", quoted(.label))]
    UnknownLabel { label: String },
    #[error("label `{}`: {reason}", quoted(.label))]
    BadSize { label: String, reason: SizeError },
    #[error("labels `{}` and `{}` ask for different {what}", quoted(.first), quoted(.second))]
    Conflict {
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("label `{}`: security group is not in the allowlist", quoted(.label))]
    SecurityGroupNotAllowed { label: String },
    #[error("label `{}`: {reason}", quoted(.label))]
    Unplannable { label: String, reason: String },
    #[error(
        "label `{}`: a unique label is `tasuki-run=<id>`, the id 1 to {MAX_UNIQUE_ID_LEN} ASCII \
         letters, digits, `-`, `_` or `.`",
        quoted(.label)
    )]
    BadUniqueLabel { label: String },
    #[error(
        "label `{}`: the runner would get {count} labels (the job's and runner.extra_labels); \
         GitHub registers a runner with at most {MAX_RUNNER_LABELS}",
        quoted(.label)
    )]
    TooManyLabels { label: String, count: usize },
}

/// Whether a job is ours to serve, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelVerdict {
    NotOurs,
    Refused(Refusal),
    Accepted(RunnerSpec),
}

/// A job is ours when one of its labels is `tasuki` or starts with `tasuki-` (any case).
pub fn is_ours(labels: &[String]) -> bool {
    labels.iter().any(|l| {
        let l = l.to_ascii_lowercase();
        l == "tasuki" || l.starts_with("tasuki-")
    })
}

pub fn resolve(labels: &[String], config: &Config) -> LabelVerdict {
    if !is_ours(labels) {
        return LabelVerdict::NotOurs;
    }
    let count = labels.len() + config.runner.extra_labels.len();
    if count > MAX_RUNNER_LABELS {
        // Name the first of the job's labels past the limit.
        let over = MAX_RUNNER_LABELS
            .saturating_sub(config.runner.extra_labels.len())
            .min(labels.len() - 1);
        return LabelVerdict::Refused(Refusal::TooManyLabels {
            label: labels[over].clone(),
            count,
        });
    }
    match parse(labels, config) {
        Ok(spec) => LabelVerdict::Accepted(spec),
        Err(refusal) => LabelVerdict::Refused(refusal),
    }
}

fn parse(labels: &[String], config: &Config) -> Result<RunnerSpec, Refusal> {
    let mut size: Option<(Size, &str)> = None;
    let mut arch: Option<(Arch, &str)> = None;
    let mut spot: Option<(SpotChoice, &str)> = None;
    let mut unique: Option<(String, &str)> = None;
    let mut docker = false;
    let mut extra_security_groups = Vec::new();

    for label in labels {
        let lower = label.to_ascii_lowercase();
        match lower.as_str() {
            "tasuki" | "self-hosted" | "linux" => {}
            "x64" => set(&mut arch, Arch::X64, label, "architectures")?,
            "arm64" => set(&mut arch, Arch::Arm64, label, "architectures")?,
            "spot=false" => set(&mut spot, SpotChoice::Never, label, "Spot settings")?,
            "spot=true" => set(&mut spot, SpotChoice::Allowed, label, "Spot settings")?,
            "spot=rerun" => set(&mut spot, SpotChoice::Rerun, label, "Spot settings")?,
            "docker" => docker = true,
            // Labels match case-insensitively on GitHub: ids that differ only in case are one label.
            run if run.starts_with(UNIQUE_LABEL_PREFIX) => {
                if !is_unique_id(&run[UNIQUE_LABEL_PREFIX.len()..]) {
                    return Err(Refusal::BadUniqueLabel {
                        label: label.clone(),
                    });
                }
                set(&mut unique, run.to_string(), label, "unique labels")?;
            }
            group if group.starts_with("sg-") => {
                let allowed = config
                    .network
                    .security_group_allowlist
                    .iter()
                    .any(|g| g.eq_ignore_ascii_case(group));
                if !allowed {
                    return Err(Refusal::SecurityGroupNotAllowed {
                        label: label.clone(),
                    });
                }
                extra_security_groups.push(group.to_string());
            }
            other => {
                let Some(name) = other.strip_prefix("tasuki-") else {
                    return Err(Refusal::UnknownLabel {
                        label: label.clone(),
                    });
                };
                let wanted = match config.sizes.aliases.get(name) {
                    Some(alias) => *alias,
                    None if name.contains("cpu-") => {
                        name.parse().map_err(|reason| Refusal::BadSize {
                            label: label.clone(),
                            reason: match reason {
                                SizeError::Syntax(text) => SizeError::Syntax(quoted(&text)),
                                other => other,
                            },
                        })?
                    }
                    None => {
                        return Err(Refusal::UnknownLabel {
                            label: label.clone(),
                        })
                    }
                };
                set(&mut size, wanted, label, "sizes")?;
            }
        }
    }

    let size = match size {
        Some((size, _)) => size,
        None => config
            .default_size()
            .expect("validated config has a default size"),
    };
    extra_security_groups.sort();
    extra_security_groups.dedup();
    Ok(RunnerSpec {
        size,
        arch: arch.map_or(Arch::X64, |(a, _)| a),
        spot_allowed: spot.is_none_or(|(s, _)| s != SpotChoice::Never),
        rerun_if_interrupted: spot.is_some_and(|(s, _)| s == SpotChoice::Rerun),
        docker,
        extra_security_groups,
    })
}

/// The `spot=` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SpotChoice {
    Never,
    Allowed,
    Rerun,
}

/// Records a setting, refusing a second label that asks for a different value.
fn set<'a, T: PartialEq>(
    slot: &mut Option<(T, &'a str)>,
    value: T,
    label: &'a str,
    what: &'static str,
) -> Result<(), Refusal> {
    match slot {
        Some((existing, first)) if *existing != value => Err(Refusal::Conflict {
            first: first.to_string(),
            second: label.to_string(),
            what,
        }),
        Some(_) => Ok(()),
        None => {
            *slot = Some((value, label));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use proptest::prelude::*;

    fn labels(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn accepted(list: &[&str]) -> RunnerSpec {
        match resolve(&labels(list), &example()) {
            LabelVerdict::Accepted(spec) => spec,
            other => panic!("{list:?} should be accepted, got {other:?}"),
        }
    }

    fn refused(list: &[&str]) -> String {
        match resolve(&labels(list), &example()) {
            LabelVerdict::Refused(refusal) => refusal.to_string(),
            other => panic!("{list:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn jobs_without_a_tasuki_label_are_not_ours() {
        assert_eq!(
            resolve(&labels(&["self-hosted", "k8s"]), &example()),
            LabelVerdict::NotOurs
        );
        assert_eq!(
            resolve(&labels(&["ubuntu-latest"]), &example()),
            LabelVerdict::NotOurs
        );
        assert_eq!(
            resolve(&labels(&["tasukiX"]), &example()),
            LabelVerdict::NotOurs
        );
    }

    #[test]
    fn a_bare_tasuki_label_gets_the_default_runner() {
        let spec = accepted(&["self-hosted", "tasuki"]);
        assert_eq!(spec.size, Size::new(2, 4).unwrap());
        assert_eq!(spec.arch, Arch::X64);
        assert!(spec.spot_allowed && !spec.docker && spec.extra_security_groups.is_empty());
    }

    #[test]
    fn size_arch_spot_docker_and_groups_are_understood_in_any_case() {
        let spec = accepted(&[
            "Self-Hosted",
            "Linux",
            "TASUKI-4cpu-8GB",
            "ARM64",
            "spot=false",
            "Docker",
            "SG-DB",
        ]);
        assert_eq!(spec.size, Size::new(4, 8).unwrap());
        assert_eq!(spec.arch, Arch::Arm64);
        assert!(!spec.spot_allowed);
        assert!(spec.docker);
        assert_eq!(spec.extra_security_groups, vec!["sg-db".to_string()]);
    }

    #[test]
    fn spot_rerun_allows_spot_and_asks_for_a_rerun_and_conflicts_with_spot_false() {
        let spec = accepted(&["tasuki-2cpu-4gb", "SPOT=rerun"]);
        assert!(spec.spot_allowed && spec.rerun_if_interrupted);
        assert!(!accepted(&["tasuki-2cpu-4gb", "spot=true"]).rerun_if_interrupted);
        assert!(!accepted(&["tasuki-2cpu-4gb"]).rerun_if_interrupted);
        let labels: Vec<String> = ["tasuki-2cpu-4gb", "spot=rerun", "spot=false"]
            .map(String::from)
            .to_vec();
        assert!(matches!(
            resolve(&labels, &example()),
            LabelVerdict::Refused(Refusal::Conflict {
                what: "Spot settings",
                ..
            })
        ));
    }

    #[test]
    fn size_aliases_come_from_config() {
        assert_eq!(accepted(&["tasuki-large"]).size, Size::new(8, 16).unwrap());
    }

    #[test]
    fn refusals_name_the_label() {
        assert!(refused(&["tasuki", "gpu"]).contains("`gpu`"));
        assert!(refused(&["tasuki-3cpu-1gb"]).contains("`tasuki-3cpu-1gb`"));
        assert!(refused(&["tasuki-huge"]).contains("`tasuki-huge`"));
        assert!(refused(&["tasuki", "sg-open"]).contains("`sg-open`"));
        let conflict = refused(&["tasuki-small", "tasuki-large"]);
        assert!(conflict.contains("`tasuki-small`") && conflict.contains("`tasuki-large`"));
        assert!(refused(&["tasuki", "x64", "arm64"]).contains("`arm64`"));
    }

    #[test]
    fn repeating_the_same_setting_is_not_a_conflict() {
        assert_eq!(
            accepted(&["tasuki-small", "tasuki-2cpu-4gb"]).size,
            Size::new(2, 4).unwrap()
        );
    }

    #[test]
    fn a_unique_label_is_accepted_in_any_case_and_changes_nothing_else() {
        let plain = ["self-hosted", "tasuki-4cpu-8gb", "arm64", "spot=false"];
        for unique in [
            "tasuki-run=2202229078-1-build-0",
            "TASUKI-RUN=2202229078-1-Build_all-3",
            "tasuki-run=1.2.3",
            "tasuki-run=x",
            // Looks like a size, but it is an id: the size is the one asked for elsewhere.
            "tasuki-run=8cpu-16gb",
        ] {
            let mut with = plain.to_vec();
            with.insert(1, unique);
            assert_eq!(accepted(&with), accepted(&plain), "{unique}");
        }
        assert_eq!(
            accepted(&["tasuki-run=7-1-test-0"]).size,
            Size::new(2, 4).unwrap(),
            "alone it is a tasuki label with the default size"
        );
        let longest = format!("tasuki-run={}", "a".repeat(MAX_UNIQUE_ID_LEN));
        accepted(&["tasuki", &longest]);
    }

    #[test]
    fn a_malformed_unique_label_is_refused_by_name() {
        let too_long = format!("tasuki-run={}", "a".repeat(MAX_UNIQUE_ID_LEN + 1));
        for bad in [
            "tasuki-run=",
            "tasuki-run=${{ github.run_id }}",
            "tasuki-run=12 34",
            "tasuki-run=a=b",
            "tasuki-run=a,b",
            "tasuki-run=a/b",
            "tasuki-run=jöb",
            "tasuki-run=1\u{200b}",
            too_long.as_str(),
        ] {
            let reason = refused(&["self-hosted", "tasuki", bad]);
            assert!(reason.contains(&format!("`{bad}`")), "{reason}");
            assert!(reason.contains("`tasuki-run=<id>`"), "{reason}");
        }
        // Without `=` it is not a unique label but an unknown one.
        assert!(refused(&["tasuki-run"]).contains("is not one tasuki serves"));
    }

    #[test]
    fn two_different_unique_labels_conflict_and_both_are_named() {
        let reason = refused(&["tasuki", "tasuki-run=1-1-a-0", "tasuki-run=1-1-b-0"]);
        assert_eq!(
            reason,
            "labels `tasuki-run=1-1-a-0` and `tasuki-run=1-1-b-0` ask for different unique labels"
        );
        // GitHub's labels are case-insensitive: the same id in another case is the same label.
        accepted(&["tasuki", "tasuki-run=1-1-Build-0", "TASUKI-RUN=1-1-build-0"]);
        accepted(&["tasuki", "tasuki-run=9", "tasuki-run=9"]);
    }

    #[test]
    fn a_runner_gets_at_most_100_labels_counting_the_extra_ones() {
        let mut list = vec!["tasuki"; MAX_RUNNER_LABELS];
        accepted(&list);
        list.push("linux");
        assert_eq!(
            refused(&list),
            "label `linux`: the runner would get 101 labels (the job's and runner.extra_labels); \
             GitHub registers a runner with at most 100"
        );
        let mut config = example();
        config.runner.extra_labels = vec!["tasuki-managed".into(), "team-a".into()];
        let mut list = labels(&["tasuki"; MAX_RUNNER_LABELS - 2]);
        assert!(matches!(resolve(&list, &config), LabelVerdict::Accepted(_)));
        list.push("x64".into());
        let LabelVerdict::Refused(refusal) = resolve(&list, &config) else {
            panic!()
        };
        assert_eq!(
            refusal,
            Refusal::TooManyLabels {
                label: "x64".into(),
                count: 101
            }
        );
        // Jobs that are not ours are not ours, however many labels they have.
        assert_eq!(
            resolve(&labels(&["self-hosted"; 300]), &example()),
            LabelVerdict::NotOurs
        );
    }

    #[test]
    fn a_refusal_quotes_at_most_256_characters_of_a_label() {
        let long = format!("tasuki-{}", "é".repeat(10_000));
        let reason = refused(&[long.as_str()]);
        let shown: String = long.chars().take(256).collect();
        assert_eq!(reason, format!("label `{shown}…` is not one tasuki serves"));
        let long_size = format!("tasuki-{}cpu-4gb", "9".repeat(10_000));
        assert!(refused(&[long_size.as_str()]).len() < 1_000);
        let short = "tasuki-".to_string() + &"x".repeat(249);
        assert!(refused(&[short.as_str()]).contains(&format!("`{short}`")));
    }

    proptest! {
        #[test]
        fn labels_without_tasuki_are_never_ours(list in prop::collection::vec("[a-z0-9=-]{0,12}", 0..6)) {
            prop_assume!(!list.iter().any(|l| l == "tasuki" || l.starts_with("tasuki-")));
            prop_assert_eq!(resolve(&list, &example()), LabelVerdict::NotOurs);
        }

        #[test]
        fn a_refusal_always_names_one_of_the_jobs_labels(list in prop::collection::vec("(tasuki-)?[a-z0-9=-]{0,12}", 1..6)) {
            let mut list = list;
            list.push("tasuki".into());
            if let LabelVerdict::Refused(refusal) = resolve(&list, &example()) {
                let text = refusal.to_string();
                prop_assert!(list.iter().any(|l| text.contains(&format!("`{l}`"))), "{}", text);
            }
        }

        #[test]
        fn case_does_not_change_the_verdict(list in prop::collection::vec("(tasuki-|sg-)?[a-z0-9=-]{0,10}", 1..5)) {
            let upper: Vec<String> = list.iter().map(|l| l.to_ascii_uppercase()).collect();
            let lower = resolve(&list, &example());
            let shouted = resolve(&upper, &example());
            prop_assert_eq!(std::mem::discriminant(&lower), std::mem::discriminant(&shouted));
            if let (LabelVerdict::Accepted(a), LabelVerdict::Accepted(b)) = (lower, shouted) {
                prop_assert_eq!(a, b);
            }
        }
    }
}
