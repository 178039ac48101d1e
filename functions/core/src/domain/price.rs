//! What a job costs, estimated: runner seconds at the candidate's price plus tasuki's own
//! orchestration. A dated, checked-in table rather than the Price List API: an estimate a buyer
//! can check line by line, and no API call on a job's path. Prices change; the date says when
//! these were read.
//!
//! Sources (us-east-1, read 2026-11-24):
//! - Fargate: <https://aws.amazon.com/fargate/pricing/> — Linux/x86 $0.04048 per vCPU-hour and
//!   $0.004445 per GB-hour; Linux/ARM $0.03238 and $0.00356.
//! - Fargate Spot floats with spare capacity, "up to 70% off" the same page says: estimated at
//!   30% of the on-demand price.
//! - EC2 capacity is billed per instance, which a task does not name: estimated at the Fargate
//!   on-demand price of its size (an upper bound for a well-packed Auto Scaling group).
//! - Step Functions Standard: $0.025 per 1,000 state transitions
//!   (<https://aws.amazon.com/step-functions/pricing/>).
//! - Lambda: $0.20 per million requests, $0.0000133334 per GB-second on arm64
//!   (<https://aws.amazon.com/lambda/pricing/>).
//! - DynamoDB on-demand: $0.625 per million write request units
//!   (<https://aws.amazon.com/dynamodb/pricing/on-demand/>).
//! - KMS: $0.03 per 10,000 requests (<https://aws.amazon.com/kms/pricing/>).

use crate::domain::config::{Arch, Capacity};
use crate::domain::size::Size;

/// When the table was read.
pub const PRICES_READ_ON: &str = "2026-11-24";

/// USD per vCPU-hour and per GB-hour.
struct Rate {
    vcpu_hour: f64,
    gb_hour: f64,
}

const FARGATE_X64: Rate = Rate {
    vcpu_hour: 0.04048,
    gb_hour: 0.004445,
};
const FARGATE_ARM64: Rate = Rate {
    vcpu_hour: 0.03238,
    gb_hour: 0.00356,
};
const SPOT_FRACTION: f64 = 0.30;

/// USD per second of a runner of `size` on `capacity`.
pub fn runner_per_second(capacity: Capacity, size: Size, arch: Arch) -> f64 {
    let rate = match arch {
        Arch::X64 => FARGATE_X64,
        Arch::Arm64 => FARGATE_ARM64,
    };
    let hourly = f64::from(size.cpu) * rate.vcpu_hour + f64::from(size.memory_gb) * rate.gb_hour;
    let hourly = match capacity {
        Capacity::FargateSpot => hourly * SPOT_FRACTION,
        Capacity::Fargate | Capacity::Ec2 => hourly,
    };
    hourly / 3600.0
}

/// What one job's orchestration takes, per launch attempt and per job, from the state machine
/// (`statemachines/runner-job.asl.json`) and the handlers: each attempt passes IssueToken,
/// RunTask, the registration wait and Confirm or Cleanup, with their Choice/Pass states.
const TRANSITIONS_PER_JOB: f64 = 8.0;
const TRANSITIONS_PER_ATTEMPT: f64 = 6.0;
const INVOCATIONS_PER_JOB: f64 = 5.0; // webhook, Validate, ResolveLabels, Finalize, the `completed` webhook
const INVOCATIONS_PER_ATTEMPT: f64 = 4.0;
const WRITES_PER_ROW: f64 = 2.0; // the job item and its timeline row, in one transaction
const KMS_CALLS_PER_ATTEMPT: f64 = 2.0; // GenerateDataKey + CreateGrant (RevokeGrant on cleanup: +1)
/// A Lambda invocation: 128 MB for ~100 ms, at the arm64 price.
const LAMBDA_INVOCATION: f64 = 0.20 / 1e6 + 0.128 * 0.1 * 0.000_013_333_4;
const TRANSITION: f64 = 0.025 / 1000.0;
const WRITE: f64 = 0.625 / 1e6;
const KMS_CALL: f64 = 0.03 / 10_000.0;

/// USD for tasuki's own part in a job of `attempts` launch attempts and `rows` timeline rows.
pub fn orchestration(attempts: u32, rows: usize) -> f64 {
    let attempts = f64::from(attempts);
    let transitions = TRANSITIONS_PER_JOB + TRANSITIONS_PER_ATTEMPT * attempts;
    let invocations = INVOCATIONS_PER_JOB + INVOCATIONS_PER_ATTEMPT * attempts;
    transitions * TRANSITION
        + invocations * LAMBDA_INVOCATION
        + rows as f64 * WRITES_PER_ROW * WRITE
        + KMS_CALLS_PER_ATTEMPT * (attempts + 0.5) * KMS_CALL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(text: &str) -> Size {
        text.parse().unwrap()
    }

    #[test]
    fn an_hour_of_fargate_costs_its_vcpus_and_gigabytes_at_the_published_rates() {
        let hour = runner_per_second(Capacity::Fargate, size("4cpu-8gb"), Arch::X64) * 3600.0;
        assert!((hour - (4.0 * 0.04048 + 8.0 * 0.004445)).abs() < 1e-9);
        let arm = runner_per_second(Capacity::Fargate, size("4cpu-8gb"), Arch::Arm64) * 3600.0;
        assert!(arm < hour, "Graviton is the cheaper of the two");
    }

    #[test]
    fn spot_is_estimated_at_thirty_percent_and_ec2_at_the_on_demand_price() {
        let s = size("2cpu-4gb");
        let on_demand = runner_per_second(Capacity::Fargate, s, Arch::X64);
        let spot = runner_per_second(Capacity::FargateSpot, s, Arch::X64);
        assert!((spot / on_demand - 0.30).abs() < 1e-9);
        assert_eq!(runner_per_second(Capacity::Ec2, s, Arch::X64), on_demand);
    }

    #[test]
    fn orchestration_grows_with_attempts_and_stays_well_under_a_tenth_of_a_cent() {
        let one = orchestration(1, 6);
        let three = orchestration(3, 10);
        assert!(one > 0.0 && three > one);
        assert!(three < 0.001, "orchestration {three} USD");
    }
}
