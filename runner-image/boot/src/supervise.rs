//! Running the runner as a child: stop signals forwarded to it, its exit status passed on, and
//! (as PID 1 of the container) every orphan reaped.
//!
//! SIGTERM, SIGINT and SIGCHLD are blocked before any thread starts, so no thread is ever
//! interrupted by them and none is lost: they stay pending until [`Signals::wait`] takes them.
//! The runner starts with an empty signal mask (reset between fork and exec: a blocked mask is
//! inherited) and default dispositions, so it sees SIGTERM/SIGINT as if sent to it directly.

use crate::credential::JitConfig;
use crate::error::{exit, BootError};
use crate::plan::{RunnerCommand, NOT_FOR_THE_RUNNER};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

/// The signals forwarded to the runner: ECS stops a task with SIGTERM (Fargate Spot: then about two
/// minutes before SIGKILL); SIGINT is what a terminal sends.
pub const FORWARDED: [i32; 2] = [libc::SIGTERM, libc::SIGINT];

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

    /// The boot program's own exit code: the runner's, or `128 + n` for a signal, as a shell does.
    pub fn exit_code(self) -> i32 {
        match self {
            Ended::Exited(code) => code,
            Ended::Killed(signal) => 128 + signal,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Ended::Exited(code) => format!("the runner exited with status {code}"),
            Ended::Killed(signal) => format!("the runner was killed by {}", signal_name(signal)),
        }
    }
}

/// Starts `<program> --jitconfig <credential>`; the environment is inherited but for
/// [`NOT_FOR_THE_RUNNER`]. Returns the runner's pid.
pub fn spawn(runner: &RunnerCommand, jit: &JitConfig) -> Result<i32, BootError> {
    let mut command = Command::new(&runner.program);
    command.args(runner.args(jit));
    for name in NOT_FOR_THE_RUNNER {
        command.env_remove(name);
    }
    // The blocked mask is inherited across fork and exec: without this the runner could never
    // receive the signals forwarded to it.
    // SAFETY: runs in the forked child before exec; sigemptyset and sigprocmask are
    // async-signal-safe and touch only the child's own state.
    unsafe {
        command.pre_exec(|| {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match command.spawn() {
        // The child is waited for with waitpid below, not through `Child`, which is dropped.
        Ok(child) => Ok(child.id() as i32),
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                exit::RUNNER_NOT_FOUND
            } else {
                exit::RUNNER_NOT_EXECUTABLE
            };
            // The io::Error's text names the OS error only, never the arguments.
            Err(BootError::Spawn {
                program: runner.program.clone(),
                reason: e.to_string(),
                code,
            })
        }
    }
}

/// Waits for the runner `pid` to end, forwarding every stop signal to it and reaping any other
/// child (orphans adopted by PID 1). `note` receives one line per event worth logging.
pub fn supervise(signals: &Signals, pid: i32, mut note: impl FnMut(String)) -> Ended {
    loop {
        if let Some(ended) = reap(pid) {
            return ended;
        }
        match signals.wait(Duration::from_secs(1)) {
            Some(signal) if FORWARDED.contains(&signal) => {
                note(format!(
                    "forwarding {} to the runner (pid {pid})",
                    signal_name(signal)
                ));
                // SAFETY: plain syscall; an already-gone runner (ESRCH) is reaped next turn.
                unsafe { libc::kill(pid, signal) };
            }
            // SIGCHLD or the one-second tick: reap at the top of the loop.
            _ => {}
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
                return Some(Ended::Exited(exit::SOFTWARE));
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
    fn an_exit_status_is_passed_on_and_a_signal_becomes_128_plus_n() {
        // waitpid status encodings: exit code in bits 8..16, terminating signal in bits 0..7.
        assert_eq!(Ended::from_wait_status(3 << 8), Ended::Exited(3));
        assert_eq!(Ended::from_wait_status(0), Ended::Exited(0));
        assert_eq!(Ended::from_wait_status(libc::SIGTERM), Ended::Killed(15));
        assert_eq!(Ended::Exited(3).exit_code(), 3);
        assert_eq!(Ended::Killed(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Ended::Killed(libc::SIGKILL).exit_code(), 137);
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
