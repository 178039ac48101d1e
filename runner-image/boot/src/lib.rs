//! `tasuki-boot`, the runner container's entrypoint.
//!
//! 1. reads the task's environment into a [`plan::BootPlan`] (pure);
//! 2. opens the job's sealed JIT config: KMS unwraps the data key with the job's encryption context
//!    (retrying while the job's grant propagates), the envelope opens with the job id ([`kms::open`]);
//! 3. installs a job-started hook ([`hook`]) and starts `<RUNNER_DIR>/run.sh` with the config in
//!    `ACTIONS_RUNNER_INPUT_JITCONFIG`, without the task's credential variables;
//! 4. stays as its parent: a stop signal gives a running job a grace period before the runner is
//!    told to stop; orphans are reaped; the outcome becomes a distinct exit status
//!    (`runner_contract::BootExit`, contract section E);
//! 5. meanwhile samples the task's CPU and memory ([`usage`]) and stores a summary in the lifecycle
//!    table at exit ([`report`]), for right-sizing advice; never at the job's expense.
//!
//! The opened config is never printed, logged or written: it exists as a [`credential::JitConfig`]
//! (redacted `Debug`, no `Display`) and then only in the runner's environment. Every failure before
//! the runner starts is one line on stderr and its own exit status.

pub mod credential;
pub mod error;
pub mod hook;
pub mod kms;
pub mod plan;
pub mod report;
pub mod supervise;
pub mod usage;

use error::BootError;
use plan::BootPlan;
use report::{ReportPlan, Stored};
use std::ffi::OsString;
use tasuki_core::domain::usage::{summarize, Usage};

const USAGE: &str = "usage: tasuki-boot (no arguments; configured by the task's environment: \
TASUKI_JOB_ID, TASUKI_JIT_CONFIG_SEALED, optional TASUKI_KMS_KEY_ID, TASUKI_ATTEMPT, \
TASUKI_RUNNER_NAME, TASUKI_STOP_GRACE_SECONDS, RUNNER_DIR, TASUKI_RUNNER_CMD, TASUKI_TABLE, \
TASUKI_RETENTION_DAYS, ECS_CONTAINER_METADATA_URI_V4, and the standard AWS variables)";

fn say(line: &str) {
    eprintln!("tasuki-boot: {line}");
}

fn fail(err: &BootError) -> i32 {
    say(&format!("error: {err}"));
    err.exit().code()
}

fn stopped(signal: i32) -> BootError {
    BootError::StoppedBeforeStart {
        signal: supervise::signal_name(signal),
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
    // Only root may read this process's /proc/<pid>/environ (the task's credential variables) or
    // attach to it; the runner, a new program, is dumpable again after exec.
    // SAFETY: plain syscall on this process.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

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
            opened = kms::open(&plan, |line| say(&line)) => opened,
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

    let hook = match hook::JobStartedHook::install(
        &std::env::temp_dir(),
        plan.runner.chained_hook.as_deref(),
    ) {
        Ok(hook) => hook,
        Err(e) => {
            return fail(&BootError::Internal(format!(
                "cannot write the job-started hook in {}: {e}",
                std::env::temp_dir().display()
            )))
        }
    };
    let pid = match supervise::spawn(&plan.runner, &jit, &hook) {
        Ok(pid) => pid,
        Err(e) => return fail(&e),
    };
    drop(jit);
    let sampling = start_sampling(&plan);
    match &sampling {
        Ok(_) => say(&format!(
            "usage: sampling the task's CPU and memory every {} s",
            usage::INTERVAL.as_secs()
        )),
        Err(why) => say(&format!("usage: not sampled ({why})")),
    }
    say(&format!(
        "{}: credential opened, runner {} started (pid {pid}); stop grace period {} s",
        plan.describe(),
        plan.runner.program.display(),
        plan.grace.seconds()
    ));
    let outcome = supervise::supervise(&signals, pid, &hook, plan.grace, |line| say(&line));
    let verdict = outcome.verdict();
    if let Ok((sampler, report)) = sampling {
        // The boot told the runner to stop: the grace period ran out (or a second signal came), so
        // ECS's SIGKILL (stopTimeout after SIGTERM) may be seconds away, and the exit status must
        // reach ECS before it. No write then.
        if outcome.stop.is_some_and(|stop| stop.forwarded) {
            say("usage: not stored (the task is being stopped; the exit status comes first)");
        } else {
            say(&report_usage(sampler, &report));
        }
    }
    say(&format!(
        "{}; exit {}: {}",
        outcome.ended.describe(),
        verdict.code(),
        verdict.reason()
    ));
    drop(hook);
    verdict.code()
}

fn env_var(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// Starts sampling when the task can be sampled and its usage stored; else why not.
fn start_sampling(plan: &BootPlan) -> Result<(usage::Sampler, ReportPlan), String> {
    let uri = env_var(usage::METADATA_URI)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{} is not set", usage::METADATA_URI))?;
    let endpoint = usage::Endpoint::parse(&uri)
        .ok_or_else(|| format!("{} is not an http:// URI", usage::METADATA_URI))?;
    let report = ReportPlan::from_env(env_var, plan.job_id, plan.attempt)?;
    let sampler = usage::Sampler::start(endpoint, usage::INTERVAL)
        .map_err(|e| format!("cannot start the sampling thread: {e}"))?;
    Ok((sampler, report))
}

/// Stops sampling, summarizes and stores the usage; the one line that says how it went.
fn report_usage(sampler: usage::Sampler, report: &ReportPlan) -> String {
    let gathered = sampler.finish();
    let failed = match &gathered.last_failure {
        Some(last) => format!(
            "; {} failed read(s), the last: {}",
            gathered.failures,
            error::one_line(last, 200)
        ),
        None => String::new(),
    };
    let Some(limits) = gathered.limits else {
        return format!("usage: not reported (the task metadata gave no limits{failed})");
    };
    let usage = match summarize(report.attempt, limits, &gathered.samples) {
        Ok(usage) => usage,
        Err(e) => return format!("usage: not reported ({e}{failed})"),
    };
    let stored = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
        .and_then(|runtime| runtime.block_on(report::store(report, &usage)));
    let figures = describe(&usage);
    match stored {
        Ok(Stored::Written) => format!("usage: {figures}{failed}; stored as {}", report.describe()),
        Ok(Stored::AlreadyThere) => format!(
            "usage: {figures}{failed}; not stored: {} exists already (first write wins)",
            report.describe()
        ),
        Err(why) => format!("usage: {figures}{failed}; not stored: {why}"),
    }
}

fn describe(usage: &Usage) -> String {
    let f = usage.fields();
    format!(
        "CPU avg {:.2} / peak {:.2} of {} vCPU, memory avg {} / peak {} of {} MiB, {} samples over {} s",
        f.cpu_avg_vcpu,
        f.cpu_peak_vcpu,
        f.cpu_limit_vcpu,
        f.memory_avg_mib,
        f.memory_peak_mib,
        f.memory_limit_mib,
        f.samples,
        f.seconds
    )
}
