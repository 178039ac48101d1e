//! The built `tasuki` binary, run as a person would run it with something missing: it must say in
//! one line what is wrong and what to do, and exit non-zero — never print the SDK's debug structure.
//! Talks to 127.0.0.1 only (a port nothing listens on); every run is bounded.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A local port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tasuki <args>` with no AWS credentials, config files or instance metadata to find, and the
/// given variables; killed after 60 s.
fn tasuki(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let home = std::env::temp_dir().join("tasuki-cli-test-home-that-does-not-exist");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasuki"))
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("tasuki {args:?} still running after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// The run failed with exactly this one line on stderr and nothing on stdout.
fn assert_one_line(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit {:?}", output.status);
    assert_eq!(stderr, format!("tasuki: {expected}\n"));
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
}

#[test]
fn jobs_ls_without_credentials_says_how_to_give_some() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let output = tasuki(
        &["jobs", "ls"],
        &[("AWS_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", &endpoint)],
    );
    assert_one_line(
        &output,
        "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, \
         or `source .tasuki/local.env` for the local stack",
    );
}

#[test]
fn jobs_ls_and_show_with_nothing_listening_ask_whether_the_local_stack_is_up() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    for args in [&["jobs", "ls"][..], &["jobs", "show", "7"]] {
        let output = tasuki(
            args,
            &[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_ENDPOINT_URL", &endpoint),
            ],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with(&format!("tasuki: cannot reach {endpoint} (")),
            "{stderr}"
        );
        assert!(
            stderr.ends_with("): is the local stack up? (`make local-up`)\n"),
            "{stderr}"
        );
    }
}

#[test]
fn without_a_region_nothing_is_sent_and_the_line_says_how_to_set_one() {
    let output = tasuki(&["jobs", "ls"], &[]);
    assert_one_line(
        &output,
        "no AWS region: set AWS_REGION (or AWS_PROFILE with a region), \
         or `source .tasuki/local.env` for the local stack",
    );
}

#[test]
fn a_filter_that_cannot_be_is_refused_before_anything_is_asked() {
    let output = tasuki(
        &["jobs", "ls", "--state", "runing"],
        &[("AWS_REGION", "us-east-1")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.starts_with("tasuki: unknown job state `runing` (one of: received, refused,"),
        "{stderr}"
    );
    let since = tasuki(&["jobs", "ls", "--since", "yesterday"], &[]);
    assert!(!since.status.success());
    assert!(String::from_utf8_lossy(&since.stderr)
        .contains("`yesterday` is neither a duration (30m, 2h, 3d, 1w) nor an RFC 3339 time"));
}
