//! The launch plan: the ordered candidates a job's runner may be started on.

use crate::domain::config::{Arch, Capacity, Config};
use crate::domain::labels::{Refusal, RunnerSpec};
use crate::domain::size::Size;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The ECS capacity a candidate asks for: Fargate Spot and EC2 through their capacity provider,
/// on-demand Fargate as RunTask's plain `launchType: FARGATE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityProvider {
    FargateSpot,
    Fargate,
    /// An EC2 Auto Scaling group capacity provider, by name.
    Ec2(String),
}

impl CapacityProvider {
    pub fn capacity(&self) -> Capacity {
        match self {
            CapacityProvider::FargateSpot => Capacity::FargateSpot,
            CapacityProvider::Fargate => Capacity::Fargate,
            CapacityProvider::Ec2(_) => Capacity::Ec2,
        }
    }

    /// The provider's name in ECS.
    pub fn name(&self) -> &str {
        match self {
            CapacityProvider::FargateSpot => "FARGATE_SPOT",
            CapacityProvider::Fargate => "FARGATE",
            CapacityProvider::Ec2(name) => name,
        }
    }
}

impl fmt::Display for CapacityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One place to try: capacity × AZ (subnet) × size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub provider: CapacityProvider,
    pub az: String,
    pub subnet: String,
    pub size: Size,
    pub arch: Arch,
    pub docker: bool,
    pub task_definition: String,
    pub security_groups: Vec<String>,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.provider.capacity().as_str(),
            self.az,
            self.size,
            self.arch.as_str()
        )
    }
}

/// Default order: every AZ of the first capacity, then every AZ of the next, as configured.
pub fn plan(spec: &RunnerSpec, config: &Config) -> Result<Vec<Candidate>, Refusal> {
    let mut security_groups = config.network.security_groups.clone();
    security_groups.extend(spec.extra_security_groups.iter().cloned());
    security_groups.dedup();

    let mut candidates = Vec::new();
    // Every candidate of the size asked for comes first; then those of its fallback sizes.
    let sizes = std::iter::once(spec.size).chain(config.fallback_sizes(spec.size));
    for size in sizes {
        plan_size(spec, size, config, &security_groups, &mut candidates);
    }
    if candidates.is_empty() {
        return Err(unplannable(spec));
    }
    Ok(candidates)
}

/// Every capacity × AZ candidate of one size, in the configured order.
fn plan_size(
    spec: &RunnerSpec,
    size: Size,
    config: &Config,
    security_groups: &[String],
    candidates: &mut Vec<Candidate>,
) {
    for &capacity in &config.capacity_order {
        if capacity.is_spot() && !spec.spot_allowed {
            continue;
        }
        let provider = match capacity {
            Capacity::FargateSpot => CapacityProvider::FargateSpot,
            Capacity::Fargate => CapacityProvider::Fargate,
            Capacity::Ec2 => match config.ecs.ec2_capacity_providers.get(&spec.arch) {
                Some(name) => CapacityProvider::Ec2(name.clone()),
                None => continue,
            },
        };
        // Fargate cannot run the privileged dockerd sidecar.
        if spec.docker && capacity != Capacity::Ec2 {
            continue;
        }
        let Some(task_definition) = config
            .ecs
            .task_definitions
            .for_runner(spec.arch, spec.docker)
        else {
            continue;
        };
        for (az, subnet) in &config.network.subnets {
            candidates.push(Candidate {
                provider: provider.clone(),
                az: az.clone(),
                subnet: subnet.clone(),
                size,
                arch: spec.arch,
                docker: spec.docker,
                task_definition: task_definition.to_string(),
                security_groups: security_groups.to_vec(),
            });
        }
    }
}

fn unplannable(spec: &RunnerSpec) -> Refusal {
    let (label, reason) = if spec.docker {
        (
            "docker",
            format!(
                "needs EC2 capacity with a {} docker task definition, which is not configured",
                spec.arch.as_str()
            ),
        )
    } else if !spec.spot_allowed {
        (
            "spot=false",
            "no on-demand capacity is configured".to_string(),
        )
    } else {
        (
            spec.arch.as_str(),
            "no configured capacity serves this architecture".to_string(),
        )
    };
    Refusal::Unplannable {
        label: label.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use proptest::prelude::*;

    fn spec() -> RunnerSpec {
        RunnerSpec {
            size: Size::new(2, 4).unwrap(),
            arch: Arch::X64,
            spot_allowed: true,
            rerun_if_interrupted: false,
            docker: false,
            extra_security_groups: vec![],
        }
    }

    fn names(candidates: &[Candidate]) -> Vec<String> {
        candidates.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn fallback_sizes_come_after_every_candidate_of_the_size_asked_for() {
        let mut config = example();
        config.sizes.fallback = [("small".to_string(), vec!["large".to_string()])].into();
        let candidates = plan(&spec(), &config).unwrap();
        let own = plan(&spec(), &example()).unwrap();
        assert_eq!(candidates.len(), 2 * own.len());
        assert_eq!(candidates[..own.len()], own[..]);
        assert!(candidates[own.len()..]
            .iter()
            .all(|c| c.size == Size::new(8, 16).unwrap()));
        assert_eq!(
            candidates[own.len()].to_string(),
            "fargate-spot/us-east-1a/8cpu-16gb/x64"
        );
    }

    #[test]
    fn spot_in_each_az_then_on_demand_then_ec2() {
        let candidates = plan(&spec(), &example()).unwrap();
        assert_eq!(
            names(&candidates),
            [
                "fargate-spot/us-east-1a/2cpu-4gb/x64",
                "fargate-spot/us-east-1b/2cpu-4gb/x64",
                "fargate/us-east-1a/2cpu-4gb/x64",
                "fargate/us-east-1b/2cpu-4gb/x64",
                "ec2/us-east-1a/2cpu-4gb/x64",
                "ec2/us-east-1b/2cpu-4gb/x64",
            ]
        );
        assert_eq!(candidates[0].provider, CapacityProvider::FargateSpot);
        assert_eq!(candidates[0].subnet, "subnet-a");
        assert_eq!(candidates[4].provider.name(), "cp-ec2-x64");
        assert_eq!(candidates[0].task_definition, "td-x64");
    }

    #[test]
    fn spot_false_leaves_spot_out() {
        let spec = RunnerSpec {
            spot_allowed: false,
            rerun_if_interrupted: false,
            ..spec()
        };
        let candidates = plan(&spec, &example()).unwrap();
        assert!(candidates
            .iter()
            .all(|c| c.provider != CapacityProvider::FargateSpot));
        assert_eq!(candidates.len(), 4);
    }

    #[test]
    fn docker_runs_only_on_ec2_with_its_task_definition() {
        let spec = RunnerSpec {
            docker: true,
            ..spec()
        };
        let candidates = plan(&spec, &example()).unwrap();
        assert_eq!(
            names(&candidates),
            ["ec2/us-east-1a/2cpu-4gb/x64", "ec2/us-east-1b/2cpu-4gb/x64"]
        );
        assert!(candidates
            .iter()
            .all(|c| c.task_definition == "td-x64-docker"));
    }

    #[test]
    fn docker_without_ec2_for_the_arch_is_refused_naming_docker() {
        let spec = RunnerSpec {
            docker: true,
            arch: Arch::Arm64,
            ..spec()
        };
        let refusal = plan(&spec, &example()).unwrap_err();
        assert!(refusal.to_string().contains("`docker`"), "{refusal}");
    }

    #[test]
    fn spot_false_with_only_spot_capacity_is_refused() {
        let mut config = example();
        config.capacity_order = vec![Capacity::FargateSpot];
        let spec = RunnerSpec {
            spot_allowed: false,
            rerun_if_interrupted: false,
            ..spec()
        };
        assert!(plan(&spec, &config)
            .unwrap_err()
            .to_string()
            .contains("`spot=false`"));
    }

    #[test]
    fn allowlisted_groups_join_the_default_ones() {
        let spec = RunnerSpec {
            extra_security_groups: vec!["sg-db".into()],
            ..spec()
        };
        let candidates = plan(&spec, &example()).unwrap();
        assert_eq!(candidates[0].security_groups, ["sg-default", "sg-db"]);
    }

    proptest! {
        #[test]
        fn every_candidate_respects_the_spec(spot in any::<bool>(), docker in any::<bool>(), arm in any::<bool>()) {
            let spec = RunnerSpec {
                spot_allowed: spot,
                rerun_if_interrupted: false,
                docker,
                arch: if arm { Arch::Arm64 } else { Arch::X64 },
                ..spec()
            };
            if let Ok(candidates) = plan(&spec, &example()) {
                prop_assert!(!candidates.is_empty());
                for c in &candidates {
                    prop_assert!(spot || !c.provider.capacity().is_spot());
                    prop_assert!(!docker || c.provider.capacity() == Capacity::Ec2);
                    prop_assert_eq!(c.arch, spec.arch);
                    prop_assert_eq!(c.size, spec.size);
                }
                // Capacities appear in config order, never interleaved.
                let order: Vec<_> = candidates.iter().map(|c| c.provider.capacity()).collect();
                let mut sorted = order.clone();
                sorted.sort_by_key(|c| example().capacity_order.iter().position(|o| o == c));
                prop_assert_eq!(order, sorted);
            }
        }
    }
}
