//! `tasuki-boot`, the runner container's entrypoint.
//!
//! 1. reads the task's environment into a [`plan::BootPlan`] (pure);
//! 2. opens the job's KMS-sealed JIT config with the job's encryption context ([`kms::open`]);
//! 3. starts `<RUNNER_DIR>/run.sh --jitconfig <config>` and stays as its parent: SIGTERM/SIGINT are
//!    forwarded, orphans reaped, and the runner's exit status becomes its own (signal `n` → `128+n`).
//!
//! The decrypted config is never printed, logged or written: it exists as a [`credential::JitConfig`]
//! (redacted `Debug`, no `Display`) and then only in the runner's argument list. Every failure before
//! the runner starts is one line on stderr and a distinct exit code ([`error::exit`]).

pub mod credential;
pub mod error;
pub mod kms;
pub mod plan;
pub mod supervise;

use error::BootError;
use plan::BootPlan;
use std::ffi::OsString;

const USAGE: &str = "usage: tasuki-boot (no arguments; configured by the task's environment: \
TASUKI_JOB_ID, TASUKI_JIT_CONFIG_CIPHERTEXT, optional TASUKI_KMS_KEY_ID, TASUKI_ATTEMPT, \
TASUKI_RUNNER_NAME, RUNNER_DIR, TASUKI_RUNNER_CMD, and the standard AWS variables)";

fn say(line: &str) {
    eprintln!("tasuki-boot: {line}");
}

fn fail(err: &BootError) -> i32 {
    say(&format!("error: {err}"));
    err.exit_code()
}

fn stopped(signal: i32) -> BootError {
    BootError::StoppedBeforeStart {
        signal: supervise::signal_name(signal),
        number: signal,
    }
}

/// Resolves with the first stop signal (SIGTERM/SIGINT), checking every 50 ms.
async fn stop_requested(signals: &supervise::Signals) -> i32 {
    loop {
        if let Some(signal) = signals.take_pending_stop() {
            return signal;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The whole program; returns the process exit code. Must run on the main thread before any other
/// thread exists (it blocks the stop signals for every thread created after it).
pub fn run(args: Vec<OsString>) -> i32 {
    match args.first().and_then(|a| a.to_str()) {
        None => {}
        Some("--version") if args.len() == 1 => {
            println!("tasuki-boot {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Some("--help" | "-h") if args.len() == 1 => {
            println!("{USAGE}");
            return 0;
        }
        Some(_) => return fail(&BootError::Usage(USAGE.to_string())),
    }

    let signals = match supervise::Signals::block() {
        Ok(signals) => signals,
        Err(e) => return fail(&BootError::Internal(format!("cannot block signals: {e}"))),
    };

    let plan = match BootPlan::from_env(|name| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }) {
        Ok(plan) => plan,
        Err(e) => return fail(&e),
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&BootError::Internal(format!(
                "cannot start the runtime: {e}"
            )))
        }
    };
    // A stop requested while KMS is answering wins: the task is going away, start nothing.
    let opened = runtime.block_on(async {
        tokio::select! {
            opened = kms::open(&plan) => opened,
            signal = stop_requested(&signals) => Err(stopped(signal)),
        }
    });
    drop(runtime);
    let opened = match signals.take_pending_stop() {
        Some(signal) => Err(stopped(signal)),
        None => opened,
    };
    let jit = match opened {
        Ok(jit) => jit,
        Err(e) => return fail(&e),
    };

    let pid = match supervise::spawn(&plan.runner, &jit) {
        Ok(pid) => pid,
        Err(e) => return fail(&e),
    };
    drop(jit);
    say(&format!(
        "{}: credential opened, runner {} started (pid {pid})",
        plan.describe(),
        plan.runner.program.display()
    ));
    let ended = supervise::supervise(&signals, pid, |line| say(&line));
    say(&ended.describe());
    ended.exit_code()
}
