//! JSON logs via `tracing`: every line has its time (RFC 3339, UTC) and the fields of the span
//! it was logged in (job id, run attempt, execution name, launch attempt, candidate).

/// Initializes JSON logging once; `RUST_LOG` picks the level (default `info`).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}
