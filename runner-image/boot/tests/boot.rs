//! The boot program as ECS runs it: the real binary, a real (moto) KMS on 127.0.0.1, the credential
//! sealed as `issue-token` seals it (a KMS data key bound to the job, `runner_contract::seal`), and
//! a fake runner (`tests/fixtures/runner`: run.sh, run-helper.sh and a listener) that follows the
//! exit-status rules of actions/runner's run.sh and run-helper.sh.template and records what it saw.

#[allow(dead_code)]
#[path = "../../../functions/core/tests/support/mod.rs"]
mod support;

use base64::Engine;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tasuki_core::domain::ids::JobId;
use tasuki_core::runner_contract::{self, BootExit, DataKey};

const BOOT: &str = env!("CARGO_BIN_EXE_tasuki-boot");
/// Every wait in these tests ends by then.
const PATIENCE: Duration = Duration::from_secs(90);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the runner and its jobs must never inherit (contract D), with a value each run sets.
const TASK_SECRETS: &[(&str, &str)] = &[
    (
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "/v2/credentials/3f1e1c4e-tasuki-test",
    ),
    (
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://169.254.170.23/v1/credentials-tasuki-test",
    ),
    (
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "tasuki-test-auth-token",
    ),
    (
        "ECS_CONTAINER_METADATA_URI",
        "http://169.254.170.2/v3/tasuki-test-metadata",
    ),
    (
        "ECS_CONTAINER_METADATA_URI_V4",
        "http://169.254.170.2/v4/tasuki-test-metadata",
    ),
];

fn runner_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/runner")
}

/// A config shaped like GitHub's `encoded_jit_config` (base64 text), unique per call.
fn small_config() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    B64.encode(format!(
        r#"{{".runner":"tasuki-test-{nanos}-{}"}}"#,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ))
}

/// A JIT config sealed for `job_id` as issue-token seals it: a data key from KMS `GenerateDataKey`
/// (AES_256, encryption context {"tasuki:job-id": job}) under a fresh moto key, and the envelope.
struct Sealed {
    key_id: String,
    sealed: String,
    plaintext: String,
}

fn seal(job_id: u64) -> Sealed {
    seal_config(job_id, small_config())
}

fn seal_config(job_id: u64, plaintext: String) -> Sealed {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (key_id, data_key) = runtime.block_on(async {
        let (kms, key_id) = support::kms_key(&support::sdk().await).await;
        let (context_key, context_value) = runner_contract::encryption_context(JobId::new(job_id));
        let out = kms
            .generate_data_key()
            .key_id(&key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .encryption_context(context_key, context_value)
            .send()
            .await
            .unwrap();
        let data_key = DataKey {
            plaintext: out.plaintext.unwrap().as_ref().try_into().unwrap(),
            wrapped: out.ciphertext_blob.unwrap().into_inner(),
        };
        (key_id, data_key)
    });
    let sealed = runner_contract::seal(JobId::new(job_id), &data_key, &plaintext).unwrap();
    assert!(!sealed.contains(&plaintext));
    Sealed {
        key_id,
        sealed,
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
    /// run.sh's environment, the job's (when the listener ran one), and the config the listener got.
    run_sh_environ: Option<HashMap<String, String>>,
    job_environ: Option<HashMap<String, String>>,
    jitconfig: Option<String>,
    /// What was left in the boot's TMPDIR once it exited.
    tmp_left: Vec<PathBuf>,
    /// From the first signal sent to the boot program to its exit.
    after_signal: Option<Duration>,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.record
            .as_deref()
            .expect("the runner should have started")
            .lines()
            .collect()
    }

    fn has(&self, line: &str) -> bool {
        self.lines().contains(&line)
    }

    fn run_sh_args(&self) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix("run.sh arg "))
            .collect()
    }

    fn assert_exit(&self, exit: BootExit) {
        assert_eq!(self.code, exit.code(), "expected {exit:?}: {self:#?}");
        assert!(
            self.stderr
                .contains(&format!("exit {}: {}", exit.code(), exit.reason())),
            "{self:#?}"
        );
    }

    fn assert_never_shows(&self, secret: &str) {
        assert!(!secret.is_empty());
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the boot program's output shows a secret: {self:#?}"
        );
    }

    /// A failure before the runner: exactly one line on stderr, nothing on stdout, no runner.
    fn assert_refused(&self, exit: BootExit, says: &str) {
        assert_eq!(self.code, exit.code(), "expected {exit:?}: {self:#?}");
        assert!(self.record.is_none(), "the runner started: {self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line expected: {self:#?}");
        assert!(lines[0].starts_with("tasuki-boot: error: "), "{self:#?}");
        assert!(lines[0].contains(says), "expected `{says}` in: {self:#?}");
    }
}

struct Boot {
    env: Vec<(String, String)>,
    /// Sent to the boot process, 300 ms apart, once the fake runner's record has this line.
    signals_after: Option<(&'static str, Vec<i32>)>,
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
                "TASUKI_JIT_CONFIG_SEALED".to_string(),
                sealed.sealed.clone(),
            ));
            env.push(("TASUKI_KMS_KEY_ID".to_string(), sealed.key_id.clone()));
        }
        Self {
            env,
            signals_after: None,
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

    /// The listener runs a job that takes `seconds`.
    fn job(self, seconds: u32) -> Self {
        self.with("FAKE_LISTENER_JOB_SECONDS", &seconds.to_string())
    }

    /// The listener's successive exit codes (run.sh restarts it after 2, 3 and 4).
    fn listener_exits(self, codes: &str) -> Self {
        self.with("FAKE_LISTENER_EXITS", codes)
    }

    fn signals_after(mut self, line: &'static str, signals: &[i32]) -> Self {
        self.signals_after = Some((line, signals.to_vec()));
        self
    }

    fn run(self) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let record = dir.path().join("record");
        let mut command = Command::new(BOOT);
        command
            .env_clear()
            .current_dir(dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("TMPDIR", &tmp)
            .env("AWS_ENDPOINT_URL", support::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUNNER_DIR", runner_dir())
            .env("FAKE_RUNNER_RECORD", &record)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = read_in_background(child.stdout.take().unwrap());
        let stderr = read_in_background(child.stderr.take().unwrap());

        let mut signalled = None;
        if let Some((line, signals)) = &self.signals_after {
            let ready = wait_until(&mut child, &record, || {
                std::fs::read_to_string(&record).is_ok_and(|r| r.lines().any(|l| l == *line))
            });
            assert!(ready, "the fake runner never recorded `{line}`");
            signalled = Some(Instant::now());
            for (i, signal) in signals.iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                kill(child.id() as i32, *signal);
            }
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
            signalled = Some(Instant::now());
            kill(child.id() as i32, *signal);
        }

        let code = wait_for_exit(&mut child, &record);
        let after_signal = signalled.map(|at| at.elapsed());
        drop(held);
        let read = |suffix: &str| std::fs::read(format!("{}{suffix}", record.display())).ok();
        Run {
            code,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
            record: std::fs::read_to_string(&record).ok(),
            run_sh_environ: read(".run-sh.environ").map(|e| environ(&e)),
            job_environ: read(".job.environ").map(|e| environ(&e)),
            jitconfig: read(".jitconfig").map(|c| String::from_utf8(c).unwrap()),
            tmp_left: std::fs::read_dir(&tmp)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect(),
            after_signal,
        }
    }
}

/// `env -0` output as a map.
fn environ(bytes: &[u8]) -> HashMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (name, value) = entry.split_once('=').unwrap_or((&entry, ""));
            (name.to_string(), value.to_string())
        })
        .collect()
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

/// After a timeout: kill the boot program and the fake run.sh it may have started.
fn clean_up(child: &mut Child, record: &Path) {
    let _ = child.kill();
    let _ = child.wait();
    if let Ok(text) = std::fs::read_to_string(record) {
        for pid in text.lines().filter_map(|l| l.strip_prefix("run.sh pid ")) {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

// ---- outcomes and exit statuses (issue 8, defect 10) ------------------------------------------

#[test]
fn a_job_that_ran_and_finished_exits_0() {
    let sealed = seal(77);
    let run = Boot::new(77, Some(&sealed)).job(0).run();
    run.assert_exit(BootExit::JobFinished);
    assert!(run.has("hook exit 0"), "{run:#?}");
    assert!(run.has("job finished"), "{run:#?}");
    assert!(run.has("run.sh exit 0"), "{run:#?}");
    assert_eq!(run.jitconfig.as_deref(), Some(sealed.plaintext.as_str()));
    assert!(
        run.stderr
            .contains("job 77 attempt 1 (runner tasuki-77-1): credential opened"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("a job started"), "{run:#?}");
    assert!(
        run.tmp_left.is_empty(),
        "the hook's directory is removed: {run:#?}"
    );
    run.assert_never_shows(&sealed.plaintext);
}

/// Fails on the boot before this change, which passed run.sh's 0 on: run.sh exits 0 when the
/// listener ends without a job — runner deleted on GitHub (1), session conflict (5), or an unknown
/// code — exactly as after a finished job (actions/runner src/Misc/layoutroot/run-helper.sh.template).
#[test]
fn run_sh_exiting_0_without_a_job_is_80_not_0() {
    let sealed = seal(78);
    for exits in ["1", "5", "0", "6"] {
        let run = Boot::new(78, Some(&sealed)).listener_exits(exits).run();
        run.assert_exit(BootExit::NoJob);
        assert!(run.has("run.sh exit 0"), "listener {exits}: {run:#?}");
        assert!(!run.has("job started"), "{run:#?}");
    }
}

#[test]
fn a_deprecated_runner_version_is_81_even_if_the_image_forgot_the_variable() {
    let sealed = seal(79);
    let run = Boot::new(79, Some(&sealed))
        .without("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE")
        .listener_exits("7")
        .run();
    run.assert_exit(BootExit::VersionDeprecated);
    assert!(run.has("run.sh exit 7"), "{run:#?}");
    assert!(run.stderr.contains("RUNNER_VERSION"), "{run:#?}");
}

#[test]
fn run_sh_restarts_the_listener_after_2_3_and_4_and_the_outcome_is_the_last_runs() {
    let sealed = seal(80);
    let run = Boot::new(80, Some(&sealed))
        .with("FAKE_RUNNER_RETRY_SECONDS", "0")
        .listener_exits("2 3 4 0")
        .job(0)
        .run();
    run.assert_exit(BootExit::JobFinished);
    assert!(run.has("listener run 4"), "{run:#?}");
    let run = Boot::new(80, Some(&sealed))
        .with("FAKE_RUNNER_RETRY_SECONDS", "0")
        .listener_exits("3 1")
        .run();
    run.assert_exit(BootExit::NoJob);
}

#[test]
fn a_runner_that_fails_otherwise_is_84() {
    let sealed = seal(81);
    let run = Boot::new(81, Some(&sealed))
        .with("TASUKI_RUNNER_CMD", "/bin/false")
        .run();
    assert_eq!(run.code, BootExit::RunnerFailed.code(), "{run:#?}");
    assert!(
        run.stderr
            .contains("the runner exited with status 1; exit 84"),
        "{run:#?}"
    );
}

// ---- stop signals and the grace period (issue 8, defect 9) -------------------------------------

#[test]
fn sigterm_without_a_job_stops_the_runner_at_once_and_is_83() {
    let sealed = seal(82);
    let run = Boot::new(82, Some(&sealed))
        .with("FAKE_LISTENER_IDLE_SECONDS", "60")
        .signals_after("listening", &[libc::SIGTERM])
        .run();
    run.assert_exit(BootExit::StoppedBeforeJob);
    // The boot hands run.sh SIGINT; run.sh hands it to the listener and exits 128 + 2.
    assert!(run.has("run.sh signal INT"), "{run:#?}");
    assert!(run.has("listener cancelled"), "{run:#?}");
    assert!(run.has("run.sh exit 130"), "{run:#?}");
    assert!(
        run.after_signal.unwrap() < Duration::from_secs(10),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("SIGTERM: no job is running"),
        "{run:#?}"
    );
}

/// Fails on the boot before this change, which forwarded SIGTERM at once and so cancelled the job.
#[test]
fn sigterm_during_a_job_waits_for_it_and_a_job_that_finishes_in_time_exits_0() {
    let sealed = seal(83);
    let run = Boot::new(83, Some(&sealed))
        .with("TASUKI_STOP_GRACE_SECONDS", "30")
        .job(2)
        .signals_after("job started", &[libc::SIGTERM])
        .run();
    run.assert_exit(BootExit::JobFinished);
    assert!(run.has("job finished"), "{run:#?}");
    assert!(!run.has("job cancelled"), "{run:#?}");
    assert!(
        !run.lines().iter().any(|l| l.starts_with("run.sh signal")),
        "run.sh got no signal: {run:#?}"
    );
    assert!(
        run.stderr
            .contains("SIGTERM: a job is running; it has 30 s to finish"),
        "{run:#?}"
    );
}

#[test]
fn a_job_still_running_when_the_grace_period_ends_is_stopped_and_is_82() {
    let sealed = seal(84);
    let run = Boot::new(84, Some(&sealed))
        .with("TASUKI_STOP_GRACE_SECONDS", "2")
        .job(60)
        .signals_after("job started", &[libc::SIGTERM])
        .run();
    run.assert_exit(BootExit::JobInterrupted);
    assert!(run.has("run.sh signal INT"), "{run:#?}");
    assert!(run.has("job cancelled"), "{run:#?}");
    let waited = run.after_signal.unwrap();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    assert!(
        run.stderr
            .contains("did not finish within the 2 s grace period"),
        "{run:#?}"
    );
}

#[test]
fn a_second_stop_signal_ends_the_grace_period() {
    let sealed = seal(85);
    let run = Boot::new(85, Some(&sealed))
        .job(60)
        .signals_after("job started", &[libc::SIGTERM, libc::SIGINT])
        .run();
    run.assert_exit(BootExit::JobInterrupted);
    assert!(run.has("job cancelled"), "{run:#?}");
    assert!(
        run.after_signal.unwrap() < Duration::from_secs(15),
        "{run:#?}"
    );
    assert!(run.stderr.contains("SIGINT again"), "{run:#?}");
}

#[test]
fn with_no_grace_period_a_running_job_is_stopped_at_once() {
    let sealed = seal(86);
    let run = Boot::new(86, Some(&sealed))
        .with("TASUKI_STOP_GRACE_SECONDS", "0")
        .job(60)
        .signals_after("job started", &[libc::SIGINT])
        .run();
    run.assert_exit(BootExit::JobInterrupted);
    assert!(
        run.after_signal.unwrap() < Duration::from_secs(10),
        "{run:#?}"
    );
}

#[test]
fn a_grace_period_out_of_range_is_refused() {
    let sealed = seal(87);
    let run = Boot::new(87, Some(&sealed))
        .with("TASUKI_STOP_GRACE_SECONDS", "120")
        .run();
    run.assert_refused(
        BootExit::MissingCredential,
        "TASUKI_STOP_GRACE_SECONDS is not a whole number of seconds from 0 to 110",
    );
}

// ---- what the runner and its job get (issue 8, defect 11) --------------------------------------

/// Fails on the boot before this change, which passed `--jitconfig <config>` in run.sh's argv and
/// let the task's credential and metadata variables through.
#[test]
fn the_config_travels_in_the_environment_and_no_task_credential_reaches_the_runner_or_the_job() {
    let sealed = seal(88);
    let mut boot = Boot::new(88, Some(&sealed)).job(0);
    for (name, value) in TASK_SECRETS {
        boot = boot.with(name, value);
    }
    let run = boot.run();
    run.assert_exit(BootExit::JobFinished);
    assert!(
        run.run_sh_args().is_empty(),
        "run.sh has no arguments: {run:#?}"
    );
    let run_sh = run.run_sh_environ.as_ref().unwrap();
    assert_eq!(
        run_sh.get("ACTIONS_RUNNER_INPUT_JITCONFIG"),
        Some(&sealed.plaintext)
    );
    assert_eq!(
        run_sh.get("RUNNER_MANUALLY_TRAP_SIG").map(String::as_str),
        Some("1")
    );
    let job = run.job_environ.as_ref().unwrap();
    for (what, environ) in [("run.sh", run_sh), ("the job", job)] {
        let mut forbidden: Vec<&str> = TASK_SECRETS.iter().map(|(name, _)| *name).collect();
        forbidden.extend([
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "TASUKI_JIT_CONFIG_SEALED",
            "TASUKI_KMS_KEY_ID",
        ]);
        for name in forbidden {
            assert!(!environ.contains_key(name), "{what} inherited {name}");
        }
        for (name, value) in environ {
            assert!(!value.contains(&sealed.sealed), "{what}: {name}");
            for (_, secret) in TASK_SECRETS {
                assert!(!value.contains(secret), "{what}: {name}");
            }
        }
    }
    // The listener removed it before the job: only run.sh (and run-helper.sh) ever hold it.
    assert!(
        !job.contains_key("ACTIONS_RUNNER_INPUT_JITCONFIG"),
        "{job:?}"
    );
    assert!(
        !job.values().any(|v| v.contains(&sealed.plaintext)),
        "the job's environment shows the config"
    );
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_job_started_hook_the_image_set_still_runs_after_tasukis() {
    let sealed = seal(89);
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs.sh");
    let proof = dir.path().join("theirs-ran");
    std::fs::write(&theirs, format!(": >'{}'\n", proof.display())).unwrap();
    let run = Boot::new(89, Some(&sealed))
        .with("ACTIONS_RUNNER_HOOK_JOB_STARTED", theirs.to_str().unwrap())
        .job(0)
        .run();
    run.assert_exit(BootExit::JobFinished);
    assert!(proof.exists(), "{run:#?}");
}

// ---- opening the credential ---------------------------------------------------------------------

/// A 2048-bit RSA key's parameters as .NET serialises them (big-endian, fixed lengths): from a fresh
/// key's PKCS#8 DER (RFC 5208 PrivateKeyInfo holding an RFC 8017 RSAPrivateKey).
fn rsa_params_2048() -> serde_json::Value {
    use aws_lc_rs::encoding::AsDer;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = key.as_der().unwrap();
    // DER: tag, length (short or long form), content.
    fn tlv(data: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (data[0], data[1] as usize);
        let (len, start) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            let len = data[2..2 + n]
                .iter()
                .fold(0usize, |a, b| a << 8 | *b as usize);
            (len, 2 + n)
        };
        (tag, &data[start..start + len], &data[start + len..])
    }
    let (_, info, _) = tlv(der.as_ref()); // PrivateKeyInfo
    let (_, _, rest) = tlv(info); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, octets, _) = tlv(rest); // privateKey OCTET STRING
    assert_eq!(tag, 0x04);
    let (_, mut fields, _) = tlv(octets); // RSAPrivateKey
    let mut ints = Vec::new();
    while !fields.is_empty() {
        let (tag, value, rest) = tlv(fields);
        assert_eq!(tag, 0x02);
        ints.push(value);
        fields = rest;
    }
    let be = |int: &[u8], len: usize| {
        let digits: Vec<u8> = int.iter().copied().skip_while(|b| *b == 0).collect();
        let mut out = vec![0u8; len - digits.len()];
        out.extend(digits);
        B64.encode(out)
    };
    // version, n, e, d, p, q, dp, dq, qinv
    serde_json::json!({
        "d": be(ints[3], 256), "dp": be(ints[6], 128), "dq": be(ints[7], 128),
        "exponent": be(ints[2], 3), "inverseQ": be(ints[8], 128), "modulus": be(ints[1], 256),
        "p": be(ints[4], 128), "q": be(ints[5], 128),
    })
}

/// GitHub's `encoded_jit_config`: base64 of a JSON object mapping the runner's files to their
/// base64 (actions/runner src/Runner.Listener/Runner.cs, GetJitConfig), the files as the runner
/// writes them (.runner: RunnerSettings; .credentials: OAuth CredentialData;
/// .credentials_rsaparams: RSAParametersSerializable), like tests/harness/github_mock.py.
fn real_size_config(job_id: u64) -> String {
    let pretty = |v: serde_json::Value| B64.encode(serde_json::to_string_pretty(&v).unwrap());
    let runner = serde_json::json!({
        "agentId": 7_300_000 + job_id, "agentName": format!("tasuki-{job_id}-1"), "poolId": 1,
        "poolName": "Default", "ephemeral": true,
        "serverUrl": "https://pipelinesghubeus21.actions.githubusercontent.com/Zq3yLnN0T2bWx8sYdK5mQvR4pE1aHcJfUo9iGtB6wXe7rVlS2k/",
        "gitHubUrl": "https://github.com/tasuki-test", "workFolder": "_work", "useV2Flow": true,
        "serverUrlV2": "https://broker.actions.githubusercontent.com/",
    });
    let credentials = serde_json::json!({
        "scheme": "OAuth",
        "data": {
            "clientId": "5d1b9c4e-7a8f-4e21-9a3b-0c6d2e8f1a47",
            "authorizationUrl": "https://vstoken.actions.githubusercontent.com/_apis/oauth2/token/0f3c5a9e-2b7d-4c18-8e6a-91d4b2c7f05e",
            "requireFipsCryptography": "True",
        },
    });
    let files = serde_json::json!({
        ".runner": pretty(runner),
        ".credentials": pretty(credentials),
        ".credentials_rsaparams": pretty(rsa_params_2048()),
    });
    B64.encode(files.to_string())
}

/// KMS Encrypt takes at most 4 096 bytes of plaintext; GitHub's config is larger (issue 8, defect 3).
#[test]
fn a_real_size_jit_config_with_a_2048_bit_key_round_trips() {
    let config = real_size_config(90);
    assert!(
        (4000..5500).contains(&config.len()),
        "GitHub's is about 4.2 KB: {}",
        config.len()
    );
    let sealed = seal_config(90, config.clone());
    let run = Boot::new(90, Some(&sealed)).job(0).run();
    run.assert_exit(BootExit::JobFinished);
    assert_eq!(run.jitconfig.as_deref(), Some(config.as_str()));
    run.assert_never_shows(&config);
}

#[test]
fn a_credential_sealed_for_another_job_is_refused_and_the_runner_never_starts() {
    let sealed = seal(91);
    let run = Boot::new(92, Some(&sealed)).run();
    run.assert_refused(BootExit::WrongJob, "the credential is not for job 92");
    assert!(
        run.stderr.contains("InvalidCiphertextException"),
        "{run:#?}"
    );
    run.assert_never_shows(&sealed.plaintext);
    run.assert_never_shows(&sealed.sealed);
}

#[test]
fn a_missing_credential_fails_clearly_and_starts_nothing() {
    let run = Boot::new(93, None).run();
    run.assert_refused(
        BootExit::MissingCredential,
        "TASUKI_JIT_CONFIG_SEALED is not set",
    );
}

#[test]
fn a_missing_job_id_fails_clearly() {
    let sealed = seal(94);
    let run = Boot::new(94, Some(&sealed)).without("TASUKI_JOB_ID").run();
    run.assert_refused(BootExit::MissingCredential, "TASUKI_JOB_ID is not set");
    run.assert_never_shows(&sealed.plaintext);
}

#[test]
fn a_sealed_config_that_is_not_an_envelope_fails_clearly_without_echoing_it() {
    let run = Boot::new(95, None)
        .with("TASUKI_JIT_CONFIG_SEALED", "not-base64-%%")
        .run();
    run.assert_refused(
        BootExit::MissingCredential,
        "TASUKI_JIT_CONFIG_SEALED is not base64",
    );
    run.assert_never_shows("not-base64-%%");
}

#[test]
fn a_kms_refusal_names_the_error_code() {
    let sealed = seal(96);
    let run = Boot::new(96, Some(&sealed))
        .with("TASUKI_KMS_KEY_ID", "alias/tasuki-no-such-key")
        .run();
    run.assert_refused(
        BootExit::KmsRefused,
        "cannot decrypt the credential for job 96: KMS NotFoundException",
    );
    run.assert_never_shows(&sealed.plaintext);
    run.assert_never_shows(&sealed.sealed);
}

#[test]
fn an_unreachable_kms_fails_as_unavailable() {
    let sealed = seal(97);
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = Boot::new(97, Some(&sealed))
        .with("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{closed}"))
        .run();
    run.assert_refused(
        BootExit::KmsUnavailable,
        "cannot decrypt the credential for job 97: KMS unavailable",
    );
}

#[test]
fn sigterm_while_kms_is_answering_stops_the_boot_without_starting_the_runner() {
    let sealed = seal(98);
    // A KMS that accepts the connection and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut boot =
        Boot::new(98, Some(&sealed)).with("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"));
    boot.signal_when_connected = Some((listener, libc::SIGTERM));
    let run = boot.run();
    run.assert_refused(
        BootExit::StoppedBeforeJob,
        "stopped by SIGTERM before the runner started",
    );
    assert!(
        run.after_signal.unwrap() < Duration::from_secs(10),
        "the stop should not wait for KMS: {run:#?}"
    );
}

#[test]
fn a_missing_runner_program_fails_clearly() {
    let sealed = seal(99);
    let run = Boot::new(99, Some(&sealed))
        .with("TASUKI_RUNNER_CMD", "/nonexistent/tasuki/run.sh")
        .run();
    run.assert_refused(
        BootExit::RunnerNotFound,
        "cannot start the runner /nonexistent/tasuki/run.sh",
    );
    run.assert_never_shows(&sealed.plaintext);
}

// ---- the job's grant not yet visible: AccessDeniedException, retried --------------------------

/// A KMS endpoint on 127.0.0.1 that answers Decrypt with AccessDeniedException `deny` times, then
/// with `data_key`. Wire format: AWS JSON 1.1 (`X-Amz-Target: TrentService.Decrypt`); the error is
/// KMS's common AccessDeniedException, HTTP 400
/// (<https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html>), the answer
/// `{KeyId, Plaintext, EncryptionAlgorithm}` (<https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html>).
struct DenyingKms {
    url: String,
    decrypts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
}

fn denying_kms(deny: usize, data_key: [u8; 32]) -> DenyingKms {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let decrypts = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (decrypts.clone(), requests.clone());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (count, seen) = (count.clone(), seen.clone());
            std::thread::spawn(move || serve(stream, deny, data_key, count, seen));
        }
    });
    DenyingKms {
        url,
        decrypts,
        requests,
    }
}

fn serve(
    mut stream: std::net::TcpStream,
    deny: usize,
    data_key: [u8; 32],
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<serde_json::Value>>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buffer = Vec::new();
    // One request after another on a kept-alive connection, until the client closes it.
    for _ in 0..1000 {
        let head_end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: serde_json::Value =
            serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap();
        buffer.drain(..head_end + length);
        assert!(
            head.contains("x-amz-target: trentservice.decrypt"),
            "{head}"
        );
        seen.lock().unwrap().push(body);
        let n = count.fetch_add(1, Ordering::SeqCst);
        let (status, answer) = if n < deny {
            (
                "400 Bad Request",
                serde_json::json!({
                    "__type": "AccessDeniedException",
                    "message": "User: arn:aws:sts::123456789012:assumed-role/tasuki-runner/task is not authorized to perform: kms:Decrypt on this resource because no resource-based policy allows the kms:Decrypt action",
                }),
            )
        } else {
            (
                "200 OK",
                serde_json::json!({
                    "KeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                    "Plaintext": B64.encode(data_key),
                    "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                }),
            )
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-requestid: tasuki-test\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn sealed_with_local_key(job_id: u64, data_key: [u8; 32]) -> Sealed {
    let plaintext = small_config();
    let key = DataKey {
        plaintext: data_key,
        wrapped: b"wrapped by a KMS key the test does not have".to_vec(),
    };
    Sealed {
        key_id: "alias/tasuki-runner".into(),
        sealed: runner_contract::seal(JobId::new(job_id), &key, &plaintext).unwrap(),
        plaintext,
    }
}

#[test]
fn access_denied_while_the_jobs_grant_propagates_is_retried() {
    let data_key = [0x5a; 32];
    let sealed = sealed_with_local_key(100, data_key);
    let kms = denying_kms(3, data_key);
    let run = Boot::new(100, Some(&sealed))
        .with("AWS_ENDPOINT_URL", &kms.url)
        .job(0)
        .run();
    run.assert_exit(BootExit::JobFinished);
    assert_eq!(kms.decrypts.load(Ordering::SeqCst), 4);
    assert_eq!(run.jitconfig.as_deref(), Some(sealed.plaintext.as_str()));
    assert_eq!(
        run.stderr
            .matches("KMS AccessDeniedException for job 100")
            .count(),
        3,
        "{run:#?}"
    );
    // Every attempt names the job's encryption context and the key.
    for request in kms.requests.lock().unwrap().iter() {
        assert_eq!(request["EncryptionContext"]["tasuki:job-id"], "100");
        assert_eq!(request["KeyId"], "alias/tasuki-runner");
    }
}

#[test]
fn access_denied_for_30_seconds_is_a_refusal() {
    let data_key = [0x6b; 32];
    let sealed = sealed_with_local_key(101, data_key);
    let kms = denying_kms(usize::MAX, data_key);
    let started = Instant::now();
    let run = Boot::new(101, Some(&sealed))
        .with("AWS_ENDPOINT_URL", &kms.url)
        .run();
    let took = started.elapsed();
    assert_eq!(run.code, BootExit::KmsRefused.code(), "{run:#?}");
    assert!(run.record.is_none(), "{run:#?}");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with(
            "tasuki-boot: error: cannot decrypt the credential for job 101: KMS AccessDeniedException"
        ),
        "{run:#?}"
    );
    let attempts = kms.decrypts.load(Ordering::SeqCst);
    assert!((8..=15).contains(&attempts), "{attempts} attempts");
    assert!(
        took >= Duration::from_secs(25) && took < Duration::from_secs(45),
        "{took:?}"
    );
}

#[test]
fn arguments_are_refused_and_version_answers() {
    let out = Command::new(BOOT).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tasuki-boot "));
    let out = Command::new(BOOT).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(BootExit::Usage.code()));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: tasuki-boot"));
}

// ---- the task's usage, sampled and stored at exit (issue 11) ------------------------------------

/// A fake ECS task metadata endpoint v4 on 127.0.0.1. `/task` answers the task metadata (Limits in
/// vCPUs and MiB, "Amazon ECS task metadata v4 JSON response for tasks on Fargate",
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate-response.html>);
/// `/task/stats` answers the next of `stats` (then the last again): a map from Docker id to
/// Docker's stats object, `null` for a container not sampled yet
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-metadata-endpoint-v4-fargate.html>),
/// chunked as Go's net/http sends a large body. `stats` empty: every request gets a 500.
struct FakeMetadata {
    uri: String,
    stats_served: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn fake_metadata(task: &'static str, stats: Vec<String>) -> FakeMetadata {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!(
        "http://{}/v4/3d1f891cded94dc795608466cce8ddcf-464223573",
        listener.local_addr().unwrap()
    );
    let stats_served = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (stats_served.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let head = String::from_utf8_lossy(&head);
            let path = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let answer = if stats.is_empty() {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_string()
            } else if path.ends_with("/task/stats") {
                let n = served.fetch_add(1, Ordering::SeqCst);
                let body = &stats[n.min(stats.len() - 1)];
                let (a, b) = body.split_at(body.len() / 2);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            } else if path.ends_with("/task") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{task}",
                    task.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    FakeMetadata {
        uri,
        stats_served,
        requests,
    }
}

/// Task metadata shaped like the Fargate v4 "Example task metadata response", a 2 vCPU / 4 GiB task
/// of the docker variant's two containers.
const TASK_METADATA: &str = r#"{
  "Cluster": "arn:aws:ecs:us-west-2:111122223333:cluster/default",
  "TaskARN": "arn:aws:ecs:us-west-2:111122223333:task/default/3d1f891cded94dc795608466cce8ddcf",
  "Family": "tasuki-runner-x64",
  "Revision": "3",
  "DesiredStatus": "RUNNING",
  "KnownStatus": "RUNNING",
  "Limits": {"CPU": 2, "Memory": 4096},
  "PullStartedAt": "2020-10-08T20:47:16.053330955Z",
  "PullStoppedAt": "2020-10-08T20:47:19.592684631Z",
  "AvailabilityZone": "us-west-2a",
  "Containers": [
    {"DockerId": "3d1f891cded94dc795608466cce8ddcf-464223573", "Name": "runner", "KnownStatus": "RUNNING",
     "Limits": {"CPU": 2}, "Type": "NORMAL"},
    {"DockerId": "3d1f891cded94dc795608466cce8ddcf-2886410366", "Name": "dind", "KnownStatus": "RUNNING",
     "Limits": {"CPU": 2}, "Type": "NORMAL"}
  ],
  "LaunchType": "FARGATE",
  "ClockDrift": {"ClockErrorBound": 0.5, "ReferenceTimestamp": "2021-09-07T16:57:44Z", "ClockSynchronizationStatus": "SYNCHRONIZED"}
}"#;

/// One container's Docker stats object: CPU counters in seconds, memory `usage` and the page cache
/// under the cgroup v1 (`total_inactive_file`) or v2 (`inactive_file`) key, in MiB.
fn docker_stats(
    name: &str,
    cpu_s: f64,
    system_s: f64,
    usage_mib: u64,
    cache: (&str, u64),
) -> String {
    const MIB: u64 = 1024 * 1024;
    serde_json::json!({
        "read": "2020-10-08T21:24:44.938937019Z",
        "preread": "2020-10-08T21:24:39.938633969Z",
        "pids_stats": {},
        "num_procs": 0,
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": (cpu_s * 1e9) as u64,
                "percpu_usage": [(cpu_s * 1e9) as u64, 0],
                "usage_in_kernelmode": 10_000_000,
                "usage_in_usermode": 20_000_000
            },
            "system_cpu_usage": (system_s * 1e9) as u64,
            "online_cpus": 2,
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
            "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
        },
        "memory_stats": {
            "usage": usage_mib * MIB,
            "max_usage": usage_mib * MIB,
            "stats": {cache.0: cache.1 * MIB, "rss": 1024},
            "limit": 9223372036854771712u64
        },
        "name": name,
        "id": "3d1f891cded94dc795608466cce8ddcf-464223573",
        "networks": {"eth1": {"rx_bytes": 1000, "tx_bytes": 1000}}
    })
    .to_string()
}

fn task_stats(runner: String, dind: Option<String>) -> String {
    format!(
        r#"{{"3d1f891cded94dc795608466cce8ddcf-464223573": {runner}, "3d1f891cded94dc795608466cce8ddcf-2886410366": {}}}"#,
        dind.unwrap_or_else(|| "null".into())
    )
}

/// The usage item of `job_id`'s attempt 1, if any.
fn usage_item(
    table: &str,
    job_id: u64,
) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        aws_sdk_dynamodb::Client::new(&support::sdk().await)
            .get_item()
            .table_name(table)
            .key("pk", AttributeValue::S(format!("USAGE#{job_id}")))
            .key("sk", AttributeValue::S("USAGE#0001".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    })
}

fn number(item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>, name: &str) -> f64 {
    item[name].as_n().unwrap().parse().unwrap()
}

fn lifecycle_table() -> String {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { support::table(&support::sdk().await).await })
}

fn with_usage(boot: Boot, table: &str, metadata: &FakeMetadata) -> Boot {
    boot.with("TASUKI_TABLE", table)
        .with("TASUKI_RETENTION_DAYS", "30")
        .with("ECS_CONTAINER_METADATA_URI_V4", &metadata.uri)
}

#[test]
fn the_tasks_usage_over_the_job_is_stored_with_averages_and_peaks_summed_over_its_containers() {
    let v1 = ("total_inactive_file", 100);
    let v2 = ("inactive_file", 100);
    // Readings 5 s apart on 2 CPUs (the host counter grows 10 s per 5 s):
    // 0 s: runner only (dind not sampled yet: null), 300 MiB without cache;
    // 5 s: runner +5 s CPU → 1.0 vCPU (dind has nothing to compare), 1024 + 200 MiB;
    // 10 s: runner +2.5 s, dind +5 s → 0.5 + 1.0 = 1.5 vCPU, 500 + 300 MiB.
    let stats = vec![
        task_stats(docker_stats("runner", 0.5, 100.0, 400, v1), None),
        task_stats(
            docker_stats("runner", 5.5, 110.0, 1124, v2),
            Some(docker_stats("dind", 1.0, 110.0, 300, v2)),
        ),
        task_stats(
            docker_stats("runner", 8.0, 120.0, 600, v2),
            Some(docker_stats("dind", 6.0, 120.0, 400, v2)),
        ),
    ];
    let metadata = fake_metadata(TASK_METADATA, stats);
    let table = lifecycle_table();
    let sealed = seal(120);
    let started = Instant::now();
    // Readings at about 0, 5 and 10 s; the runner ends at about 12 s.
    let run = with_usage(Boot::new(120, Some(&sealed)).job(12), &table, &metadata).run();
    run.assert_exit(BootExit::JobFinished);
    assert!(started.elapsed() < Duration::from_secs(30), "{run:#?}");
    assert_eq!(metadata.stats_served.load(Ordering::SeqCst), 3, "{run:#?}");
    let item = usage_item(&table, 120).unwrap_or_else(|| panic!("no usage item: {run:#?}"));
    assert_eq!(item["pk"].as_s().unwrap(), "USAGE#120");
    assert_eq!(number(&item, "attempt"), 1.0);
    assert_eq!(number(&item, "samples"), 3.0);
    assert_eq!(number(&item, "seconds"), 10.0);
    assert_eq!(number(&item, "cpu_peak_vcpu"), 1.5);
    // Weighted by the measured time between readings: about (1.0 × 5 + 1.5 × 5) / 10.
    assert!(
        (number(&item, "cpu_avg_vcpu") - 1.25).abs() < 0.02,
        "{item:?}"
    );
    assert_eq!(number(&item, "memory_peak_mib"), 1224.0);
    assert_eq!(
        number(&item, "memory_avg_mib"),
        ((300.0f64 + 1224.0 + 800.0) / 3.0).round()
    );
    assert_eq!(number(&item, "cpu_limit_vcpu"), 2.0);
    assert_eq!(number(&item, "memory_limit_mib"), 4096.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let expires = number(&item, "expires_at");
    assert!(
        (expires - (now + 30.0 * 86_400.0)).abs() < 120.0,
        "{expires}"
    );
    assert!(
        run.stderr.contains("usage: CPU avg 1.2")
            && run.stderr.contains("stored as USAGE#120 USAGE#0001"),
        "{run:#?}"
    );
    // The exit line stays the last.
    assert!(
        run.stderr.lines().last().unwrap().contains("exit 0: "),
        "{run:#?}"
    );
}

/// No item rather than an empty one: a usage without readings would read as a job that used
/// nothing, and push the advice towards a smaller size.
#[test]
fn a_metadata_endpoint_that_answers_500_changes_nothing_and_stores_nothing() {
    let metadata = fake_metadata(TASK_METADATA, Vec::new());
    let table = lifecycle_table();
    let sealed = seal(121);
    let run = with_usage(Boot::new(121, Some(&sealed)).job(0), &table, &metadata).run();
    run.assert_exit(BootExit::JobFinished);
    assert!(metadata.requests.load(Ordering::SeqCst) >= 1, "{run:#?}");
    assert!(usage_item(&table, 121).is_none());
    assert!(
        run.stderr.contains(
            "usage: not reported (the task metadata gave no limits; 2 failed read(s), the last: HTTP 500)"
        ),
        "{run:#?}"
    );
}

#[test]
fn an_unreachable_metadata_endpoint_changes_nothing_and_stores_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let table = lifecycle_table();
    let sealed = seal(122);
    let run = Boot::new(122, Some(&sealed))
        .listener_exits("1")
        .with("FAKE_LISTENER_IDLE_SECONDS", "1")
        .with("TASUKI_TABLE", &table)
        .with("TASUKI_RETENTION_DAYS", "30")
        .with(
            "ECS_CONTAINER_METADATA_URI_V4",
            &format!("http://127.0.0.1:{port}/v4/x"),
        )
        .run();
    run.assert_exit(BootExit::NoJob);
    assert!(usage_item(&table, 122).is_none());
    assert!(
        run.stderr
            .contains("usage: not reported (the task metadata gave no limits; 2 failed read(s)"),
        "{run:#?}"
    );
}

#[test]
fn without_the_metadata_variable_nothing_is_sampled_and_one_line_says_so() {
    let metadata = fake_metadata(
        TASK_METADATA,
        vec![task_stats(
            docker_stats("runner", 1.0, 1.0, 10, ("inactive_file", 0)),
            None,
        )],
    );
    let table = lifecycle_table();
    let sealed = seal(123);
    let run = with_usage(Boot::new(123, Some(&sealed)).job(0), &table, &metadata)
        .without("ECS_CONTAINER_METADATA_URI_V4")
        .run();
    run.assert_exit(BootExit::JobFinished);
    assert_eq!(metadata.requests.load(Ordering::SeqCst), 0);
    assert!(usage_item(&table, 123).is_none());
    let about_usage: Vec<&str> = run.stderr.lines().filter(|l| l.contains("usage")).collect();
    assert_eq!(
        about_usage,
        ["tasuki-boot: usage: not sampled (ECS_CONTAINER_METADATA_URI_V4 is not set)"],
        "{run:#?}"
    );
}

#[test]
fn a_failed_write_is_one_line_and_the_exit_status_is_unchanged() {
    let stats = vec![
        task_stats(
            docker_stats("runner", 0.0, 0.0, 100, ("inactive_file", 0)),
            None,
        ),
        task_stats(
            docker_stats("runner", 5.0, 10.0, 100, ("inactive_file", 0)),
            None,
        ),
    ];
    let metadata = fake_metadata(TASK_METADATA, stats);
    let sealed = seal(124);
    // Readings at about 0 and 5 s; the job ends at about 7 s.
    let run = with_usage(
        Boot::new(124, Some(&sealed)).job(7),
        "tasuki-no-such-table",
        &metadata,
    )
    .run();
    run.assert_exit(BootExit::JobFinished);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("not stored"))
        .collect();
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert!(lines[0].contains("ResourceNotFoundException"), "{run:#?}");
}

#[test]
fn a_job_the_boot_had_to_stop_stores_no_usage_so_its_exit_status_reaches_ecs_first() {
    let stats = vec![task_stats(
        docker_stats("runner", 0.0, 0.0, 100, ("inactive_file", 0)),
        None,
    )];
    let metadata = fake_metadata(TASK_METADATA, stats);
    let table = lifecycle_table();
    let sealed = seal(125);
    let run = with_usage(Boot::new(125, Some(&sealed)), &table, &metadata)
        .with("TASUKI_STOP_GRACE_SECONDS", "0")
        .job(60)
        .signals_after("job started", &[libc::SIGTERM])
        .run();
    run.assert_exit(BootExit::JobInterrupted);
    assert!(usage_item(&table, 125).is_none());
    assert!(
        run.stderr
            .contains("usage: not stored (the task is being stopped; the exit status comes first)"),
        "{run:#?}"
    );
}
