pub mod config;
pub mod deploy;
pub mod job;
pub mod labels;
pub mod lifecycle;
pub mod plan;
pub mod size;
pub mod waits;
