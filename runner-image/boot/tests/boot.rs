//! The boot program as ECS runs it: the real binary, a real (moto) KMS on 127.0.0.1, the credential
//! sealed by tasuki's own `KmsSealer` (as `issue-token` seals it), and a fake runner script that
//! records its arguments and the signals it receives.

#[allow(dead_code)]
#[path = "../../../functions/core/tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tasuki_core::adapters::kms::KmsSealer;
use tasuki_core::ports::{CredentialSealer, Sensitive};

const BOOT: &str = env!("CARGO_BIN_EXE_tasuki-boot");
/// Every wait in these tests ends by then.
const PATIENCE: Duration = Duration::from_secs(60);

fn fake_runner() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-runner.sh")
}

/// A credential sealed for `job_id` under a fresh KMS key.
struct Sealed {
    key_id: String,
    ciphertext: String,
    plaintext: String,
}

fn seal(job_id: u64) -> Sealed {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Shaped like GitHub's encoded_jit_config (base64 text), unique per test.
    let plaintext = format!(
        "eyJKSVQiOiJ0YXN1a2ktdGVzdC1{nanos}x{}fQ==",
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (key_id, ciphertext) = runtime.block_on(async {
        let (kms, key_id) = support::kms_key(&support::sdk().await).await;
        let ciphertext = KmsSealer::new(kms, &key_id)
            .seal(job_id, &Sensitive::new(&plaintext))
            .await
            .unwrap();
        (key_id, ciphertext)
    });
    assert!(!ciphertext.contains(&plaintext));
    Sealed {
        key_id,
        ciphertext,
        plaintext,
    }
}

/// What one run of the boot program left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    /// The fake runner's record; `None` when the runner never started.
    record: Option<String>,
}

impl Run {
    fn record_lines(&self) -> Vec<&str> {
        self.record
            .as_deref()
            .expect("the runner should have started")
            .lines()
            .collect()
    }

    fn args(&self) -> Vec<&str> {
        self.record_lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("arg "))
            .collect()
    }

    fn assert_never_shows(&self, secret: &str) {
        assert!(!secret.is_empty());
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the boot program's output shows a secret: {self:?}"
        );
    }

    /// A failure before the runner: exactly one line on stderr, nothing on stdout, no runner.
    fn assert_refused(&self, code: i32, says: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(self.record.is_none(), "the runner started: {self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected: {self:?}");
        assert!(lines[0].starts_with("tasuki-boot: error: "), "{self:?}");
        assert!(lines[0].contains(says), "expected `{says}` in: {self:?}");
    }
}

struct Boot {
    env: Vec<(String, String)>,
    /// Sent to the boot process once the fake runner says `ready`.
    signal_when_ready: Option<i32>,
    /// Sent to the boot process once this (fake KMS) listener got a connection.
    signal_when_connected: Option<(std::net::TcpListener, i32)>,
}

impl Boot {
    /// The task's environment for `job_id` with `sealed`, and the standard AWS variables for moto.
    fn new(job_id: u64, sealed: Option<&Sealed>) -> Self {
        let mut env = vec![
            ("TASUKI_JOB_ID".to_string(), job_id.to_string()),
            ("TASUKI_ATTEMPT".to_string(), "1".to_string()),
            (
                "TASUKI_RUNNER_NAME".to_string(),
                format!("tasuki-{job_id}-1"),
            ),
        ];
        if let Some(sealed) = sealed {
            env.push((
                "TASUKI_JIT_CONFIG_CIPHERTEXT".to_string(),
                sealed.ciphertext.clone(),
            ));
            env.push(("TASUKI_KMS_KEY_ID".to_string(), sealed.key_id.clone()));
        }
        Self {
            env,
            signal_when_ready: None,
            signal_when_connected: None,
        }
    }

    fn with(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self
    }

    fn signal_when_ready(mut self, signal: i32) -> Self {
        self.signal_when_ready = Some(signal);
        self
    }

    fn run(self) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        let mut command = Command::new(BOOT);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("AWS_ENDPOINT_URL", support::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("TASUKI_RUNNER_CMD", fake_runner())
            .env("FAKE_RUNNER_RECORD", &record)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = read_in_background(child.stdout.take().unwrap());
        let stderr = read_in_background(child.stderr.take().unwrap());

        if let Some(signal) = self.signal_when_ready {
            let ready = wait_until(&mut child, &record, || {
                std::fs::read_to_string(&record).is_ok_and(|r| r.lines().any(|l| l == "ready"))
            });
            assert!(ready, "the fake runner never got ready");
            kill(child.id() as i32, signal);
        }
        // Connections to the fake KMS stay open, unanswered, until the boot program has exited.
        let mut held = Vec::new();
        if let Some((listener, signal)) = &self.signal_when_connected {
            listener.set_nonblocking(true).unwrap();
            let connected = wait_until(&mut child, &record, || match listener.accept() {
                Ok((stream, _)) => {
                    held.push(stream);
                    true
                }
                Err(_) => false,
            });
            assert!(connected, "the boot program never called KMS");
            kill(child.id() as i32, *signal);
        }

        let code = wait_for_exit(&mut child, &record);
        drop(held);
        Run {
            code,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            record: std::fs::read_to_string(&record).ok(),
        }
    }
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: plain syscall on a child of this test.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    })
}

/// Polls `ready` until it holds (true), the boot program exits or PATIENCE runs out (false).
fn wait_until(child: &mut Child, record: &Path, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if ready() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if Instant::now() > deadline {
            clean_up(child, record);
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_exit(child: &mut Child, record: &Path) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status
                .code()
                .unwrap_or_else(|| panic!("the boot program died without an exit code: {status}"));
        }
        if Instant::now() > deadline {
            clean_up(child, record);
            panic!("the boot program did not exit within {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After a timeout: kill the boot program and the fake runner it may have started.
fn clean_up(child: &mut Child, record: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(text) = std::fs::read_to_string(record) {
        for pid in text.lines().filter_map(|l| l.strip_prefix("pid ")) {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn decrypts_the_credential_and_starts_the_runner_with_jitconfig_and_passes_on_its_status() {
    let sealed = seal(77);
    let run = Boot::new(77, Some(&sealed))
        .with("FAKE_RUNNER_EXIT", "7")
        .run();
    assert_eq!(run.code, 7, "{run:?}");
    assert_eq!(run.args(), ["--jitconfig", sealed.plaintext.as_str()]);
    assert!(
        run.record_lines().contains(&"ciphertext-env unset"),
        "the runner (and so its jobs) should not inherit the ciphertext: {run:?}"
    );
    assert!(
        run.stderr
            .contains("job 77 attempt 1 (runner tasuki-77-1): credential opened"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("the runner exited with status 7"),
        "{run:?}"
    );
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_runner_that_succeeds_makes_the_boot_program_succeed() {
    let sealed = seal(78);
    let run = Boot::new(78, Some(&sealed)).run();
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.args(), ["--jitconfig", sealed.plaintext.as_str()]);
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn sigterm_to_the_boot_program_reaches_the_runner_and_its_exit_status_is_passed_on() {
    let sealed = seal(79);
    let run = Boot::new(79, Some(&sealed))
        .with("FAKE_RUNNER_MODE", "wait")
        .with("FAKE_RUNNER_SIGNAL_EXIT", "3")
        .signal_when_ready(libc::SIGTERM)
        .run();
    assert_eq!(run.code, 3, "{run:?}");
    let lines = run.record_lines();
    assert!(lines.contains(&"signal TERM"), "{run:?}");
    assert!(!lines.contains(&"timeout"), "{run:?}");
    assert!(
        run.stderr.contains("forwarding SIGTERM to the runner"),
        "{run:?}"
    );
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn sigint_is_forwarded_as_sigint() {
    let sealed = seal(80);
    let run = Boot::new(80, Some(&sealed))
        .with("FAKE_RUNNER_MODE", "wait")
        .signal_when_ready(libc::SIGINT)
        .run();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.record_lines().contains(&"signal INT"), "{run:?}");
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_runner_killed_by_sigterm_makes_the_boot_program_exit_128_plus_15() {
    let sealed = seal(81);
    let run = Boot::new(81, Some(&sealed))
        .with("FAKE_RUNNER_MODE", "die")
        .signal_when_ready(libc::SIGTERM)
        .run();
    assert_eq!(run.code, 143, "{run:?}");
    assert!(
        run.stderr.contains("the runner was killed by SIGTERM"),
        "{run:?}"
    );
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_credential_sealed_for_another_job_is_refused_and_the_runner_never_starts() {
    let sealed = seal(82);
    let run = Boot::new(83, Some(&sealed)).run();
    run.assert_refused(77, "the credential is not for job 83");
    assert!(run.stderr.contains("InvalidCiphertextException"), "{run:?}");
    run.assert_never_shows(&sealed.plaintext);
    run.assert_never_shows(&sealed.ciphertext);
}

#[test]
fn a_missing_credential_fails_clearly_and_starts_nothing() {
    let run = Boot::new(84, None).run();
    run.assert_refused(78, "TASUKI_JIT_CONFIG_CIPHERTEXT is not set");
}

#[test]
fn a_missing_job_id_fails_clearly() {
    let sealed = seal(85);
    let run = Boot::new(85, Some(&sealed)).without("TASUKI_JOB_ID").run();
    run.assert_refused(78, "TASUKI_JOB_ID is not set");
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_ciphertext_that_is_not_base64_fails_clearly_without_echoing_it() {
    let run = Boot::new(86, None)
        .with("TASUKI_JIT_CONFIG_CIPHERTEXT", "not-base64-%%")
        .run();
    run.assert_refused(78, "TASUKI_JIT_CONFIG_CIPHERTEXT is not base64");
    run.assert_never_shows("not-base64-%%");
}

#[test]
fn a_kms_refusal_names_the_error_code() {
    let sealed = seal(87);
    let run = Boot::new(87, Some(&sealed))
        .with("TASUKI_KMS_KEY_ID", "alias/tasuki-no-such-key")
        .run();
    run.assert_refused(
        69,
        "cannot decrypt the credential for job 87: KMS NotFoundException",
    );
    run.assert_never_shows(&sealed.plaintext);
    run.assert_never_shows(&sealed.ciphertext);
}

#[test]
fn an_unreachable_kms_fails_as_unavailable() {
    let sealed = seal(88);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = Boot::new(88, Some(&sealed))
        .with("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{closed}"))
        .run();
    run.assert_refused(
        75,
        "cannot decrypt the credential for job 88: KMS unavailable",
    );
}

#[test]
fn sigterm_while_kms_is_answering_stops_the_boot_without_starting_the_runner() {
    let sealed = seal(89);
    // A KMS that accepts the connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut boot =
        Boot::new(89, Some(&sealed)).with("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"));
    boot.signal_when_connected = Some((listener, libc::SIGTERM));
    let started = Instant::now();
    let run = boot.run();
    run.assert_refused(143, "stopped by SIGTERM before the runner started");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop should not wait for KMS: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_missing_runner_program_fails_clearly() {
    let sealed = seal(90);
    let run = Boot::new(90, Some(&sealed))
        .with("TASUKI_RUNNER_CMD", "/nonexistent/tasuki/run.sh")
        .run();
    run.assert_refused(127, "cannot start the runner /nonexistent/tasuki/run.sh");
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn arguments_are_refused_and_version_answers() {
    let out = Command::new(BOOT).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tasuki-boot "));
    let out = Command::new(BOOT).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tasuki-boot"));
}
