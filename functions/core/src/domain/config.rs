//! The one deployment config, loaded and validated once at Lambda init.

use crate::domain::size::Size;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a runner task gets its compute.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capacity {
    FargateSpot,
    Fargate,
    Ec2,
}

impl Capacity {
    pub fn as_str(self) -> &'static str {
        match self {
            Capacity::FargateSpot => "fargate-spot",
            Capacity::Fargate => "fargate",
            Capacity::Ec2 => "ec2",
        }
    }

    pub fn is_spot(self) -> bool {
        matches!(self, Capacity::FargateSpot)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X64,
    Arm64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub table_name: String,
    pub state_machine_arn: String,
    pub github: GitHubConfig,
    pub access: AccessConfig,
    pub runner: RunnerConfig,
    pub sizes: SizesConfig,
    pub capacity_order: Vec<Capacity>,
    pub network: NetworkConfig,
    pub ecs: EcsConfig,
    pub timeouts: Timeouts,
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    90
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    pub api_url: String,
    pub app_id: u64,
    /// Secrets Manager `SecretId`: the secret's name or its complete ARN, never a partial ARN.
    pub private_key_secret_id: String,
    pub webhook_secret_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Owners (orgs or users) whose repositories are served; `*` serves any.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// `owner/name` repositories served in addition to `orgs`; `*` serves any.
    #[serde(default)]
    pub repositories: Vec<String>,
    #[serde(default)]
    pub allow_public_repositories: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    pub group_id: u64,
    pub kms_key_id: String,
    /// The runner task role: each job's KMS grant lets it, and only for that job, open the JIT config.
    pub task_role_arn: String,
    #[serde(default)]
    pub extra_labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SizesConfig {
    /// An alias or a size, used when the job names none.
    pub default: String,
    #[serde(default)]
    pub aliases: BTreeMap<String, Size>,
    /// Opt-in size fallback: alias → larger aliases a job asking for that alias's size may also
    /// run on, in order, after every candidate of its own size (each capacity, each AZ).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Availability zone → subnet id; candidates follow the zones' sorted order.
    pub subnets: BTreeMap<String, String>,
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub security_group_allowlist: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsConfig {
    pub cluster: String,
    pub container_name: String,
    pub task_definitions: TaskDefinitions,
    #[serde(default)]
    pub ec2_capacity_providers: BTreeMap<Arch, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskDefinitions {
    pub x64: String,
    pub arm64: String,
    pub x64_docker: Option<String>,
    pub arm64_docker: Option<String>,
}

impl TaskDefinitions {
    pub fn for_runner(&self, arch: Arch, docker: bool) -> Option<&str> {
        match (arch, docker) {
            (Arch::X64, false) => Some(&self.x64),
            (Arch::Arm64, false) => Some(&self.arm64),
            (Arch::X64, true) => self.x64_docker.as_deref(),
            (Arch::Arm64, true) => self.arm64_docker.as_deref(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// How long a launched runner has to register before the next candidate is tried.
    #[schemars(range(min = 1))]
    pub registration_seconds: u32,
    /// How long a job may run once its runner registered.
    #[schemars(range(min = 1))]
    pub job_seconds: u32,
    /// When every candidate failed for capacity or quota, how long the job keeps waiting (with
    /// backoff) for new rounds of candidates before it fails; 0 gives up after one round.
    #[serde(default = "default_capacity_wait_seconds")]
    #[schemars(range(max = 86400))]
    pub capacity_wait_seconds: u32,
    /// How long past its state's own limit an unfinished job may sit before the rescue sweep
    /// checks it against GitHub (a lost webhook, an execution that never started).
    #[serde(default = "default_rescue_grace_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub rescue_grace_seconds: u32,
}

fn default_capacity_wait_seconds() -> u32 {
    900
}

fn default_rescue_grace_seconds() -> u32 {
    300
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: neither TASUKI_CONFIG nor TASUKI_CONFIG_FILE is set")]
    Missing,
    #[error("config: cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

impl Config {
    /// Reads `TASUKI_CONFIG` (JSON) or the file named by `TASUKI_CONFIG_FILE`.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Ok(json) = std::env::var("TASUKI_CONFIG") {
            return Self::from_json(&json);
        }
        let path = std::env::var("TASUKI_CONFIG_FILE").map_err(|_| ConfigError::Missing)?;
        let json =
            std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path, source })?;
        Self::from_json(&json)
    }

    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_str(json);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            invalid(&field, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.table_name.is_empty() {
            return Err(invalid("table_name", "must not be empty"));
        }
        if !self.state_machine_arn.starts_with("arn:") {
            return Err(invalid("state_machine_arn", "must be an ARN"));
        }
        check_api_url("github.api_url", &self.github.api_url, true)?;
        check_secret_id(
            "github.private_key_secret_id",
            &self.github.private_key_secret_id,
        )?;
        check_secret_id("github.webhook_secret_id", &self.github.webhook_secret_id)?;
        // CreateGrant takes a key id or key ARN, not an alias
        // (https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateGrant.html, `KeyId`).
        if self.runner.kms_key_id.contains("alias/") || self.runner.kms_key_id.is_empty() {
            return Err(invalid(
                "runner.kms_key_id",
                "must be a key id or key ARN (KMS grants cannot name a key by alias)",
            ));
        }
        if !self.runner.task_role_arn.starts_with("arn:") {
            return Err(invalid("runner.task_role_arn", "must be an IAM role ARN"));
        }
        check_access(&self.access)?;
        check_sizes(&self.sizes)?;
        check_capacity_order(&self.capacity_order)?;
        if self.network.subnets.is_empty() {
            return Err(invalid(
                "network.subnets",
                "must map at least one AZ to a subnet",
            ));
        }
        if let Some((az, _)) = self
            .network
            .subnets
            .iter()
            .find(|(_, subnet)| !subnet.starts_with("subnet-"))
        {
            return Err(invalid(
                &format!("network.subnets.{az}"),
                "is not a subnet id",
            ));
        }
        if self.network.security_groups.is_empty() {
            return Err(invalid(
                "network.security_groups",
                "must list at least one group",
            ));
        }
        check_security_groups("network.security_groups", &self.network.security_groups)?;
        check_security_groups(
            "network.security_group_allowlist",
            &self.network.security_group_allowlist,
        )?;
        check_timeouts(self.timeouts)?;
        if self.retention_days == 0 {
            return Err(invalid("retention_days", "must be positive"));
        }
        Ok(())
    }

    pub fn default_size(&self) -> Option<Size> {
        self.size_named(&self.sizes.default)
    }

    /// The larger sizes a job of `size` may fall back to, in order (`sizes.fallback` of the alias
    /// that names `size`); none without one.
    pub fn fallback_sizes(&self, size: Size) -> Vec<Size> {
        let sizes = &self.sizes;
        let mut larger: Vec<Size> = sizes
            .aliases
            .iter()
            .filter(|(_, &aliased)| aliased == size)
            .filter_map(|(name, _)| sizes.fallback.get(name))
            .flatten()
            .filter_map(|name| sizes.aliases.get(name).copied())
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        larger.retain(|s| seen.insert(*s));
        larger
    }

    /// An alias or a literal size, case-insensitive.
    pub fn size_named(&self, name: &str) -> Option<Size> {
        let name = name.to_ascii_lowercase();
        self.sizes
            .aliases
            .get(&name)
            .copied()
            .or_else(|| name.parse().ok())
    }

    pub fn serves_repository(&self, full_name: &str) -> bool {
        let full_name = full_name.to_ascii_lowercase();
        let owner = full_name.split('/').next().unwrap_or_default();
        self.access
            .orgs
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(owner))
            || self
                .access
                .repositories
                .iter()
                .any(|r| r == "*" || r.eq_ignore_ascii_case(&full_name))
    }
}

/// A Secrets Manager `SecretId` that finds the secret: its name, or its complete ARN. A partial ARN
/// (no random suffix) whose name ends in a hyphen and six characters, like
/// `…:secret:tasuki/webhook-secret`, is read as a complete ARN and is not found
/// (<https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html>,
/// `SecretId`); other partial ARNs work by luck, so none is accepted.
pub(crate) fn check_secret_id(field: &str, id: &str) -> Result<(), ConfigError> {
    if id.trim().is_empty() {
        return Err(invalid(field, "must name a secret"));
    }
    let Some(rest) = id.strip_prefix("arn:") else {
        return Ok(());
    };
    let name = rest.splitn(6, ':').nth(5).unwrap_or_default();
    let complete = name.rsplit_once('-').is_some_and(|(_, suffix)| {
        suffix.len() == 6 && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if complete {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{id} is a partial ARN (no random suffix): give the secret's name or its complete ARN"),
        ))
    }
}

/// `https://`, or plain HTTP on 127.0.0.1 where the local stack is allowed.
pub(crate) fn check_api_url(
    field: &str,
    url: &str,
    local_allowed: bool,
) -> Result<(), ConfigError> {
    if url.starts_with("https://") || (local_allowed && url.starts_with("http://127.0.0.1")) {
        Ok(())
    } else if local_allowed {
        Err(invalid(
            field,
            "must be https:// (or http://127.0.0.1 for the local stack)",
        ))
    } else {
        Err(invalid(field, "must be https://"))
    }
}

pub(crate) fn check_access(access: &AccessConfig) -> Result<(), ConfigError> {
    if access.orgs.is_empty() && access.repositories.is_empty() {
        return Err(invalid(
            "access",
            "serves nothing: list orgs or repositories (\"*\" for any)",
        ));
    }
    if let Some(bad) = access
        .repositories
        .iter()
        .find(|r| *r != "*" && r.split('/').filter(|p| !p.is_empty()).count() != 2)
    {
        return Err(invalid(
            "access.repositories",
            format!("`{bad}` is not `owner/name`"),
        ));
    }
    Ok(())
}

pub(crate) fn check_sizes(sizes: &SizesConfig) -> Result<(), ConfigError> {
    for name in sizes.aliases.keys() {
        if name.is_empty() || name.parse::<Size>().is_ok() || !is_label_word(name) {
            return Err(invalid(
                &format!("sizes.aliases.{name}"),
                "an alias is a lowercase word (letters, digits, '-') that is not itself a size",
            ));
        }
    }
    let default = sizes.default.to_ascii_lowercase();
    if !sizes.aliases.contains_key(&default) && default.parse::<Size>().is_err() {
        return Err(invalid("sizes.default", "is neither an alias nor a size"));
    }
    for (name, larger) in &sizes.fallback {
        let field = format!("sizes.fallback.{name}");
        let Some(&from) = sizes.aliases.get(name) else {
            return Err(invalid(&field, "is not an alias of sizes.aliases"));
        };
        for (i, to) in larger.iter().enumerate() {
            let Some(&to_size) = sizes.aliases.get(to) else {
                return Err(invalid(
                    &field,
                    format!("`{to}` is not an alias of sizes.aliases"),
                ));
            };
            let bigger = to_size.cpu_units() >= from.cpu_units()
                && to_size.memory_mib() >= from.memory_mib()
                && to_size != from;
            if !bigger {
                return Err(invalid(
                    &field,
                    format!("`{to}` ({to_size}) is not larger than `{name}` ({from}): a fallback only grows"),
                ));
            }
            if larger[..i].contains(to) {
                return Err(invalid(&field, format!("`{to}` is listed twice")));
            }
        }
    }
    Ok(())
}

pub(crate) fn check_capacity_order(order: &[Capacity]) -> Result<(), ConfigError> {
    if order.is_empty() {
        return Err(invalid("capacity_order", "must list at least one capacity"));
    }
    let distinct: BTreeSet<_> = order.iter().collect();
    if distinct.len() != order.len() {
        return Err(invalid("capacity_order", "lists a capacity twice"));
    }
    Ok(())
}

pub(crate) fn check_security_groups(field: &str, groups: &[String]) -> Result<(), ConfigError> {
    match groups.iter().find(|g| !g.starts_with("sg-")) {
        Some(group) => Err(invalid(
            field,
            format!("`{group}` is not a security group id"),
        )),
        None => Ok(()),
    }
}

pub(crate) fn check_timeouts(t: Timeouts) -> Result<(), ConfigError> {
    if t.registration_seconds == 0 || t.job_seconds == 0 {
        return Err(invalid("timeouts", "must be positive"));
    }
    if t.rescue_grace_seconds == 0 || t.rescue_grace_seconds > 86_400 {
        return Err(invalid(
            "timeouts.rescue_grace_seconds",
            "must be from 1 to 86400",
        ));
    }
    if t.capacity_wait_seconds > 86_400 {
        return Err(invalid(
            "timeouts.capacity_wait_seconds",
            "must be at most 86400 (GitHub keeps a job queued for 24 hours)",
        ));
    }
    if t.registration_seconds >= t.job_seconds {
        return Err(invalid(
            "timeouts.registration_seconds",
            "must be shorter than timeouts.job_seconds",
        ));
    }
    Ok(())
}

fn is_label_word(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"{
      "table_name": "tasuki-jobs",
      "state_machine_arn": "arn:aws:states:us-east-1:123456789012:stateMachine:tasuki-runner-job",
      "github": {"api_url": "https://api.github.com", "app_id": 1,
                 "private_key_secret_id": "tasuki/github-app-private-key",
                 "webhook_secret_id": "tasuki/webhook-secret"},
      "access": {"orgs": ["octo-org"], "repositories": ["someone/tool"]},
      "runner": {"group_id": 1, "kms_key_id": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                 "task_role_arn": "arn:aws:iam::123456789012:role/tasuki-runner-task"},
      "sizes": {"default": "small", "aliases": {"small": "2cpu-4gb", "large": "8cpu-16gb"}},
      "capacity_order": ["fargate-spot", "fargate", "ec2"],
      "network": {"subnets": {"us-east-1b": "subnet-b", "us-east-1a": "subnet-a"},
                  "security_groups": ["sg-default"], "security_group_allowlist": ["sg-db"]},
      "ecs": {"cluster": "tasuki", "container_name": "runner",
              "task_definitions": {"x64": "td-x64", "arm64": "td-arm64", "x64_docker": "td-x64-docker"},
              "ec2_capacity_providers": {"x64": "cp-ec2-x64"}},
      "timeouts": {"registration_seconds": 300, "job_seconds": 21600}
    }"#;

    pub(crate) fn example() -> Config {
        Config::from_json(EXAMPLE).expect("example config is valid")
    }

    fn with(edit: impl FnOnce(&mut serde_json::Value)) -> Result<Config, ConfigError> {
        let mut value: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        edit(&mut value);
        Config::from_json(&value.to_string())
    }

    fn field_of(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn the_runtime_config_the_cdk_stack_builds_is_valid() {
        // infra/test keeps this snapshot of TASUKI_CONFIG current (resolved with fake values).
        let json = include_str!("../../../../infra/test/runtime-config.example.json");
        let config = Config::from_json(json).expect("the stack's TASUKI_CONFIG is a valid Config");
        assert!(config.state_machine_arn.contains(":stateMachine:"));
        assert!(!config.network.subnets.is_empty());
    }

    #[test]
    fn secrets_are_named_by_name_or_complete_arn_never_by_partial_arn() {
        let partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tasuki/app-key";
        assert_eq!(
            field_of(with(|v| v["github"]["webhook_secret_id"] = partial.into())),
            "github.webhook_secret_id"
        );
        let complete = format!("{partial}-AbCdEf");
        assert!(with(|v| v["github"]["webhook_secret_id"] = complete.into()).is_ok());
        assert!(
            with(|v| v["github"]["webhook_secret_id"] = "tasuki/webhook-secret".into()).is_ok()
        );
        // `…:secret:tasuki/webhook-secret` cannot be told from a complete ARN (suffix `secret`):
        // Secrets Manager cannot either, which is why the stack passes names.
    }

    #[test]
    fn a_size_fallback_names_larger_aliases_and_nothing_else() {
        let fallback = |list: serde_json::Value| {
            with(move |v| {
                v["sizes"]["aliases"]["medium"] = "4cpu-8gb".into();
                v["sizes"]["fallback"] = serde_json::json!({ "small": list });
            })
        };
        let config = fallback(serde_json::json!(["medium", "large"])).unwrap();
        let small = Size::new(2, 4).unwrap();
        assert_eq!(
            config.fallback_sizes(small),
            [Size::new(4, 8).unwrap(), Size::new(8, 16).unwrap()]
        );
        assert_eq!(config.fallback_sizes(Size::new(8, 16).unwrap()), []);
        for bad in [
            serde_json::json!(["huge"]),
            serde_json::json!(["small"]),
            serde_json::json!(["medium", "medium"]),
        ] {
            assert_eq!(field_of(fallback(bad)), "sizes.fallback.small");
        }
        let shrinking = with(|v| v["sizes"]["fallback"] = serde_json::json!({"large": ["small"]}));
        assert_eq!(field_of(shrinking), "sizes.fallback.large");
    }

    #[test]
    fn the_example_config_is_valid() {
        let config = example();
        assert_eq!(config.default_size(), Some(Size::new(2, 4).unwrap()));
        assert_eq!(config.retention_days, 90);
    }

    #[test]
    fn a_bad_size_alias_names_its_field() {
        let field = field_of(with(|v| v["sizes"]["aliases"]["small"] = "3cpu-1gb".into()));
        assert_eq!(field, "sizes.aliases.small");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let result = with(|v| v["timeouts"]["registration"] = 5.into());
        assert!(
            matches!(result, Err(ConfigError::Invalid { ref message, .. }) if message.contains("registration"))
        );
    }

    #[test]
    fn semantic_errors_name_their_field() {
        assert_eq!(
            field_of(with(|v| v["capacity_order"] = serde_json::json!([]))),
            "capacity_order"
        );
        assert_eq!(
            field_of(with(
                |v| v["capacity_order"] = serde_json::json!(["fargate", "fargate"])
            )),
            "capacity_order"
        );
        assert_eq!(
            field_of(with(|v| v["sizes"]["default"] = "huge".into())),
            "sizes.default"
        );
        assert_eq!(
            field_of(with(
                |v| v["network"]["subnets"]["us-east-1a"] = "vpc-1".into()
            )),
            "network.subnets.us-east-1a"
        );
        assert_eq!(
            field_of(with(
                |v| v["network"]["security_group_allowlist"] = serde_json::json!(["db"])
            )),
            "network.security_group_allowlist"
        );
        assert_eq!(
            field_of(with(
                |v| v["timeouts"]["registration_seconds"] = 99999.into()
            )),
            "timeouts.registration_seconds"
        );
        assert_eq!(
            field_of(with(
                |v| v["github"]["api_url"] = "http://evil.example".into()
            )),
            "github.api_url"
        );
        assert_eq!(
            field_of(with(
                |v| v["access"]["repositories"] = serde_json::json!(["nope"])
            )),
            "access.repositories"
        );
        assert_eq!(
            field_of(with(|v| v["capacity_order"] = serde_json::json!(["lambda"]))),
            "capacity_order[0]"
        );
    }

    #[test]
    fn repository_access_is_case_insensitive_and_wildcardable() {
        let config = example();
        assert!(config.serves_repository("Octo-Org/app"));
        assert!(config.serves_repository("someone/TOOL"));
        assert!(!config.serves_repository("someone/other"));
        let any = with(|v| v["access"]["orgs"] = serde_json::json!(["*"])).unwrap();
        assert!(any.serves_repository("anyone/anything"));
    }
}
