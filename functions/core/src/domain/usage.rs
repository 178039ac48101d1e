//! What a runner task used of its size, and whether a workflow's jobs fit the size they ask for.
//!
//! Why: a size label is a guess. `tasuki-boot` samples its own task through the ECS task metadata
//! endpoint v4 (`${ECS_CONTAINER_METADATA_URI_V4}/task/stats` every few seconds, the limits once
//! from `/task`) and stores one [`Usage`] per attempt in the lifecycle table (item `USAGE#<job id>` /
//! `USAGE#<attempt>`, docs/contracts.md). The CLI reads those items back and asks [`advise`] whether
//! the jobs consistently use far less than their size, or hit its limit, and which label to use.
//!
//! Everything here is pure: the metadata JSON is parsed by [`parse_task_limits`] and
//! [`parse_task_stats`], a series of readings becomes a [`Usage`] with [`summarize`].
//!
//! For the reading side: deserialize a stored item straight into [`Usage`] (its fields are the
//! item's attributes; `pk`, `sk` and `expires_at` are ignored), gather a workflow's recent usages,
//! and call [`advise`] with the size its jobs asked for; [`Advice`]'s `Display` is the sentence to
//! print and [`Advice::label`] the `runs-on` label to suggest.

use crate::domain::size::Size;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The prefix of a usage item's keys: `pk = USAGE#<job id>`, `sk = USAGE#<attempt>`. A partition
/// of its own, so IAM's `dynamodb:LeadingKeys` (`USAGE#*`) keeps the runner task role away from
/// every job and event item (no condition key reads the sort key).
pub const SK_PREFIX: &str = "USAGE#";

/// The usage items' partition key of a job.
pub fn partition_key(job_id: crate::domain::ids::JobId) -> String {
    format!("{SK_PREFIX}{job_id}")
}

/// The usage item's sort key: `USAGE#0002` for attempt 2 (zero-padded to 4 so the items sort).
pub fn sort_key(attempt: u32) -> String {
    format!("{SK_PREFIX}{attempt:04}")
}

/// Every attribute a usage item has, keys and TTL included: the runner task role may write these
/// and no other (the `dynamodb:Attributes` condition in infra/lib/runners.ts lists the same).
pub const ITEM_ATTRIBUTES: [&str; 12] = [
    "pk",
    "sk",
    "attempt",
    "seconds",
    "samples",
    "cpu_avg_vcpu",
    "cpu_peak_vcpu",
    "memory_avg_mib",
    "memory_peak_mib",
    "cpu_limit_vcpu",
    "memory_limit_mib",
    "expires_at",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageError {
    #[error("the task metadata is not JSON of the documented shape: {0}")]
    Shape(String),
    #[error("the task metadata has no task-level Limits (CPU and Memory)")]
    NoLimits,
    #[error("{what} is {value}: not a finite amount above zero")]
    BadLimit { what: &'static str, value: f64 },
    #[error("{0} task stats readings: at least 2 are needed (CPU use is a difference)")]
    TooFewSamples(usize),
    #[error("{what}: average {avg} and peak {peak} are not 0 ≤ average ≤ peak")]
    Inconsistent {
        what: &'static str,
        avg: f64,
        peak: f64,
    },
}

/// The task's size as the task metadata gives it: `Limits` of `GET ${ECS_CONTAINER_METADATA_URI_V4}/task`,
/// "the resource limits specified at the task levels such as CPU (expressed in vCPUs) and memory"
/// (MiB), "omitted if no resource limits are defined"
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate-response.html>).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    cpu_vcpu: f64,
    memory_mib: u64,
}

impl Limits {
    pub fn new(cpu_vcpu: f64, memory_mib: f64) -> Result<Self, UsageError> {
        for (what, value) in [
            ("the CPU limit", cpu_vcpu),
            ("the memory limit", memory_mib),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(UsageError::BadLimit { what, value });
            }
        }
        Ok(Self {
            cpu_vcpu,
            memory_mib: memory_mib.round() as u64,
        })
    }

    pub fn cpu_vcpu(self) -> f64 {
        self.cpu_vcpu
    }

    pub fn memory_mib(self) -> u64 {
        self.memory_mib
    }
}

#[derive(Deserialize)]
struct TaskMetadata {
    #[serde(rename = "Limits")]
    limits: Option<TaskLimits>,
}

#[derive(Deserialize)]
struct TaskLimits {
    #[serde(rename = "CPU")]
    cpu: Option<f64>,
    #[serde(rename = "Memory")]
    memory: Option<f64>,
}

/// The task's limits from the body of `GET ${ECS_CONTAINER_METADATA_URI_V4}/task`.
pub fn parse_task_limits(json: &str) -> Result<Limits, UsageError> {
    let task: TaskMetadata =
        serde_json::from_str(json).map_err(|e| UsageError::Shape(e.to_string()))?;
    match task.limits {
        Some(TaskLimits {
            cpu: Some(cpu),
            memory: Some(memory),
        }) => Limits::new(cpu, memory),
        _ => Err(UsageError::NoLimits),
    }
}

/// One container's counters in one task stats reading, as Docker's `ContainerStats` gives them
/// (<https://docs.docker.com/engine/api/v1.30/#operation/ContainerStats>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerReading {
    /// `cpu_stats.cpu_usage.total_usage`: the container's CPU time so far, in nanoseconds.
    pub cpu_total_ns: u64,
    /// `cpu_stats.system_cpu_usage`: the host's CPU time so far, all CPUs, in nanoseconds.
    pub system_ns: u64,
    /// `cpu_stats.online_cpus` (Docker falls back to the length of `percpu_usage`).
    pub online_cpus: u32,
    /// Memory in use without the page cache, in bytes (see [`memory_without_cache`]).
    pub memory_bytes: u64,
}

#[derive(Deserialize)]
struct DockerStats {
    cpu_stats: CpuStats,
    memory_stats: MemoryStats,
}

#[derive(Deserialize)]
struct CpuStats {
    cpu_usage: CpuUsage,
    system_cpu_usage: Option<u64>,
    online_cpus: Option<u32>,
}

#[derive(Deserialize)]
struct CpuUsage {
    total_usage: u64,
    percpu_usage: Option<Vec<u64>>,
}

#[derive(Deserialize)]
struct MemoryStats {
    usage: Option<u64>,
    #[serde(default)]
    stats: BTreeMap<String, u64>,
}

/// Memory use as `docker stats` shows it: `memory_stats.usage` minus the inactive page cache,
/// `stats.total_inactive_file` on cgroup v1, else `stats.inactive_file` (cgroup v2), when smaller
/// than the usage (docker/cli `cli/command/container/stats_helpers.go`,
/// `calculateMemUsageUnixNoCache`). The kernel reclaims that cache at will: it is not what a job
/// needs.
pub fn memory_without_cache(usage: u64, stats: &BTreeMap<String, u64>) -> u64 {
    if let Some(&v1) = stats.get("total_inactive_file") {
        if v1 < usage {
            return usage - v1;
        }
    }
    match stats.get("inactive_file") {
        Some(&v2) if v2 < usage => usage - v2,
        _ => usage,
    }
}

/// The readings in the body of `GET ${ECS_CONTAINER_METADATA_URI_V4}/task/stats`: "Docker stats for
/// all of the containers associated with the task", a JSON object from Docker id to a Docker stats
/// object (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate.html>).
/// A container's entry is `null` until its first stats are collected ("tasks on Fargate require
/// that the container run for ~1 second prior to returning the container stats"), and one without
/// `system_cpu_usage` cannot be compared: both are left out.
pub fn parse_task_stats(json: &str) -> Result<BTreeMap<String, ContainerReading>, UsageError> {
    let by_id: BTreeMap<String, Option<DockerStats>> =
        serde_json::from_str(json).map_err(|e| UsageError::Shape(e.to_string()))?;
    Ok(by_id
        .into_iter()
        .filter_map(|(id, stats)| {
            let stats = stats?;
            let online_cpus = match stats.cpu_stats.online_cpus {
                Some(n) if n > 0 => n,
                _ => stats
                    .cpu_stats
                    .cpu_usage
                    .percpu_usage
                    .as_ref()
                    .map_or(0, |p| p.len() as u32),
            };
            let reading = ContainerReading {
                cpu_total_ns: stats.cpu_stats.cpu_usage.total_usage,
                system_ns: stats.cpu_stats.system_cpu_usage?,
                online_cpus,
                memory_bytes: memory_without_cache(
                    stats.memory_stats.usage.unwrap_or(0),
                    &stats.memory_stats.stats,
                ),
            };
            Some((id, reading))
        })
        .collect())
}

/// One task stats reading and when it was taken (milliseconds since sampling began).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSample {
    pub at_ms: u64,
    pub containers: BTreeMap<String, ContainerReading>,
}

/// vCPUs the task used between two readings: for each container in both, the CPU time it used over
/// the host CPU time that passed, times the online CPUs, as `docker stats` computes its CPU % (docker/cli
/// `calculateCPUPercentUnix`, without the × 100), summed over the containers (the runner and, in
/// the docker variant, the dind sidecar). `None` when no container can be compared (no host time
/// passed, or a counter went back: a restarted container).
fn vcpus_between(before: &TaskSample, after: &TaskSample) -> Option<f64> {
    let mut total = None;
    for (id, now) in &after.containers {
        let Some(then) = before.containers.get(id) else {
            continue;
        };
        let (Some(cpu), Some(system)) = (
            now.cpu_total_ns.checked_sub(then.cpu_total_ns),
            now.system_ns.checked_sub(then.system_ns),
        ) else {
            continue;
        };
        if system == 0 {
            continue;
        }
        *total.get_or_insert(0.0) += cpu as f64 / system as f64 * f64::from(now.online_cpus);
    }
    total
}

const MIB: f64 = 1024.0 * 1024.0;

/// Summarizes the readings of one attempt: CPU from each pair of consecutive readings (its average
/// weighted by the time between them), memory from each reading, both summed over the containers.
pub fn summarize(
    attempt: u32,
    limits: Limits,
    samples: &[TaskSample],
) -> Result<Usage, UsageError> {
    let mut cpu_weighted = 0.0;
    let mut cpu_time = 0.0;
    let mut cpu_peak: Option<f64> = None;
    for pair in samples.windows(2) {
        let dt = pair[1].at_ms.saturating_sub(pair[0].at_ms) as f64;
        if let Some(vcpus) = vcpus_between(&pair[0], &pair[1]).filter(|_| dt > 0.0) {
            cpu_weighted += vcpus * dt;
            cpu_time += dt;
            cpu_peak = Some(cpu_peak.map_or(vcpus, |p: f64| p.max(vcpus)));
        }
    }
    let memory: Vec<f64> = samples
        .iter()
        .filter(|s| !s.containers.is_empty())
        .map(|s| {
            s.containers
                .values()
                .map(|c| c.memory_bytes as f64)
                .sum::<f64>()
                / MIB
        })
        .collect();
    let Some(cpu_peak) = cpu_peak else {
        return Err(UsageError::TooFewSamples(samples.len()));
    };
    let memory_peak = memory.iter().copied().fold(0.0, f64::max);
    let memory_avg = memory.iter().sum::<f64>() / memory.len() as f64;
    let span_ms = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => last.at_ms.saturating_sub(first.at_ms),
        _ => 0,
    };
    Usage::new(UsageFields {
        attempt,
        seconds: u32::try_from(span_ms / 1000).unwrap_or(u32::MAX),
        samples: u32::try_from(samples.len()).unwrap_or(u32::MAX),
        cpu_avg_vcpu: round3((cpu_weighted / cpu_time).min(cpu_peak)),
        cpu_peak_vcpu: round3(cpu_peak),
        memory_avg_mib: memory_avg.round().min(memory_peak.round()) as u64,
        memory_peak_mib: memory_peak.round() as u64,
        cpu_limit_vcpu: limits.cpu_vcpu,
        memory_limit_mib: limits.memory_mib,
    })
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// What one attempt's runner task used, as stored in its usage item. Built by [`summarize`] or
/// read back from the item; either way 0 ≤ average ≤ peak and the limits are above zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UsageFields", into = "UsageFields")]
pub struct Usage(UsageFields);

/// The item's attributes, unchecked; [`Usage`] is the checked form.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UsageFields {
    /// The lifecycle's attempt (`TASUKI_ATTEMPT`).
    pub attempt: u32,
    /// From the first reading to the last.
    pub seconds: u32,
    /// Task stats readings taken.
    pub samples: u32,
    pub cpu_avg_vcpu: f64,
    pub cpu_peak_vcpu: f64,
    pub memory_avg_mib: u64,
    pub memory_peak_mib: u64,
    pub cpu_limit_vcpu: f64,
    pub memory_limit_mib: u64,
}

impl Usage {
    pub fn new(fields: UsageFields) -> Result<Self, UsageError> {
        Limits::new(fields.cpu_limit_vcpu, fields.memory_limit_mib as f64)?;
        let (cpu_avg, cpu_peak) = (fields.cpu_avg_vcpu, fields.cpu_peak_vcpu);
        if !(cpu_avg.is_finite() && cpu_peak.is_finite() && 0.0 <= cpu_avg && cpu_avg <= cpu_peak) {
            return Err(UsageError::Inconsistent {
                what: "CPU",
                avg: cpu_avg,
                peak: cpu_peak,
            });
        }
        if fields.memory_avg_mib > fields.memory_peak_mib {
            return Err(UsageError::Inconsistent {
                what: "memory",
                avg: fields.memory_avg_mib as f64,
                peak: fields.memory_peak_mib as f64,
            });
        }
        Ok(Self(fields))
    }

    pub fn fields(&self) -> &UsageFields {
        &self.0
    }

    /// Whether it was measured on a task of this size (the limits are the size's).
    pub fn is_of(&self, size: Size) -> bool {
        self.0.cpu_limit_vcpu == f64::from(size.cpu)
            && self.0.memory_limit_mib == u64::from(size.memory_mib())
    }

    fn cpu_share(&self, of: f64) -> f64 {
        of / self.0.cpu_limit_vcpu
    }

    fn memory_peak_share(&self) -> f64 {
        self.0.memory_peak_mib as f64 / self.0.memory_limit_mib as f64
    }
}

impl TryFrom<UsageFields> for Usage {
    type Error = UsageError;
    fn try_from(fields: UsageFields) -> Result<Self, Self::Error> {
        Usage::new(fields)
    }
}

impl From<Usage> for UsageFields {
    fn from(usage: Usage) -> Self {
        usage.0
    }
}

/// How many jobs of a size it takes before [`advise`] says anything.
pub const MIN_JOBS: usize = 3;
/// Oversized: every job's CPU peak and memory peak below this share of the limit.
pub const OVERSIZED_SHARE: f64 = 0.5;
/// At the limit: a memory peak at or above this share of the limit …
pub const MEMORY_LIMIT_SHARE: f64 = 0.95;
/// … or an average CPU at or above this share, in most jobs.
pub const CPU_LIMIT_SHARE: f64 = 0.9;
/// A suggested size leaves this much room above the highest peak seen.
pub const HEADROOM: f64 = 1.25;

/// Whether a workflow's jobs fit the size they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// Fewer than [`MIN_JOBS`] usages measured at this size.
    NotEnoughData {
        jobs: usize,
    },
    Fits,
    /// Every one of at least [`MIN_JOBS`] jobs peaked below half the CPU and half the memory;
    /// `suggest` is smaller in both and leaves [`HEADROOM`] above the highest peaks.
    Oversized {
        suggest: Size,
    },
    /// Most jobs reached the memory limit or kept the CPU busy; `suggest` has more of what they
    /// ran out of (and no less of the other), `None` when no Fargate size is larger.
    AtLimit {
        suggest: Option<Size>,
    },
}

impl Advice {
    /// The `runs-on` label to use instead (labels.rs grammar: `tasuki-<N>cpu-<M>gb`).
    pub fn label(&self) -> Option<String> {
        match self {
            Advice::Oversized { suggest }
            | Advice::AtLimit {
                suggest: Some(suggest),
            } => Some(format!("tasuki-{suggest}")),
            _ => None,
        }
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Advice::NotEnoughData { jobs } => write!(
                f,
                "not enough data: {jobs} measured job(s) of this size, {MIN_JOBS} needed"
            ),
            Advice::Fits => write!(f, "fits its size"),
            Advice::Oversized { suggest } => write!(
                f,
                "oversized: every job used less than half its CPU and memory; use \
                 `tasuki-{suggest}`"
            ),
            Advice::AtLimit {
                suggest: Some(suggest),
            } => write!(
                f,
                "at the limit: most jobs ran out of memory or CPU; use `tasuki-{suggest}`"
            ),
            Advice::AtLimit { suggest: None } => write!(
                f,
                "at the limit: most jobs ran out of memory or CPU, and no larger Fargate size exists"
            ),
        }
    }
}

/// Whether jobs that asked for `size` fit it, from their usages. Only usages measured at `size`
/// count (a usage's percentages mean nothing for another size). At the limit is checked first: a
/// job that runs out of memory fails, one with room to spare only costs more.
pub fn advise(usages: &[Usage], size: Size) -> Advice {
    let of_size: Vec<&Usage> = usages.iter().filter(|u| u.is_of(size)).collect();
    if of_size.len() < MIN_JOBS {
        return Advice::NotEnoughData {
            jobs: of_size.len(),
        };
    }
    let cpu_peak = of_size
        .iter()
        .map(|u| u.fields().cpu_peak_vcpu)
        .fold(0.0, f64::max);
    let memory_peak = of_size
        .iter()
        .map(|u| u.fields().memory_peak_mib)
        .max()
        .unwrap_or(0) as f64;
    let memory_bound = of_size
        .iter()
        .filter(|u| u.memory_peak_share() >= MEMORY_LIMIT_SHARE)
        .count();
    let cpu_bound = of_size
        .iter()
        .filter(|u| u.cpu_share(u.fields().cpu_avg_vcpu) >= CPU_LIMIT_SHARE)
        .count();
    let at_limit = of_size
        .iter()
        .filter(|u| {
            u.memory_peak_share() >= MEMORY_LIMIT_SHARE
                || u.cpu_share(u.fields().cpu_avg_vcpu) >= CPU_LIMIT_SHARE
        })
        .count();
    if 2 * at_limit > of_size.len() {
        // More of what ran out, never less of anything.
        let need_cpu = (cpu_peak * HEADROOM).max(f64::from(size.cpu));
        let need_memory = (memory_peak * HEADROOM).max(f64::from(size.memory_mib()));
        let suggest = smallest_fitting(need_cpu, need_memory).filter(|s| {
            (memory_bound == 0 || s.memory_gb > size.memory_gb)
                && (cpu_bound == 0 || s.cpu > size.cpu)
        });
        return Advice::AtLimit { suggest };
    }
    let oversized = of_size.iter().all(|u| {
        u.cpu_share(u.fields().cpu_peak_vcpu) < OVERSIZED_SHARE
            && u.memory_peak_share() < OVERSIZED_SHARE
    });
    if oversized {
        if let Some(suggest) = smallest_fitting(cpu_peak * HEADROOM, memory_peak * HEADROOM)
            .filter(|s| *s != size && s.cpu <= size.cpu && s.memory_gb <= size.memory_gb)
        {
            return Advice::Oversized { suggest };
        }
    }
    Advice::Fits
}

/// The cheapest size Fargate can serve with at least `cpu` vCPUs and `memory_mib` MiB: the fewest
/// vCPUs whose memory range reaches that far, then the least memory (size.rs holds the table).
pub fn smallest_fitting(cpu: f64, memory_mib: f64) -> Option<Size> {
    let memory_gb = (memory_mib / 1024.0).ceil().max(0.0);
    [1u32, 2, 4, 8, 16]
        .into_iter()
        .filter(|&c| f64::from(c) >= cpu)
        .find_map(|c| {
            (1..=8 * c)
                .filter(|&m| f64::from(m) >= memory_gb)
                .find_map(|m| Size::new(c, m).ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Shaped like the "Example task stats response" of the Fargate task metadata v4 examples
    /// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate-examples.html>),
    /// trimmed (numbers of our own), plus a container not sampled yet: a map from Docker id to Docker's
    /// `ContainerStats` object, cgroup v1 memory keys.
    const TASK_STATS_V1: &str = r#"{
      "3d1f891cded94dc795608466cce8ddcf-464223573": {
        "read": "2020-10-08T21:24:44.938937019Z",
        "preread": "2020-10-08T21:24:34.938633969Z",
        "pids_stats": {},
        "num_procs": 0,
        "cpu_stats": {
          "cpu_usage": {
            "total_usage": 2324920942,
            "percpu_usage": [1095931487, 1228989455, 0, 0],
            "usage_in_kernelmode": 190000000,
            "usage_in_usermode": 510000000
          },
          "system_cpu_usage": 4002960000000,
          "online_cpus": 2,
          "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "precpu_stats": {
          "cpu_usage": {"total_usage": 2324920942, "usage_in_kernelmode": 190000000, "usage_in_usermode": 510000000},
          "system_cpu_usage": 4002940000000,
          "online_cpus": 2,
          "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "memory_stats": {
          "usage": 4665344,
          "max_usage": 6422528,
          "stats": {"active_anon": 1441792, "cache": 1482752, "total_inactive_file": 1482752, "total_rss": 1441792},
          "limit": 9223372036854771712
        },
        "name": "curltest",
        "id": "3d1f891cded94dc795608466cce8ddcf-464223573",
        "networks": {"eth1": {"rx_bytes": 2398415937, "tx_bytes": 1231}}
      },
      "3d1f891cded94dc795608466cce8ddcf-2886410366": null
    }"#;

    #[test]
    fn a_documented_task_stats_answer_reads_cpu_counters_and_memory_without_cache() {
        let readings = parse_task_stats(TASK_STATS_V1).unwrap();
        assert_eq!(readings.len(), 1, "the null entry is left out");
        let reading = readings["3d1f891cded94dc795608466cce8ddcf-464223573"];
        assert_eq!(
            reading,
            ContainerReading {
                cpu_total_ns: 2_324_920_942,
                system_ns: 4_002_960_000_000,
                online_cpus: 2,
                memory_bytes: 4_665_344 - 1_482_752,
            }
        );
    }

    #[test]
    fn memory_without_cache_follows_the_docker_cli() {
        let stats = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // cgroup v2 key
        assert_eq!(
            memory_without_cache(1000, &stats(&[("inactive_file", 300)])),
            700
        );
        // cgroup v1 key wins
        assert_eq!(
            memory_without_cache(
                1000,
                &stats(&[("total_inactive_file", 100), ("inactive_file", 300)])
            ),
            900
        );
        // a cache larger than the usage is not subtracted
        assert_eq!(
            memory_without_cache(100, &stats(&[("inactive_file", 500)])),
            100
        );
        assert_eq!(memory_without_cache(100, &stats(&[])), 100);
    }

    #[test]
    fn online_cpus_falls_back_to_the_per_cpu_list_as_docker_does() {
        let json = r#"{"a": {"cpu_stats": {"cpu_usage": {"total_usage": 5, "percpu_usage": [1, 2, 3]},
            "system_cpu_usage": 10, "online_cpus": 0}, "memory_stats": {"usage": 8, "stats": {}}}}"#;
        assert_eq!(parse_task_stats(json).unwrap()["a"].online_cpus, 3);
    }

    #[test]
    fn an_entry_without_system_cpu_usage_is_left_out_and_other_json_is_refused() {
        let json = r#"{"a": {"cpu_stats": {"cpu_usage": {"total_usage": 5}}, "memory_stats": {}}}"#;
        assert!(parse_task_stats(json).unwrap().is_empty());
        assert!(matches!(parse_task_stats("[]"), Err(UsageError::Shape(_))));
    }

    #[test]
    fn the_task_limits_come_from_the_task_metadata() {
        // Fields as in the "Example task metadata response" (Fargate v4 examples), task-level
        // Limits in vCPUs and MiB.
        let json = r#"{"Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
            "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/e9028f8d5d8e4f258373e7b93ce9a3c3",
            "Family": "curltest", "Revision": "3", "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING",
            "Limits": {"CPU": 2, "Memory": 4096}, "Containers": [], "LaunchType": "FARGATE"}"#;
        let limits = parse_task_limits(json).unwrap();
        assert_eq!((limits.cpu_vcpu(), limits.memory_mib()), (2.0, 4096));
        assert_eq!(
            parse_task_limits(r#"{"Cluster": "c"}"#),
            Err(UsageError::NoLimits)
        );
        assert!(matches!(
            parse_task_limits(r#"{"Limits": {"CPU": 0, "Memory": 512}}"#),
            Err(UsageError::BadLimit { .. })
        ));
    }

    fn reading(cpu_s: f64, system_s: f64, memory_mib: u64) -> ContainerReading {
        ContainerReading {
            cpu_total_ns: (cpu_s * 1e9) as u64,
            system_ns: (system_s * 1e9) as u64,
            online_cpus: 2,
            memory_bytes: memory_mib * 1024 * 1024,
        }
    }

    fn sample(at_s: u64, containers: &[(&str, ContainerReading)]) -> TaskSample {
        TaskSample {
            at_ms: at_s * 1000,
            containers: containers
                .iter()
                .map(|(id, r)| (id.to_string(), *r))
                .collect(),
        }
    }

    fn limits() -> Limits {
        Limits::new(2.0, 4096.0).unwrap()
    }

    #[test]
    fn cpu_is_the_sum_over_containers_of_their_share_of_host_time_times_the_cpus() {
        // 2 online CPUs: the host's counter grows 10 s per 5 s of wall time.
        let samples = [
            sample(
                0,
                &[
                    ("runner", reading(0.0, 0.0, 100)),
                    ("dind", reading(0.0, 0.0, 50)),
                ],
            ),
            // runner 5 s of CPU, dind 2.5 s in 5 s: 1.5 vCPU
            sample(
                5,
                &[
                    ("runner", reading(5.0, 10.0, 300)),
                    ("dind", reading(2.5, 10.0, 100)),
                ],
            ),
            // runner 2.5 s, dind 0: 0.5 vCPU
            sample(
                10,
                &[
                    ("runner", reading(7.5, 20.0, 200)),
                    ("dind", reading(2.5, 20.0, 100)),
                ],
            ),
        ];
        let usage = summarize(3, limits(), &samples).unwrap();
        let f = usage.fields();
        assert_eq!(f.cpu_peak_vcpu, 1.5);
        assert_eq!(f.cpu_avg_vcpu, 1.0);
        assert_eq!(f.memory_peak_mib, 400);
        assert_eq!(f.memory_avg_mib, (150 + 400 + 300) / 3);
        assert_eq!((f.attempt, f.seconds, f.samples), (3, 10, 3));
        assert_eq!((f.cpu_limit_vcpu, f.memory_limit_mib), (2.0, 4096));
    }

    #[test]
    fn the_cpu_average_is_weighted_by_the_time_between_readings() {
        let samples = [
            sample(0, &[("r", reading(0.0, 0.0, 1))]),
            // 5 s at 2 vCPU
            sample(5, &[("r", reading(10.0, 10.0, 1))]),
            // a missed reading: 10 s at 0.5 vCPU
            sample(15, &[("r", reading(15.0, 30.0, 1))]),
        ];
        let f = *summarize(1, limits(), &samples).unwrap().fields();
        assert_eq!(f.cpu_peak_vcpu, 2.0);
        assert_eq!(f.cpu_avg_vcpu, 1.0);
    }

    #[test]
    fn a_container_that_appears_later_or_restarts_is_compared_only_when_it_can_be() {
        let samples = [
            sample(0, &[("r", reading(0.0, 0.0, 1))]),
            sample(
                5,
                &[
                    ("r", reading(5.0, 10.0, 1)),
                    ("late", reading(9.0, 10.0, 1)),
                ],
            ),
            // "late" restarted: its counter went back
            sample(
                10,
                &[
                    ("r", reading(10.0, 20.0, 1)),
                    ("late", reading(1.0, 20.0, 1)),
                ],
            ),
        ];
        let f = *summarize(1, limits(), &samples).unwrap().fields();
        assert_eq!((f.cpu_avg_vcpu, f.cpu_peak_vcpu), (1.0, 1.0));
    }

    #[test]
    fn one_reading_or_none_is_not_a_usage() {
        assert_eq!(
            summarize(1, limits(), &[sample(0, &[("r", reading(0.0, 0.0, 1))])]),
            Err(UsageError::TooFewSamples(1))
        );
        assert_eq!(
            summarize(1, limits(), &[]),
            Err(UsageError::TooFewSamples(0))
        );
    }

    fn usage(size: Size, cpu_avg: f64, cpu_peak: f64, memory_peak_share: f64) -> Usage {
        let memory_peak = (f64::from(size.memory_mib()) * memory_peak_share) as u64;
        Usage::new(UsageFields {
            attempt: 1,
            seconds: 600,
            samples: 120,
            cpu_avg_vcpu: cpu_avg,
            cpu_peak_vcpu: cpu_peak,
            memory_avg_mib: memory_peak / 2,
            memory_peak_mib: memory_peak,
            cpu_limit_vcpu: f64::from(size.cpu),
            memory_limit_mib: u64::from(size.memory_mib()),
        })
        .unwrap()
    }

    fn size(text: &str) -> Size {
        text.parse().unwrap()
    }

    #[test]
    fn a_usage_refuses_an_average_above_its_peak_or_a_negative_figure() {
        let good = *usage(size("2cpu-4gb"), 0.5, 1.0, 0.5).fields();
        assert!(Usage::new(UsageFields {
            cpu_avg_vcpu: 1.5,
            ..good
        })
        .is_err());
        assert!(Usage::new(UsageFields {
            cpu_avg_vcpu: -0.1,
            ..good
        })
        .is_err());
        assert!(Usage::new(UsageFields {
            memory_avg_mib: good.memory_peak_mib + 1,
            ..good
        })
        .is_err());
        assert!(Usage::new(UsageFields {
            cpu_limit_vcpu: 0.0,
            ..good
        })
        .is_err());
    }

    #[test]
    fn a_usage_round_trips_through_its_item_attributes_and_checks_them_when_read() {
        let u = usage(size("4cpu-8gb"), 1.25, 3.5, 0.4);
        let json = serde_json::to_value(u).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.extend(["pk", "sk", "expires_at"]);
        keys.sort_unstable();
        let mut expected = ITEM_ATTRIBUTES.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let mut item = json.clone();
        item["pk"] = partition_key(crate::domain::ids::JobId::new(5)).into();
        item["sk"] = sort_key(1).into();
        item["expires_at"] = 1_800_000_000u64.into();
        assert_eq!(serde_json::from_value::<Usage>(item).unwrap(), u);
        let mut bad = json;
        bad["cpu_avg_vcpu"] = 9.0.into();
        assert!(serde_json::from_value::<Usage>(bad).is_err());
    }

    #[test]
    fn the_sort_key_is_zero_padded_to_four() {
        assert_eq!(sort_key(2), "USAGE#0002");
        assert_eq!(sort_key(12345), "USAGE#12345");
    }

    #[test]
    fn fewer_than_three_jobs_of_the_size_are_not_enough() {
        let s = size("4cpu-8gb");
        let small = usage(s, 0.1, 0.2, 0.1);
        assert_eq!(
            advise(&[small, small], s),
            Advice::NotEnoughData { jobs: 2 }
        );
        // Usages measured at another size do not count.
        let other = usage(size("2cpu-4gb"), 0.1, 0.2, 0.1);
        assert_eq!(
            advise(&[small, small, other], s),
            Advice::NotEnoughData { jobs: 2 }
        );
    }

    #[test]
    fn jobs_using_under_half_of_everything_every_time_are_oversized() {
        let s = size("4cpu-8gb");
        // CPU peak 1.2 → 1.5 needed → 2 vCPU; memory peak 3276 MiB → 4096 MiB → 4 GB.
        let jobs = [
            usage(s, 0.5, 1.2, 0.4),
            usage(s, 0.4, 1.0, 0.3),
            usage(s, 0.6, 1.1, 0.2),
        ];
        let advice = advise(&jobs, s);
        assert_eq!(
            advice,
            Advice::Oversized {
                suggest: size("2cpu-4gb")
            }
        );
        assert_eq!(advice.label().as_deref(), Some("tasuki-2cpu-4gb"));
        assert!(advice.to_string().contains("`tasuki-2cpu-4gb`"), "{advice}");
    }

    #[test]
    fn one_job_over_half_keeps_the_size() {
        let s = size("4cpu-8gb");
        let jobs = [
            usage(s, 0.5, 1.2, 0.4),
            usage(s, 0.4, 1.0, 0.3),
            usage(s, 0.6, 2.1, 0.2),
        ];
        assert_eq!(advise(&jobs, s), Advice::Fits);
    }

    #[test]
    fn the_smallest_size_is_never_oversized() {
        let s = size("1cpu-2gb");
        let jobs = [usage(s, 0.1, 0.1, 0.1); 3];
        assert_eq!(advise(&jobs, s), Advice::Fits);
    }

    #[test]
    fn most_jobs_at_the_memory_limit_ask_for_more_memory() {
        let s = size("2cpu-4gb");
        let jobs = [
            usage(s, 0.5, 1.0, 0.97),
            usage(s, 0.5, 1.0, 0.99),
            usage(s, 0.5, 1.0, 0.3),
        ];
        // 3973 MiB × 1.25 → 4967 MiB → 5 GB; CPU stays.
        let advice = advise(&jobs, s);
        assert_eq!(
            advice,
            Advice::AtLimit {
                suggest: Some(size("2cpu-5gb"))
            }
        );
        assert_eq!(advice.label().as_deref(), Some("tasuki-2cpu-5gb"));
    }

    #[test]
    fn most_jobs_keeping_the_cpu_busy_ask_for_more_cpu() {
        let s = size("2cpu-8gb");
        let jobs = [usage(s, 1.9, 2.0, 0.1); 3];
        assert_eq!(
            advise(&jobs, s),
            Advice::AtLimit {
                suggest: Some(size("4cpu-8gb"))
            }
        );
    }

    #[test]
    fn a_minority_at_the_limit_fits() {
        let s = size("2cpu-4gb");
        let jobs = [
            usage(s, 0.5, 1.2, 0.99),
            usage(s, 0.5, 1.2, 0.6),
            usage(s, 0.5, 1.2, 0.6),
        ];
        assert_eq!(advise(&jobs, s), Advice::Fits);
    }

    #[test]
    fn the_largest_size_at_its_limit_has_no_larger_one_to_suggest() {
        let s = size("16cpu-120gb");
        let jobs = [usage(s, 15.0, 16.0, 0.99); 3];
        let advice = advise(&jobs, s);
        assert_eq!(advice, Advice::AtLimit { suggest: None });
        assert_eq!(advice.label(), None);
    }

    fn any_size() -> impl Strategy<Value = Size> {
        (prop::sample::select(vec![1u32, 2, 4, 8, 16]), 2u32..=120)
            .prop_filter_map("servable", |(c, m)| Size::new(c, m).ok())
    }

    fn any_usage(s: Size) -> impl Strategy<Value = Usage> {
        (0.0..=1.05f64, 0.0..=1.0f64, 0.0..=1.0f64).prop_map(move |(peak, avg_of_peak, mem)| {
            let cpu_peak = round3(peak * f64::from(s.cpu));
            usage(
                s,
                round3(cpu_peak * avg_of_peak).min(cpu_peak),
                cpu_peak,
                mem,
            )
        })
    }

    fn jobs_of_a_size() -> impl Strategy<Value = (Size, Vec<Usage>)> {
        any_size().prop_flat_map(|s| (Just(s), prop::collection::vec(any_usage(s), 0..8)))
    }

    proptest! {
        #[test]
        fn a_suggested_size_is_servable_and_never_the_same((s, jobs) in jobs_of_a_size()) {
            if let Some(label) = advise(&jobs, s).label() {
                let suggested: Size = label.strip_prefix("tasuki-").unwrap().parse().unwrap();
                prop_assert_ne!(suggested, s);
            }
        }

        #[test]
        fn oversized_suggests_smaller_and_at_limit_larger((s, jobs) in jobs_of_a_size()) {
            match advise(&jobs, s) {
                Advice::Oversized { suggest } => {
                    prop_assert!(suggest.cpu <= s.cpu && suggest.memory_gb <= s.memory_gb);
                    prop_assert!(suggest != s);
                    prop_assert!(jobs.len() >= MIN_JOBS);
                }
                Advice::AtLimit { suggest: Some(suggest) } => {
                    prop_assert!(suggest.cpu >= s.cpu && suggest.memory_gb >= s.memory_gb);
                    prop_assert!(suggest != s);
                }
                _ => {}
            }
        }

        #[test]
        fn a_suggestion_leaves_headroom_above_every_peak((s, jobs) in jobs_of_a_size()) {
            if let Some(label) = advise(&jobs, s).label() {
                let suggested: Size = label.strip_prefix("tasuki-").unwrap().parse().unwrap();
                for u in &jobs {
                    prop_assert!(f64::from(suggested.cpu) >= u.fields().cpu_peak_vcpu * HEADROOM);
                    prop_assert!(
                        f64::from(suggested.memory_mib()) >= u.fields().memory_peak_mib as f64 * HEADROOM
                    );
                }
            }
        }

        #[test]
        fn smallest_fitting_is_servable_and_fits(cpu in 0.0..20.0f64, memory in 0.0..130_000.0f64) {
            if let Some(s) = smallest_fitting(cpu, memory) {
                prop_assert!(Size::new(s.cpu, s.memory_gb).is_ok());
                prop_assert!(f64::from(s.cpu) >= cpu && f64::from(s.memory_mib()) >= memory);
            } else {
                prop_assert!(cpu > 16.0 || memory > 120.0 * 1024.0);
            }
        }
    }
}
