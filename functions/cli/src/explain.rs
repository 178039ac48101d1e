//! `tasuki explain <labels…>`: what the Lambdas' config makes of a `runs-on` label set — the
//! runner spec and the launch candidates in the order they would be tried, or why the labels are
//! refused — before any job is queued, launching nothing.

use serde::Serialize;
use tasuki_core::domain::config::Config;
use tasuki_core::domain::labels::{self, LabelVerdict, RunnerSpec};
use tasuki_core::domain::plan;

#[derive(Debug, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Explained {
    /// No `tasuki` label: the webhook ignores the job.
    NotOurs,
    /// ResolveLabels would record this reason on the job, and launch nothing.
    Refused { reason: String },
    /// The spec, and the candidates as `<capacity>/<az>/<size>/<arch>`, first tried first.
    Accepted {
        spec: RunnerSpec,
        candidates: Vec<String>,
    },
}

impl Explained {
    pub fn accepted(&self) -> bool {
        matches!(self, Explained::Accepted { .. })
    }
}

pub fn explain(labels: &[String], config: &Config) -> Explained {
    match labels::resolve(labels, config) {
        LabelVerdict::NotOurs => Explained::NotOurs,
        LabelVerdict::Refused(refusal) => Explained::Refused {
            reason: refusal.to_string(),
        },
        LabelVerdict::Accepted(spec) => match plan::plan(&spec, config) {
            Ok(candidates) => Explained::Accepted {
                candidates: candidates.iter().map(ToString::to_string).collect(),
                spec,
            },
            Err(refusal) => Explained::Refused {
                reason: refusal.to_string(),
            },
        },
    }
}

pub fn render(explained: &Explained) -> String {
    match explained {
        Explained::NotOurs => {
            "not tasuki's: no label is `tasuki` or starts with `tasuki-`; the webhook ignores it\n"
                .into()
        }
        Explained::Refused { reason } => format!("refused: {reason}\n"),
        Explained::Accepted { spec, candidates } => {
            let mut out = format!(
                "runner: {} {}{}{}{}\n",
                spec.size,
                spec.arch.as_str(),
                if spec.spot_allowed {
                    ", Spot allowed"
                } else {
                    ", no Spot"
                },
                if spec.rerun_if_interrupted {
                    ", re-run without Spot if Spot interrupts it"
                } else {
                    ""
                },
                if spec.docker { ", Docker" } else { "" },
            );
            if !spec.extra_security_groups.is_empty() {
                out += &format!(
                    "extra security groups: {}\n",
                    spec.extra_security_groups.join(", ")
                );
            }
            out += &format!("{} launch candidate(s), in order:\n", candidates.len());
            for (i, candidate) in candidates.iter().enumerate() {
                out += &format!("  {:>2}. {candidate}\n", i + 1);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../../../README.md");

    /// The configuration README's "Configuration" section shows.
    fn readme_config() -> serde_json::Value {
        let section = &README[README
            .find("## Configuration")
            .expect("a Configuration section")..];
        let start = section.find("```json\n").expect("a json block") + "```json\n".len();
        let end = start + section[start..].find("```").expect("the block ends");
        serde_json::from_str(&section[start..end]).expect("README's config is JSON")
    }

    fn parsed(value: &serde_json::Value) -> Config {
        Config::from_json(&value.to_string()).expect("README's config is valid")
    }

    /// The `[a, b]` label sets in README's text between `from` and `to`.
    fn label_sets(from: &str, to: &str) -> Vec<Vec<String>> {
        let text = &README[README.find(from).expect(from)..];
        let text = &text[..text.find(to).expect(to)];
        text.split('[')
            .skip(1)
            .filter_map(|part| part.split_once(']'))
            .map(|(inside, _)| inside.split(',').map(|l| l.trim().to_string()).collect())
            .collect()
    }

    #[test]
    fn every_example_readme_gives_is_served_and_every_refusal_it_gives_is_refused() {
        let value = readme_config();
        let config = parsed(&value);
        let examples = label_sets("Examples: `[", "Refused, with the reason");
        assert_eq!(examples.len(), 3, "{examples:?}");
        for labels in &examples {
            let explained = explain(labels, &config);
            assert!(explained.accepted(), "{labels:?}: {explained:?}");
            let text = render(&explained);
            assert!(
                text.contains("launch candidate(s), in order:\n   1. "),
                "{text}"
            );
        }
        let refused = label_sets("Refused, with the reason", "more labels than");
        assert_eq!(refused.len(), 5, "{refused:?}");
        // README's `[tasuki, docker]` is refused "with no EC2 capacity configured".
        let mut without_ec2 = value.clone();
        without_ec2["capacity_order"] = serde_json::json!(["fargate-spot", "fargate"]);
        without_ec2["ecs"]
            .as_object_mut()
            .unwrap()
            .remove("ec2_capacity_providers");
        let without_ec2 = parsed(&without_ec2);
        for labels in &refused {
            let config = if labels == &["tasuki", "docker"] {
                &without_ec2
            } else {
                &config
            };
            let explained = explain(labels, config);
            let Explained::Refused { reason } = &explained else {
                panic!("{labels:?} must be refused: {explained:?}");
            };
            assert_eq!(render(&explained), format!("refused: {reason}\n"));
        }
        let gpu = explain(&["tasuki".into(), "gpu".into()], &config);
        assert!(
            matches!(gpu, Explained::Refused { reason } if reason == "label `gpu` is not one tasuki serves")
        );
        // "more labels than a runner can be registered with (100, counting runner.extra_labels)"
        let many: Vec<String> = std::iter::once("tasuki".to_string())
            .chain((0..99).map(|i| format!("label-{i}")))
            .collect();
        assert!(matches!(explain(&many, &config), Explained::Refused { .. }));
    }

    #[test]
    fn the_default_size_goes_spot_first_through_each_az_then_on_demand_then_ec2() {
        let config = parsed(&readme_config());
        let Explained::Accepted { spec, candidates } =
            explain(&["self-hosted".into(), "tasuki".into()], &config)
        else {
            panic!("served");
        };
        assert!(spec.spot_allowed && !spec.rerun_if_interrupted);
        assert_eq!(
            candidates,
            [
                "fargate-spot/us-east-1a/2cpu-4gb/x64",
                "fargate-spot/us-east-1b/2cpu-4gb/x64",
                "fargate/us-east-1a/2cpu-4gb/x64",
                "fargate/us-east-1b/2cpu-4gb/x64",
                "ec2/us-east-1a/2cpu-4gb/x64",
                "ec2/us-east-1b/2cpu-4gb/x64",
            ]
        );
        let no_spot = explain(&["tasuki".into(), "spot=false".into()], &config);
        assert!(render(&no_spot).contains("2cpu-4gb x64, no Spot\n"));
        assert!(!render(&no_spot).contains("fargate-spot"));
        assert!(matches!(
            explain(&["self-hosted".into()], &config),
            Explained::NotOurs
        ));
    }
}
