//! ECS resource tags for per-job cost allocation, made acceptable to ECS.
//!
//! ECS takes tag keys of at most 128 and values of at most 256 characters, made of letters, digits,
//! spaces and `+ - = . _ : / @` (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html>);
//! RunTask fails as a whole on one bad tag. Workflow names are free text (`Build (linux, x64) & test`),
//! so values are sanitized — never dropped — and the raw names stay in the lifecycle table.

/// A tag value ECS accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagValue(String);

pub const MAX_VALUE_CHARS: usize = 256;
pub const MAX_KEY_CHARS: usize = 128;

/// A character ECS allows in tag keys and values.
pub fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "+-=._:/@".contains(c)
}

impl TagValue {
    /// Each character ECS refuses becomes `_`; the result is cut to 256 characters.
    pub fn sanitized(raw: &str) -> Self {
        Self(
            raw.chars()
                .map(|c| if allowed(c) { c } else { '_' })
                .take(MAX_VALUE_CHARS)
                .collect(),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn workflow_names_with_punctuation_become_valid_tag_values() {
        assert_eq!(
            TagValue::sanitized("Build (linux, x64) & test #1 'fast'!").as_str(),
            "Build _linux_ x64_ _ test _1 _fast__"
        );
        assert_eq!(TagValue::sanitized("octo-org/app").as_str(), "octo-org/app");
        assert_eq!(TagValue::sanitized("ビルド").as_str(), "ビルド");
    }

    #[test]
    fn long_values_are_cut_to_256_characters() {
        assert_eq!(
            TagValue::sanitized(&"é".repeat(300))
                .as_str()
                .chars()
                .count(),
            256
        );
    }

    proptest! {
        #[test]
        fn every_sanitized_value_is_one_ecs_accepts(raw in "\\PC{0,400}") {
            let value = TagValue::sanitized(&raw);
            prop_assert!(value.as_str().chars().count() <= MAX_VALUE_CHARS);
            prop_assert!(value.as_str().chars().all(allowed));
        }
    }
}
