//! GitHub webhook signatures (`X-Hub-Signature-256`).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The webhook secret; never printed.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    /// The secret as stored in Secrets Manager. A file made with `openssl rand -hex 32 > f` and stored
    /// with `--secret-string file://f` ends in a newline the user never pastes into GitHub: surrounding
    /// whitespace is not part of the secret.
    pub fn from_stored(stored: &str) -> Self {
        Self::new(stored.trim().as_bytes())
    }

    /// `sha256=<hex>` over the raw body, as GitHub sends it.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Constant-time check of a signature header against the raw body.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> bool {
        let Some(hex_digest) = header.and_then(|h| h.strip_prefix("sha256=")) else {
            return false;
        };
        let Ok(expected) = hex::decode(hex_digest) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_stored_secret_with_a_trailing_newline_verifies_what_github_signs_with_the_pasted_secret() {
        let pasted = "5f1c0e2a9b7d4c3e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60";
        let body = br#"{"action":"queued"}"#;
        let github = WebhookSecret::new(pasted.as_bytes()).sign(body);
        let stored = WebhookSecret::from_stored(&format!("{pasted}\n"));
        assert!(stored.verify(Some(&github), body));
        assert!(!WebhookSecret::new(format!("{pasted}\n")).verify(Some(&github), body));
    }

    #[test]
    fn matches_githubs_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        let secret = WebhookSecret::new("It's a Secret to Everybody");
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(secret.sign(b"Hello, World!"), header);
        assert!(secret.verify(Some(header), b"Hello, World!"));
    }

    #[test]
    fn rejects_missing_malformed_and_wrong_signatures() {
        let secret = WebhookSecret::new("s");
        let good = secret.sign(b"body");
        assert!(!secret.verify(None, b"body"));
        assert!(!secret.verify(Some("sha1=abc"), b"body"));
        assert!(!secret.verify(Some("sha256=zz"), b"body"));
        assert!(!secret.verify(Some(&good), b"body2"));
        assert!(!WebhookSecret::new("other").verify(Some(&good), b"body"));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert!(!format!("{:?}", WebhookSecret::new("hunter2")).contains("hunter2"));
    }

    proptest! {
        #[test]
        fn a_signature_verifies_only_its_own_body(key in ".{1,16}", a in any::<Vec<u8>>(), b in any::<Vec<u8>>()) {
            let secret = WebhookSecret::new(key);
            let signature = secret.sign(&a);
            prop_assert!(secret.verify(Some(&signature), &a));
            prop_assert_eq!(secret.verify(Some(&signature), &b), a == b);
        }
    }
}
