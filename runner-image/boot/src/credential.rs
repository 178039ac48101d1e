//! The runner credential, sealed and opened.

use crate::error::BootError;

/// GitHub's `encoded_jit_config`, decrypted: a single-use credential that registers one runner.
///
/// It has no `Display`, its `Debug` is redacted and it is not `Clone`: the only way to the text is
/// [`JitConfig::expose`], used once, to build the runner's command line.
pub struct JitConfig(String);

impl JitConfig {
    /// The plaintext KMS returned; refuses bytes that are not text (without showing them).
    pub fn from_plaintext(job_id: u64, bytes: &[u8]) -> Result<Self, BootError> {
        match std::str::from_utf8(bytes) {
            Ok(text) if !text.trim().is_empty() => Ok(Self(text.trim().to_string())),
            _ => Err(BootError::NotText { job_id }),
        }
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

/// The KMS ciphertext blob of a [`JitConfig`], as `TASUKI_JIT_CONFIG_CIPHERTEXT` carries it (base64).
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext(Vec<u8>);

impl Ciphertext {
    pub fn from_base64(text: &str) -> Option<Self> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()?;
        (!bytes.is_empty()).then_some(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ciphertext({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_of_a_jit_config_hides_it() {
        let jit = JitConfig::from_plaintext(1, b"eyJzZWNyZXQiOnRydWV9").unwrap();
        let shown = format!("{jit:?} {:#?}", jit);
        assert!(!shown.contains("eyJ"), "{shown}");
        assert!(shown.contains("redacted"));
        assert_eq!(jit.expose(), "eyJzZWNyZXQiOnRydWV9");
    }

    #[test]
    fn a_plaintext_that_is_not_text_is_refused_without_showing_it() {
        let err = JitConfig::from_plaintext(9, &[0xff, 0xfe, 0x00]).unwrap_err();
        assert_eq!(err, BootError::NotText { job_id: 9 });
        assert_eq!(
            JitConfig::from_plaintext(9, b"  \n").unwrap_err(),
            BootError::NotText { job_id: 9 }
        );
    }

    #[test]
    fn a_ciphertext_is_base64_and_not_empty() {
        assert_eq!(
            Ciphertext::from_base64(" AQID\n").unwrap().as_bytes(),
            &[1, 2, 3]
        );
        assert!(Ciphertext::from_base64("not base64!").is_none());
        assert!(Ciphertext::from_base64("").is_none());
        assert_eq!(
            format!("{:?}", Ciphertext::from_base64("AQID").unwrap()),
            "Ciphertext(3 bytes)"
        );
    }
}
