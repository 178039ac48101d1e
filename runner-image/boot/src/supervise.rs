//! Running the runner as a child: stop signals handled (a running job gets a grace period first),
//! the outcome turned into the boot's exit status, and (as PID 1 of the container) every orphan
//! reaped.
//!
//! SIGTERM, SIGINT and SIGCHLD are blocked before any thread starts, so no thread is ever
//! interrupted by them and none is lost: they stay pending until [`Signals::wait`] takes them.
//! The runner starts with an empty signal mask (reset between fork and exec: a blocked mask is
//! inherited) and default dispositions, so it sees SIGTERM/SIGINT as if sent to it directly.

use crate::credential::JitConfig;
use crate::error::BootError;
use crate::hook::JobStartedHook;
use crate::plan::{
    RunnerCommand, StopGrace, HOOK_JOB_STARTED, MANUALLY_TRAP_SIG, NOT_FOR_THE_RUNNER,
    RETURN_VERSION_DEPRECATED_EXIT_CODE, RUNNER_INPUT_JITCONFIG,
};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tasuki_core::runner_contract::BootExit;

/// The stop signals: ECS stops a task with SIGTERM (Fargate Spot: then about two minutes before
/// SIGKILL); SIGINT is what a terminal sends.
pub const FORWARDED: [i32; 2] = [libc::SIGTERM, libc::SIGINT];

/// How often the supervisor looks at the job marker when nothing else happens.
const TICK: Duration = Duration::from_millis(500);

/// The blocked signal set; create it first thing in `main`, before any thread exists.
pub struct Signals {
    set: libc::sigset_t,
    stop_only: libc::sigset_t,
}

impl Signals {
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use; pthread_sigmask
        // only reads the set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut stop_only: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigemptyset(&mut stop_only);
            for signal in FORWARDED {
                libc::sigaddset(&mut set, signal);
                libc::sigaddset(&mut stop_only, signal);
            }
            libc::sigaddset(&mut set, libc::SIGCHLD);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { set, stop_only })
        }
    }

    /// A stop signal that arrived so far (and is consumed), if any.
    pub fn take_pending_stop(&self) -> Option<i32> {
        sigtimedwait(&self.stop_only, Duration::ZERO)
    }

    /// The next blocked signal, or `None` after `timeout`.
    fn wait(&self, timeout: Duration) -> Option<i32> {
        sigtimedwait(&self.set, timeout)
    }
}

fn sigtimedwait(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid pointers to a sigset and a timespec; a null siginfo is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

/// `SIGTERM`, `SIGINT`, … for the signals a runner meets; `signal 42` otherwise.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

/// How the runner ended, from a `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Killed(i32),
}

impl Ended {
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Ended::Killed(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        }
    }

    pub fn describe(self) -> String {
        match self {
            Ended::Exited(code) => format!("the runner exited with status {code}"),
            Ended::Killed(signal) => format!("the runner was killed by {}", signal_name(signal)),
        }
    }
}

/// Starts the runner without arguments: the config goes in `ACTIONS_RUNNER_INPUT_JITCONFIG`, which
/// the listener reads and removes from its environment (so `ps` never shows it and the job never
/// inherits it). The environment is the boot's, without [`NOT_FOR_THE_RUNNER`], with the job-started
/// hook, and with the two run.sh settings the outcome depends on. Returns the runner's pid.
pub fn spawn(
    runner: &RunnerCommand,
    jit: &JitConfig,
    hook: &JobStartedHook,
) -> Result<i32, BootError> {
    let mut command = Command::new(&runner.program);
    for name in NOT_FOR_THE_RUNNER {
        command.env_remove(name);
    }
    command
        .env(RUNNER_INPUT_JITCONFIG, jit.expose())
        .env(HOOK_JOB_STARTED, hook.script())
        .env(MANUALLY_TRAP_SIG, "1")
        .env(RETURN_VERSION_DEPRECATED_EXIT_CODE, "1");
    // The blocked mask is inherited across fork and exec: without this the runner could never
    // receive the signals forwarded to it. So is an ignored disposition, and a shell cannot trap a
    // signal ignored when it started (bash manual, "Signals"): a boot started with SIGINT ignored
    // (any `cmd &` of a non-interactive shell) would leave run.sh deaf to the stop it is sent.
    // SAFETY: runs in the forked child before exec; sigemptyset, sigprocmask and signal are
    // async-signal-safe and touch only the child's own state.
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for signal in [libc::SIGINT, libc::SIGTERM] {
                if libc::signal(signal, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    match command.spawn() {
        // The child is waited for with waitpid below, not through `Child`, which is dropped.
        Ok(child) => Ok(child.id() as i32),
        Err(e) => {
            let exit = if e.kind() == io::ErrorKind::NotFound {
                BootExit::RunnerNotFound
            } else {
                BootExit::RunnerNotExecutable
            };
            // The io::Error's text names the OS error only, never the environment.
            Err(BootError::Spawn {
                program: runner.program.clone(),
                reason: e.to_string(),
                exit,
            })
        }
    }
}

/// What happened to a stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// The first stop signal.
    pub signal: i32,
    /// Whether a job was running when it came.
    pub during_job: bool,
    /// Whether the boot told run.sh to stop (SIGINT): at once without a job, else when the grace
    /// period ran out or a second stop signal came. `false`: the runner ended by itself in time.
    pub forwarded: bool,
}

/// How a supervised runner ended and what the boot saw on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub ended: Ended,
    /// Whether the job-started hook ran (checked once the runner ended).
    pub job_started: bool,
    pub stop: Option<Stop>,
}

impl Outcome {
    /// The boot's exit status (contract section E).
    pub fn verdict(self) -> BootExit {
        if let Some(stop) = self.stop.filter(|s| s.forwarded) {
            return if self.job_started || stop.during_job {
                BootExit::JobInterrupted
            } else {
                BootExit::StoppedBeforeJob
            };
        }
        match self.ended {
            Ended::Exited(0) if self.job_started => BootExit::JobFinished,
            // run.sh exits 0 for every listener code but 2, 3 and 4 (which restart it) and 7: a
            // deleted runner (1), a session conflict (5), an unknown code (actions/runner
            // src/Misc/layoutroot/run-helper.sh.template). Only the hook tells a finished job apart.
            Ended::Exited(0) => BootExit::NoJob,
            // run.sh passes 7 on when ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1, which the
            // boot sets for it (run.sh and run-helper.sh.template).
            Ended::Exited(7) => BootExit::VersionDeprecated,
            Ended::Exited(_) | Ended::Killed(_) => BootExit::RunnerFailed,
        }
    }
}

/// Sends SIGINT to run.sh: with RUNNER_MANUALLY_TRAP_SIG it hands SIGINT to the listener's process
/// group, and the listener cancels its job, reports it and exits (actions/runner run.sh,
/// `runWithManualTrap`).
fn stop_runner(pid: i32) {
    // SAFETY: plain syscall; an already-gone runner (ESRCH) is reaped next turn.
    unsafe { libc::kill(pid, libc::SIGINT) };
}

/// Waits for the runner `pid` to end and reaps every other child (orphans adopted by PID 1).
///
/// A stop signal with no job running stops the runner at once. With a job running, the job gets
/// `grace` to finish (an ephemeral runner exits after its one job); then, or at a second stop
/// signal, the runner is stopped. `note` receives one line per event worth logging.
pub fn supervise(
    signals: &Signals,
    pid: i32,
    hook: &JobStartedHook,
    grace: StopGrace,
    mut note: impl FnMut(String),
) -> Outcome {
    let mut stop: Option<Stop> = None;
    let mut deadline: Option<Instant> = None;
    let mut job_noted = false;
    loop {
        let ended = reap(pid);
        if !job_noted && hook.job_started() {
            job_noted = true;
            note("a job started (the runner's job-started hook ran)".to_string());
        }
        if let Some(ended) = ended {
            return Outcome {
                ended,
                job_started: job_noted,
                stop,
            };
        }
        let now = Instant::now();
        if let Some(at) = deadline {
            if now >= at {
                deadline = None;
                if let Some(stop) = stop.as_mut() {
                    stop.forwarded = true;
                }
                note(format!(
                    "the job did not finish within the {} s grace period: stopping the runner \
                     (SIGINT to pid {pid})",
                    grace.seconds()
                ));
                stop_runner(pid);
                continue;
            }
        }
        let wait = deadline.map_or(TICK, |at| (at - now).min(TICK));
        let Some(signal) = signals.wait(wait) else {
            continue;
        };
        if !FORWARDED.contains(&signal) {
            // SIGCHLD: reap at the top of the loop.
            continue;
        }
        let name = signal_name(signal);
        match stop.as_mut() {
            None => {
                let during_job = hook.job_started();
                let forward = !during_job || grace.seconds() == 0;
                stop = Some(Stop {
                    signal,
                    during_job,
                    forwarded: forward,
                });
                if forward {
                    let why = if during_job {
                        "a job is running, no grace period"
                    } else {
                        "no job is running"
                    };
                    note(format!(
                        "{name}: {why}; stopping the runner (SIGINT to pid {pid})"
                    ));
                    stop_runner(pid);
                } else {
                    deadline = Some(Instant::now() + grace.duration());
                    note(format!(
                        "{name}: a job is running; it has {} s to finish before the runner is stopped",
                        grace.seconds()
                    ));
                }
            }
            Some(first) if !first.forwarded => {
                first.forwarded = true;
                deadline = None;
                note(format!(
                    "{name} again: ending the grace period; stopping the runner (SIGINT to pid {pid})"
                ));
                stop_runner(pid);
            }
            Some(_) => note(format!("{name}: the runner is already stopping")),
        }
    }
}

/// Reaps every child that has ended; returns how `runner` ended if it is among them.
fn reap(runner: i32) -> Option<Ended> {
    let mut ended = None;
    loop {
        let mut status = 0;
        // SAFETY: plain syscall with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            // 0: children remain, none ended; -1: no children left (ECHILD) or EINTR.
            if pid < 0
                && ended.is_none()
                && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
            {
                // The runner is not our child any more (cannot happen unless reaped elsewhere).
                return Some(Ended::Exited(BootExit::BootFailed.code()));
            }
            return ended;
        }
        if pid == runner {
            ended = Some(Ended::from_wait_status(status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_are_read() {
        // waitpid status encodings: exit code in bits 8..16, terminating signal in bits 0..7.
        assert_eq!(Ended::from_wait_status(3 << 8), Ended::Exited(3));
        assert_eq!(Ended::from_wait_status(0), Ended::Exited(0));
        assert_eq!(Ended::from_wait_status(libc::SIGTERM), Ended::Killed(15));
    }

    fn outcome(ended: Ended, job_started: bool, stop: Option<Stop>) -> BootExit {
        Outcome {
            ended,
            job_started,
            stop,
        }
        .verdict()
    }

    fn stop(during_job: bool, forwarded: bool) -> Option<Stop> {
        Some(Stop {
            signal: libc::SIGTERM,
            during_job,
            forwarded,
        })
    }

    #[test]
    fn without_a_stop_the_hook_and_run_sh_decide() {
        use Ended::*;
        assert_eq!(outcome(Exited(0), true, None), BootExit::JobFinished);
        assert_eq!(outcome(Exited(0), false, None), BootExit::NoJob);
        assert_eq!(outcome(Exited(7), false, None), BootExit::VersionDeprecated);
        assert_eq!(outcome(Exited(1), false, None), BootExit::RunnerFailed);
        assert_eq!(outcome(Exited(1), true, None), BootExit::RunnerFailed);
        assert_eq!(outcome(Killed(9), true, None), BootExit::RunnerFailed);
    }

    #[test]
    fn a_stop_decides_when_the_boot_stopped_the_runner() {
        use Ended::*;
        // run.sh exits 128 + n after a trapped signal (run.sh, runWithManualTrap).
        assert_eq!(
            outcome(Exited(130), false, stop(false, true)),
            BootExit::StoppedBeforeJob
        );
        assert_eq!(
            outcome(Exited(130), true, stop(true, true)),
            BootExit::JobInterrupted
        );
        // A job that started after the signal (the hook was late) was interrupted too.
        assert_eq!(
            outcome(Exited(130), true, stop(false, true)),
            BootExit::JobInterrupted
        );
        // The job finished within the grace period: as without a stop.
        assert_eq!(
            outcome(Exited(0), true, stop(true, false)),
            BootExit::JobFinished
        );
        assert_eq!(
            outcome(Exited(1), true, stop(true, false)),
            BootExit::RunnerFailed
        );
    }

    #[test]
    fn endings_and_signals_read_well() {
        assert_eq!(
            Ended::Killed(libc::SIGTERM).describe(),
            "the runner was killed by SIGTERM"
        );
        assert_eq!(
            Ended::Exited(0).describe(),
            "the runner exited with status 0"
        );
        assert_eq!(signal_name(libc::SIGINT), "SIGINT");
        assert_eq!(signal_name(64), "signal 64");
    }
}
