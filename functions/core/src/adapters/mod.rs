//! Adapters for the ports, against AWS and GitHub. They know the domain and the ports, never the
//! handlers; `crate::lambda` wires them together.

pub mod clock;
pub mod dynamodb;
pub mod ecs;
pub mod github;
pub mod kms;
pub mod sfn;
