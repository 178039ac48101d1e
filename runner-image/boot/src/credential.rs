//! The runner credential, once opened.

use crate::error::BootError;
use tasuki_core::domain::ids::JobId;

/// GitHub's `encoded_jit_config`, opened: a single-use credential that registers one runner.
///
/// It has no `Display`, its `Debug` is redacted and it is not `Clone`: the only way to the text is
/// [`JitConfig::expose`], used once, to set the runner's `ACTIONS_RUNNER_INPUT_JITCONFIG`.
pub struct JitConfig(String);

impl JitConfig {
    /// The config the envelope held; refuses an empty one.
    pub fn new(job_id: JobId, text: String) -> Result<Self, BootError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(BootError::NotText { job_id });
        }
        Ok(Self(trimmed.to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JitConfig(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_of_a_jit_config_hides_it() {
        let jit = JitConfig::new(JobId::new(1), "eyJzZWNyZXQiOnRydWV9\n".into()).unwrap();
        let shown = format!("{jit:?} {:#?}", jit);
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(jit.expose(), "eyJzZWNyZXQiOnRydWV9");
    }

    #[test]
    fn an_empty_config_is_refused() {
        assert_eq!(
            JitConfig::new(JobId::new(9), "  \n".into()).unwrap_err(),
            BootError::NotText {
                job_id: JobId::new(9)
            }
        );
    }
}
