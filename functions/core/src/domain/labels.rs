//! The `runs-on` label grammar: which jobs are ours and what runner they ask for.

use crate::domain::config::{Arch, Config};
use crate::domain::size::{Size, SizeError};
use serde::{Deserialize, Serialize};

/// What a job asks of its runner, once its labels are understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerSpec {
    pub size: Size,
    pub arch: Arch,
    pub spot_allowed: bool,
    pub docker: bool,
    /// Allowlisted security groups the job asked for, on top of the default ones.
    pub extra_security_groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("label `{label}` is not one tasuki serves")]
    UnknownLabel { label: String },
    #[error("label `{label}`: {reason}")]
    BadSize { label: String, reason: SizeError },
    #[error("labels `{first}` and `{second}` ask for different {what}")]
    Conflict {
        first: String,
        second: String,
        what: &'static str,
    },
    #[error("label `{label}`: security group is not in the allowlist")]
    SecurityGroupNotAllowed { label: String },
    #[error("label `{label}`: {reason}")]
    Unplannable { label: String, reason: String },
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
    match parse(labels, config) {
        Ok(spec) => LabelVerdict::Accepted(spec),
        Err(refusal) => LabelVerdict::Refused(refusal),
    }
}

fn parse(labels: &[String], config: &Config) -> Result<RunnerSpec, Refusal> {
    let mut size: Option<(Size, &str)> = None;
    let mut arch: Option<(Arch, &str)> = None;
    let mut spot: Option<(bool, &str)> = None;
    let mut docker = false;
    let mut extra_security_groups = Vec::new();

    for label in labels {
        let lower = label.to_ascii_lowercase();
        match lower.as_str() {
            "tasuki" | "self-hosted" | "linux" => {}
            "x64" => set(&mut arch, Arch::X64, label, "architectures")?,
            "arm64" => set(&mut arch, Arch::Arm64, label, "architectures")?,
            "spot=false" => set(&mut spot, false, label, "Spot settings")?,
            "spot=true" => set(&mut spot, true, label, "Spot settings")?,
            "docker" => docker = true,
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
                            reason,
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
        spot_allowed: spot.is_none_or(|(s, _)| s),
        docker,
        extra_security_groups,
    })
}

/// Records a setting, refusing a second label that asks for a different value.
fn set<'a, T: PartialEq + Copy>(
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
