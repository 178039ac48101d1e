//! Task sizes a runner can be given: whole vCPUs and GiB that Fargate (and so EC2) can serve.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A runner size such as `4cpu-8gb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    pub cpu: u32,
    pub memory_gb: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size: expected `<N>cpu-<M>gb`, e.g. `4cpu-8gb`")]
    Syntax(String),
    #[error("{cpu} vCPU with {memory_gb} GB is not a combination Fargate can serve ({allowed})")]
    Unservable {
        cpu: u32,
        memory_gb: u32,
        allowed: &'static str,
    },
}

impl Size {
    pub fn new(cpu: u32, memory_gb: u32) -> Result<Self, SizeError> {
        // Fargate's table for whole vCPUs; EC2 capacity uses the same task-level sizes.
        let (range, step, allowed) = match cpu {
            1 => (Some(2..=8), 1, "1 vCPU: 2-8 GB"),
            2 => (Some(4..=16), 1, "2 vCPU: 4-16 GB"),
            4 => (Some(8..=30), 1, "4 vCPU: 8-30 GB"),
            8 => (Some(16..=60), 4, "8 vCPU: 16-60 GB in steps of 4"),
            16 => (Some(32..=120), 8, "16 vCPU: 32-120 GB in steps of 8"),
            _ => (None, 1, "vCPU must be 1, 2, 4, 8 or 16"),
        };
        if range.is_some_and(|r| r.contains(&memory_gb)) && memory_gb.is_multiple_of(step) {
            Ok(Self { cpu, memory_gb })
        } else {
            Err(SizeError::Unservable {
                cpu,
                memory_gb,
                allowed,
            })
        }
    }

    /// CPU units for ECS (1 vCPU = 1024).
    pub fn cpu_units(self) -> u32 {
        self.cpu * 1024
    }

    pub fn memory_mib(self) -> u32 {
        self.memory_gb * 1024
    }
}

impl FromStr for Size {
    type Err = SizeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || SizeError::Syntax(text.to_string());
        let lower = text.to_ascii_lowercase();
        let (cpu, memory) = lower.split_once("cpu-").ok_or_else(syntax)?;
        let memory = memory.strip_suffix("gb").ok_or_else(syntax)?;
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 4 {
                Err(syntax())
            } else {
                s.parse::<u32>().map_err(|_| syntax())
            }
        };
        Size::new(number(cpu)?, number(memory)?)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}cpu-{}gb", self.cpu, self.memory_gb)
    }
}

impl TryFrom<String> for Size {
    type Error = SizeError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl schemars::JsonSchema for Size {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`<N>cpu-<M>gb` that Fargate can serve, e.g. `4cpu-8gb`",
            "pattern": "^(1|2|4|8|16)cpu-[0-9]{1,3}gb$"
        })
    }
}

impl From<Size> for String {
    fn from(size: Size) -> Self {
        size.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_servable_size() {
        assert_eq!(
            "4cpu-8gb".parse(),
            Ok(Size {
                cpu: 4,
                memory_gb: 8
            })
        );
        assert_eq!(
            "16CPU-64GB".parse(),
            Ok(Size {
                cpu: 16,
                memory_gb: 64
            })
        );
    }

    #[test]
    fn refuses_combinations_fargate_cannot_serve() {
        assert!(matches!(
            "2cpu-1gb".parse::<Size>(),
            Err(SizeError::Unservable { .. })
        ));
        assert!(matches!(
            "3cpu-8gb".parse::<Size>(),
            Err(SizeError::Unservable { .. })
        ));
        assert!(matches!(
            "8cpu-18gb".parse::<Size>(),
            Err(SizeError::Unservable { .. })
        ));
    }

    #[test]
    fn refuses_bad_syntax() {
        for text in [
            "4cpu",
            "cpu-8gb",
            "4cpu-gb",
            "-4cpu-8gb",
            "4cpu-8",
            "+4cpu-8gb",
            "4cpu-8gbx",
        ] {
            assert!(
                matches!(text.parse::<Size>(), Err(SizeError::Syntax(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn converts_to_ecs_units() {
        let size = Size::new(2, 4).unwrap();
        assert_eq!((size.cpu_units(), size.memory_mib()), (2048, 4096));
    }

    proptest! {
        #[test]
        fn display_round_trips_for_every_accepted_size(cpu in 0u32..20, memory in 0u32..130) {
            if let Ok(size) = Size::new(cpu, memory) {
                prop_assert_eq!(size.to_string().parse::<Size>(), Ok(size));
                prop_assert!(memory >= 2 * cpu && memory <= 8 * cpu);
            }
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,20}") {
            let _ = text.parse::<Size>();
        }
    }
}
