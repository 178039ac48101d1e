//! tasuki core: the job lifecycle domain (pure), the ports it needs, and their AWS/GitHub adapters.

pub mod adapters;
pub mod domain;
pub mod error;
pub mod handlers;
pub mod ports;
pub mod signature;
pub mod telemetry;

pub use error::StepError;
