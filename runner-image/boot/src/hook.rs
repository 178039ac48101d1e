//! Knowing whether a job ran: the runner's job-started hook writes a marker file.
//!
//! The runner's worker runs the script named by `ACTIONS_RUNNER_HOOK_JOB_STARTED` as the first step
//! of every job, on the runner's host (not in a job container), with bash for a `.sh` file
//! (actions/runner src/Runner.Worker/JobExtension.cs and JobHookProvider.cs;
//! <https://docs.github.com/en/actions/hosting-your-own-runners/managing-self-hosted-runners/running-scripts-before-or-after-a-job>).
//! tasuki-boot writes that script into a private directory (mode 0700) of its own: it creates the
//! marker `job-started` beside itself, then runs the hook the image or the operator had set, if any.

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const SCRIPT_NAME: &str = "job-started.sh";
pub const MARKER_NAME: &str = "job-started";

/// The hook's directory; removed when dropped.
#[derive(Debug)]
pub struct JobStartedHook {
    dir: PathBuf,
}

impl JobStartedHook {
    /// Creates `<base>/tasuki-boot.<pid>.<n>/job-started.sh`; `chained` runs after the marker.
    pub fn install(base: &Path, chained: Option<&Path>) -> io::Result<Self> {
        let dir = private_dir(base)?;
        let hook = Self { dir };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(hook.script())?;
        file.write_all(script_text(&hook.marker(), chained).as_bytes())?;
        file.sync_all()?;
        Ok(hook)
    }

    pub fn script(&self) -> PathBuf {
        self.dir.join(SCRIPT_NAME)
    }

    pub fn marker(&self) -> PathBuf {
        self.dir.join(MARKER_NAME)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a job has started (the hook ran).
    pub fn job_started(&self) -> bool {
        self.marker().exists()
    }
}

impl Drop for JobStartedHook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh directory only its owner can enter (`mkdir` with mode 0700 fails if the name exists).
fn private_dir(base: &Path) -> io::Result<PathBuf> {
    let mut last = None;
    for n in 0..100u32 {
        let dir = base.join(format!("tasuki-boot.{}.{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
}

/// The hook script: create the marker, then hand over to `chained` run the way the runner runs a
/// `.sh` hook (`bash --noprofile --norc -e -o pipefail {0}`, actions/runner
/// src/Runner.Worker/Handlers/ScriptHandlerHelpers.cs), so its status is the step's.
pub fn script_text(marker: &Path, chained: Option<&Path>) -> String {
    let mut text = String::from(
        "#!/bin/bash\n\
         # Written by tasuki-boot (ACTIONS_RUNNER_HOOK_JOB_STARTED): tells it that a job started.\n",
    );
    text.push_str(&format!(": >{}\n", quote(marker)));
    if let Some(chained) = chained {
        text.push_str(&format!(
            "exec bash --noprofile --norc -e -o pipefail {}\n",
            quote(chained)
        ));
    }
    text
}

/// A path as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn the_hook_writes_the_marker_and_only_its_owner_can_enter_its_directory() {
        let base = tempfile::tempdir().unwrap();
        let hook = JobStartedHook::install(base.path(), None).unwrap();
        let mode = std::fs::metadata(hook.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(!hook.job_started());
        let status = Command::new("bash").arg(hook.script()).status().unwrap();
        assert!(status.success());
        assert!(hook.job_started());
        let dir = hook.dir().to_path_buf();
        drop(hook);
        assert!(!dir.exists(), "the hook's directory is removed");
    }

    #[test]
    fn a_chained_hook_runs_after_the_marker_and_its_status_is_the_hooks() {
        let base = tempfile::tempdir().unwrap();
        let theirs = base.path().join("it's theirs.sh");
        std::fs::write(&theirs, "echo chained; exit 3\n").unwrap();
        let hook = JobStartedHook::install(base.path(), Some(&theirs)).unwrap();
        let out = Command::new("bash").arg(hook.script()).output().unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "chained\n");
        assert!(hook.job_started());
    }

    #[test]
    fn two_hooks_get_two_directories() {
        let base = tempfile::tempdir().unwrap();
        let a = JobStartedHook::install(base.path(), None).unwrap();
        let b = JobStartedHook::install(base.path(), None).unwrap();
        assert_ne!(a.dir(), b.dir());
    }

    #[test]
    fn paths_are_quoted_as_one_word() {
        assert_eq!(quote(Path::new("/tmp/a b")), "'/tmp/a b'");
        assert_eq!(quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }
}
