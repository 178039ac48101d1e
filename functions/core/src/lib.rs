//! tasuki core: the job lifecycle domain (pure), the ports it needs, and their AWS/GitHub adapters.

#[cfg(feature = "aws")]
pub mod adapters;
pub mod domain;
pub mod error;
pub mod fakes;
#[cfg(feature = "aws")]
pub mod handlers;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod metrics;
pub mod ports;
pub mod runner_contract;
pub mod signature;
#[cfg(feature = "aws")]
pub mod telemetry;

pub use error::StepError;
