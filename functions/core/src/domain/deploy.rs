//! The deployment file users write (`tasuki.config.json`). Its JSON Schema is generated from this
//! type and checked in at `infra/tasuki.config.schema.json`; `cdk synth` validates against it.

use crate::domain::config::{
    check_access, check_api_url, check_capacity_order, check_secret_id, check_security_groups,
    check_sizes, check_timeouts, invalid, AccessConfig, Arch, Capacity, ConfigError, SizesConfig,
    Timeouts,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "tasuki deployment config")]
pub struct DeployConfig {
    /// Editors' hint: `./tasuki.config.schema.json`.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub github: DeployGitHub,
    pub access: AccessConfig,
    pub runner: DeployRunner,
    pub sizes: SizesConfig,
    /// Launch candidates try capacities in this order, each in every AZ.
    #[serde(default = "default_capacity_order")]
    #[schemars(length(min = 1))]
    pub capacity_order: Vec<Capacity>,
    pub network: DeployNetwork,
    /// EC2 capacity (needed by `docker` jobs); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2: Option<Ec2Capacity>,
    pub timeouts: Timeouts,
    /// Days a finished job's lifecycle stays in DynamoDB (TTL).
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1))]
    pub retention_days: u32,
    /// Days CloudWatch keeps Lambda, state machine and runner logs (a period CloudWatch offers).
    #[serde(default = "default_log_retention_days")]
    #[schemars(range(min = 1))]
    pub log_retention_days: u32,
    /// CloudWatch alarms and who they tell (an SNS topic; optionally an email subscription).
    #[serde(default)]
    pub alarms: DeployAlarms,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployGitHub {
    #[schemars(range(min = 1))]
    pub app_id: u64,
    /// `https://api.github.com`, or GitHub Enterprise Server's `https://<host>/api/v3`.
    #[serde(default = "default_api_url")]
    #[schemars(regex(pattern = r"^https://"))]
    pub api_url: String,
    /// Secrets Manager secret holding the GitHub App's private key (PEM).
    #[schemars(length(min = 1))]
    pub private_key_secret_name: String,
    /// Secrets Manager secret holding the webhook secret.
    #[schemars(length(min = 1))]
    pub webhook_secret_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRunner {
    #[serde(default = "default_group_id")]
    #[schemars(range(min = 1))]
    pub group_id: u64,
    /// Labels every runner gets besides the job's own.
    #[serde(default)]
    pub extra_labels: Vec<String>,
    /// The runner image (see runner-image/README.md).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Seconds a running job gets to finish after its task is told to stop (a Fargate Spot
    /// interruption gives two minutes; Fargate's `stopTimeout` is at most 120 s).
    #[serde(default = "default_stop_grace_seconds")]
    #[schemars(range(min = 1, max = 110))]
    pub stop_grace_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployNetwork {
    pub vpc: VpcChoice,
    /// Security groups a job may add with an `sg-…` label.
    #[serde(default)]
    #[schemars(inner(regex(pattern = r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")))]
    pub security_group_allowlist: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VpcChoice {
    /// A new VPC with private subnets in `max_azs` zones. The stack is environment-agnostic, so CDK
    /// sees only two zones: above 2, name them in `availability_zones`.
    Create {
        #[schemars(range(min = 1, max = 6))]
        max_azs: u8,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[schemars(inner(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")))]
        availability_zones: Vec<String>,
    },
    /// An existing VPC: one private subnet per AZ (with egress to GitHub).
    Import {
        #[schemars(regex(pattern = r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$"))]
        vpc_id: String,
        #[schemars(length(min = 1))]
        subnets: BTreeMap<String, String>,
        /// The VPC has an S3 gateway endpoint (image layers from ECR come from S3); without one,
        /// every image pull through a NAT gateway pays its data processing charge.
        #[serde(default)]
        s3_gateway_endpoint: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ec2Capacity {
    /// Instance types of the Spot ASG per architecture.
    #[schemars(length(min = 1))]
    pub instance_types: BTreeMap<Arch, Vec<String>>,
    #[schemars(range(min = 1))]
    pub max_instances: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployAlarms {
    /// Subscribed to the alarm topic by email (SNS asks the address to confirm the subscription);
    /// no subscription when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))]
    pub email: Option<String>,
    /// Alarm when the oldest job still waiting for a runner has waited longer than this.
    #[serde(default = "default_queued_minutes")]
    #[schemars(range(min = 1))]
    pub queued_minutes: u32,
    /// Alarm when capacity fallbacks exceed this fraction of the jobs finished (over 15 minutes);
    /// more than 0, at most 1.
    #[serde(default = "default_fallback_rate")]
    #[schemars(range(max = 1), extend("exclusiveMinimum" = 0))]
    pub fallback_rate: f64,
}

impl Default for DeployAlarms {
    fn default() -> Self {
        Self {
            email: None,
            queued_minutes: default_queued_minutes(),
            fallback_rate: default_fallback_rate(),
        }
    }
}

fn default_queued_minutes() -> u32 {
    10
}

fn default_fallback_rate() -> f64 {
    0.25
}

/// `local@domain.tld`: one `@`, no whitespace, a dot in the domain (what SNS's email protocol needs;
/// SNS itself confirms the address exists).
fn looks_like_email(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    !local.is_empty()
        && !address.chars().any(char::is_whitespace)
        && !domain.contains('@')
        && labels.len() >= 2
        && labels.iter().all(|l| !l.is_empty())
}

/// The retention periods CloudWatch Logs accepts.
const LOG_RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

fn default_capacity_order() -> Vec<Capacity> {
    vec![Capacity::FargateSpot, Capacity::Fargate]
}

fn default_retention_days() -> u32 {
    90
}

fn default_log_retention_days() -> u32 {
    30
}

fn default_api_url() -> String {
    "https://api.github.com".into()
}

fn default_group_id() -> u64 {
    1
}

fn default_stop_grace_seconds() -> u32 {
    100
}

impl DeployConfig {
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        let config: DeployConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| invalid(&e.path().to_string(), e.into_inner().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_api_url("github.api_url", &self.github.api_url, false)?;
        check_secret_id(
            "github.private_key_secret_name",
            &self.github.private_key_secret_name,
        )?;
        check_secret_id(
            "github.webhook_secret_name",
            &self.github.webhook_secret_name,
        )?;
        check_access(&self.access)?;
        check_sizes(&self.sizes)?;
        check_capacity_order(&self.capacity_order)?;
        if self.capacity_order.contains(&Capacity::Ec2) && self.ec2.is_none() {
            return Err(invalid(
                "ec2",
                "capacity_order lists ec2, but no ec2 capacity is configured",
            ));
        }
        if let Some(ec2) = &self.ec2 {
            if ec2.instance_types.is_empty() || ec2.instance_types.values().any(Vec::is_empty) {
                return Err(invalid(
                    "ec2.instance_types",
                    "name at least one instance type per architecture",
                ));
            }
        }
        match &self.network.vpc {
            VpcChoice::Create { max_azs, .. } if !(1..=6).contains(max_azs) => {
                return Err(invalid("network.vpc.create.max_azs", "must be 1 to 6"));
            }
            VpcChoice::Create {
                max_azs,
                availability_zones,
            } => {
                if availability_zones.is_empty() && *max_azs > 2 {
                    return Err(invalid(
                        "network.vpc.create.availability_zones",
                        format!("max_azs {max_azs} needs the zones named: the stack is environment-agnostic, so CDK sees only 2 zones and would silently create 2"),
                    ));
                }
                let distinct: std::collections::BTreeSet<&String> =
                    availability_zones.iter().collect();
                if distinct.len() != availability_zones.len() {
                    return Err(invalid(
                        "network.vpc.create.availability_zones",
                        "names a zone twice",
                    ));
                }
                if !availability_zones.is_empty()
                    && availability_zones.len() != usize::from(*max_azs)
                {
                    return Err(invalid(
                        "network.vpc.create.availability_zones",
                        format!(
                            "names {} zones, but max_azs is {max_azs}",
                            availability_zones.len()
                        ),
                    ));
                }
            }
            VpcChoice::Import {
                vpc_id, subnets, ..
            } => {
                if !vpc_id.starts_with("vpc-") {
                    return Err(invalid("network.vpc.import.vpc_id", "is not a VPC id"));
                }
                if subnets.is_empty() {
                    return Err(invalid(
                        "network.vpc.import.subnets",
                        "must map at least one AZ to a subnet",
                    ));
                }
                if let Some((az, _)) = subnets.iter().find(|(_, s)| !s.starts_with("subnet-")) {
                    return Err(invalid(
                        &format!("network.vpc.import.subnets.{az}"),
                        "is not a subnet id",
                    ));
                }
            }
        }
        check_security_groups(
            "network.security_group_allowlist",
            &self.network.security_group_allowlist,
        )?;
        check_timeouts(self.timeouts)?;
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            return Err(invalid(
                "log_retention_days",
                format!("CloudWatch keeps logs for one of {LOG_RETENTION_DAYS:?} days"),
            ));
        }
        if !(1..=110).contains(&self.runner.stop_grace_seconds) {
            return Err(invalid(
                "runner.stop_grace_seconds",
                "must be 1 to 110 (Fargate stops a container at most 120 s after SIGTERM)",
            ));
        }
        if self.runner.image.trim().is_empty() {
            return Err(invalid("runner.image", "must name the runner image"));
        }
        check_alarms(&self.alarms)
    }

    /// The JSON Schema of this file, as checked in at `infra/tasuki.config.schema.json`.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(DeployConfig);
        serde_json::to_string_pretty(&schema).expect("a schema serializes") + "\n"
    }
}

fn check_alarms(alarms: &DeployAlarms) -> Result<(), ConfigError> {
    if let Some(email) = &alarms.email {
        if !looks_like_email(email) {
            return Err(invalid(
                "alarms.email",
                format!("`{email}` is not an email address (name@example.com)"),
            ));
        }
    }
    if alarms.queued_minutes < 1 {
        return Err(invalid("alarms.queued_minutes", "must be at least 1"));
    }
    if !(alarms.fallback_rate > 0.0 && alarms.fallback_rate <= 1.0) {
        return Err(invalid(
            "alarms.fallback_rate",
            "must be more than 0 and at most 1 (a fraction of the jobs finished)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/tasuki.config.example.json"
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect(path)).unwrap()
    }

    fn field_of(value: serde_json::Value) -> String {
        match DeployConfig::from_json(&value.to_string()) {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_checked_in_schema_is_generated_from_this_type() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/tasuki.config.schema.json"
        );
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == DeployConfig::json_schema(),
            "{path} is stale: run `make schema`"
        );
    }

    #[test]
    fn the_example_deploy_config_is_valid() {
        let config = DeployConfig::from_json(&example().to_string()).unwrap();
        assert_eq!(config.github.api_url, "https://api.github.com");
        assert!(config.capacity_order.contains(&Capacity::FargateSpot));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut v = example();
        v["timeouts"]["registration_seconds"] = 0.into();
        assert_eq!(field_of(v), "timeouts");
        let mut v = example();
        v["capacity_order"] = serde_json::json!(["fargate", "lambda"]);
        assert_eq!(field_of(v), "capacity_order[1]");
        let mut v = example();
        v["network"]["vpc"] =
            serde_json::json!({"import": {"vpc_id": "vpc-1", "subnets": {"a": "sg-1"}}});
        assert_eq!(field_of(v), "network.vpc.import.subnets.a");
        let mut v = example();
        v["capacity_order"] = serde_json::json!(["ec2"]);
        v.as_object_mut().unwrap().remove("ec2");
        assert_eq!(field_of(v), "ec2");
        let mut v = example();
        v["github"]["api_url"] = "http://ghe.internal".into();
        assert_eq!(field_of(v), "github.api_url");
        let mut v = example();
        v["sizes"]["aliases"]["small"] = "2cpu-64gb".into();
        assert_eq!(field_of(v), "sizes.aliases.small");
        let mut v = example();
        v["log_retention_days"] = 31.into();
        assert_eq!(field_of(v), "log_retention_days");
        let mut v = example();
        v["runner"]["stop_grace_seconds"] = 120.into();
        assert_eq!(field_of(v), "runner.stop_grace_seconds");
    }

    #[test]
    fn more_than_two_zones_must_be_named_because_the_stack_is_environment_agnostic() {
        let mut v = example();
        v["network"]["vpc"] = serde_json::json!({"create": {"max_azs": 3}});
        assert_eq!(field_of(v), "network.vpc.create.availability_zones");
        let mut v = example();
        v["network"]["vpc"] = serde_json::json!({"create": {"max_azs": 3,
            "availability_zones": ["us-east-1a", "us-east-1b", "us-east-1c"]}});
        assert!(DeployConfig::from_json(&v.to_string()).is_ok());
        let mut v = example();
        v["network"]["vpc"] = serde_json::json!({"create": {"max_azs": 2,
            "availability_zones": ["us-east-1a"]}});
        assert_eq!(field_of(v), "network.vpc.create.availability_zones");
        let mut v = example();
        v["network"]["vpc"] = serde_json::json!({"create": {"max_azs": 2,
            "availability_zones": ["us-east-1a", "us-east-1a"]}});
        assert_eq!(field_of(v), "network.vpc.create.availability_zones");
    }

    #[test]
    fn a_partial_secret_arn_in_the_deploy_file_is_refused() {
        let mut v = example();
        v["github"]["webhook_secret_name"] =
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/hook".into();
        assert_eq!(field_of(v), "github.webhook_secret_name");
    }
    #[test]
    fn without_an_alarms_section_alarms_wait_ten_minutes_and_a_quarter_of_jobs_falling_back() {
        let mut v = example();
        v.as_object_mut().unwrap().remove("alarms");
        let config = DeployConfig::from_json(&v.to_string()).unwrap();
        assert_eq!(config.alarms, DeployAlarms::default());
        assert_eq!(config.alarms.email, None);
        assert_eq!(config.alarms.queued_minutes, 10);
        assert_eq!(config.alarms.fallback_rate, 0.25);
    }

    #[test]
    fn an_alarms_section_may_set_only_some_of_its_fields() {
        let mut v = example();
        v["alarms"] = serde_json::json!({"email": "ops@example.com"});
        let config = DeployConfig::from_json(&v.to_string()).unwrap();
        assert_eq!(config.alarms.email.as_deref(), Some("ops@example.com"));
        assert_eq!(config.alarms.queued_minutes, 10);
        let mut v = example();
        v["alarms"] = serde_json::json!({"queued_minutes": 1, "fallback_rate": 1});
        let config = DeployConfig::from_json(&v.to_string()).unwrap();
        assert_eq!(
            (config.alarms.queued_minutes, config.alarms.fallback_rate),
            (1, 1.0)
        );
    }

    #[test]
    fn an_alarm_email_that_is_not_an_address_is_refused() {
        for bad in [
            "ops",
            "ops@",
            "@example.com",
            "ops@example",
            "ops @example.com",
            "a@b@c.com",
            "ops@example..com",
        ] {
            let mut v = example();
            v["alarms"] = serde_json::json!({ "email": bad });
            assert_eq!(field_of(v), "alarms.email", "{bad}");
        }
    }

    #[test]
    fn alarms_need_at_least_one_queued_minute() {
        let mut v = example();
        v["alarms"] = serde_json::json!({"queued_minutes": 0});
        assert_eq!(field_of(v), "alarms.queued_minutes");
    }

    #[test]
    fn the_fallback_rate_is_a_fraction_above_zero_and_at_most_one() {
        for bad in [0.0, -0.1, 1.01, 25.0] {
            let mut v = example();
            v["alarms"] = serde_json::json!({ "fallback_rate": bad });
            assert_eq!(field_of(v), "alarms.fallback_rate", "{bad}");
        }
    }

    #[test]
    fn an_unknown_alarms_field_is_named() {
        let mut v = example();
        v["alarms"] = serde_json::json!({"queued_minute": 5});
        assert_eq!(field_of(v), "alarms.queued_minute");
    }
}
