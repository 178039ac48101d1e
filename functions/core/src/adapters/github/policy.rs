//! What to do with one GitHub answer: use it, try again after a bounded wait, or give the step
//! error the state machine retries with its own backoff. Pure, so every branch is tested.
//!
//! GitHub's rules (<https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>):
//! a primary rate limit answers 403 or 429 with `x-ratelimit-remaining: 0` and is lifted at
//! `x-ratelimit-reset`; a secondary one answers 403 or 429, with `retry-after` when GitHub says how
//! long, otherwise "wait at least one minute"; a client that keeps calling while limited may be
//! banned. So a short wait is taken here (the Lambda has the time), a long one becomes `Throttled`
//! and the state machine's jittered backoff (never a tight loop). 5xx answers of calls that are
//! safe to repeat (GET, DELETE) are retried here with full jitter; a POST is not repeated blindly.

use crate::error::StepError;
use std::time::Duration;

/// Tries of one call, the first included.
pub const MAX_TRIES: u32 = 3;
/// The longest a rate limit is waited out inside one call; longer ones are `Throttled`.
pub const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);
/// A secondary rate limit without `retry-after`: "wait at least one minute" (GitHub docs).
const SECONDARY_DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// First backoff of a 5xx retry; doubles per try.
const SERVER_ERROR_BACKOFF: Duration = Duration::from_millis(400);

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_epoch: Option<u64>,
    pub retry_after_seconds: Option<u64>,
}

impl RateLimit {
    /// From header lookups (`name` → value), so the caller's header type stays its own.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let number = |name: &str| header(name).and_then(|v| v.trim().parse::<u64>().ok());
        Self {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            reset_epoch: number("x-ratelimit-reset"),
            retry_after_seconds: number("retry-after"),
        }
    }

    /// "12 of 5000 left, resets at 1700000000", for errors and logs.
    pub fn budget(&self) -> String {
        let show = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
        format!(
            "{} of {} left, resets at {}",
            show(self.remaining),
            show(self.limit),
            show(self.reset_epoch)
        )
    }
}

/// One answer as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub status: u16,
    pub message: &'a str,
    pub rate: RateLimit,
}

#[derive(Debug)]
pub enum Verdict {
    /// The caller reads it (2xx, or a 4xx it knows how to take).
    Use,
    /// Call again after this long.
    Again(Duration),
    /// Stop: the state machine retries or fails the job.
    Stop(StepError),
}

/// The verdict on try number `try_` (1-based) of call `what`; `repeatable` for GET and DELETE.
pub fn verdict(what: &str, seen: Seen<'_>, repeatable: bool, try_: u32, now_epoch: u64) -> Verdict {
    let detail = || format!("{what}: HTTP {}: {}", seen.status, seen.message);
    if let Some(wait) = rate_limit_wait(seen, now_epoch) {
        if wait <= MAX_INLINE_WAIT && try_ < MAX_TRIES {
            return Verdict::Again(wait);
        }
        return Verdict::Stop(StepError::Throttled(format!(
            "GitHub rate limit: {}; retry after {} s; {}",
            detail(),
            wait.as_secs(),
            seen.rate.budget()
        )));
    }
    if seen.status >= 500 {
        if repeatable && try_ < MAX_TRIES {
            return Verdict::Again(server_error_backoff(try_));
        }
        return Verdict::Stop(StepError::Transient(detail()));
    }
    Verdict::Use
}

/// How long GitHub asks us to wait, when the answer is a rate limit.
fn rate_limit_wait(seen: Seen<'_>, now_epoch: u64) -> Option<Duration> {
    let limited_status = seen.status == 429 || seen.status == 403;
    if !limited_status {
        return None;
    }
    if let Some(seconds) = seen.rate.retry_after_seconds {
        return Some(Duration::from_secs(seconds));
    }
    if seen.rate.remaining == Some(0) {
        let reset = seen.rate.reset_epoch.unwrap_or(now_epoch + 60);
        return Some(Duration::from_secs(reset.saturating_sub(now_epoch).max(1)));
    }
    // A 403 without these headers is a permission error unless GitHub says it is a rate limit.
    let says_rate_limit = seen.message.to_ascii_lowercase().contains("rate limit");
    (seen.status == 429 || says_rate_limit).then_some(SECONDARY_DEFAULT_WAIT)
}

/// Full jitter (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>): a
/// random wait up to 400 ms, 800 ms, … so retrying Lambdas do not hit GitHub in step.
pub fn server_error_backoff(try_: u32) -> Duration {
    let cap = SERVER_ERROR_BACKOFF * 2u32.saturating_pow(try_.saturating_sub(1));
    cap.mul_f64(fastrand::f64())
}

/// The `cursor` of the `rel="next"` page in a `Link` header
/// (<https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api>). Only
/// the cursor is taken: the next page is asked of the configured API URL, never of the link's host.
pub fn next_cursor(link: &str) -> Option<String> {
    link.split(',')
        .find(|part| part.contains("rel=\"next\""))
        .and_then(|part| {
            let url = part.split('<').nth(1)?.split('>').next()?;
            let query = url.split_once('?')?.1;
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(key, _)| *key == "cursor")
                .map(|(_, value)| percent_decode(value))
        })
        .filter(|cursor| !cursor.is_empty())
}

/// Query-string encoding of a cursor: everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn seen(status: u16, message: &str, rate: RateLimit) -> Seen<'_> {
        Seen {
            status,
            message,
            rate,
        }
    }

    fn wait_of(verdict: Verdict) -> Duration {
        match verdict {
            Verdict::Again(wait) => wait,
            other => panic!("expected to try again, got {other:?}"),
        }
    }

    fn error_of(verdict: Verdict) -> StepError {
        match verdict {
            Verdict::Stop(error) => error,
            other => panic!("expected to stop, got {other:?}"),
        }
    }

    #[test]
    fn a_short_retry_after_is_waited_out_in_the_call() {
        let rate = RateLimit {
            retry_after_seconds: Some(2),
            ..RateLimit::default()
        };
        let wait = wait_of(verdict("x", seen(429, "slow down", rate), false, 1, NOW));
        assert_eq!(wait, Duration::from_secs(2));
    }

    #[test]
    fn a_long_retry_after_is_throttled_with_the_budget_left() {
        let rate = RateLimit {
            retry_after_seconds: Some(60),
            limit: Some(5000),
            remaining: Some(17),
            reset_epoch: Some(NOW + 900),
        };
        let message = "You have exceeded a secondary rate limit";
        let error = error_of(verdict("get job", seen(403, message, rate), true, 1, NOW));
        assert_eq!(error.name(), "Throttled");
        let text = error.to_string();
        assert!(text.contains("retry after 60 s"), "{text}");
        assert!(text.contains("17 of 5000 left"), "{text}");
    }

    #[test]
    fn an_exhausted_primary_limit_waits_until_its_reset() {
        let rate = RateLimit {
            remaining: Some(0),
            reset_epoch: Some(NOW + 3),
            ..RateLimit::default()
        };
        let wait = wait_of(verdict(
            "x",
            seen(403, "API rate limit exceeded", rate),
            true,
            1,
            NOW,
        ));
        assert_eq!(wait, Duration::from_secs(3));
        let far = RateLimit {
            reset_epoch: Some(NOW + 1800),
            ..rate
        };
        let error = error_of(verdict(
            "x",
            seen(403, "API rate limit exceeded", far),
            true,
            1,
            NOW,
        ));
        assert!(error.to_string().contains("retry after 1800 s"));
    }

    #[test]
    fn the_last_try_never_waits_again() {
        let rate = RateLimit {
            retry_after_seconds: Some(1),
            ..RateLimit::default()
        };
        let error = error_of(verdict("x", seen(429, "slow", rate), true, MAX_TRIES, NOW));
        assert_eq!(error.name(), "Throttled");
        let error = error_of(verdict(
            "x",
            seen(502, "bad gateway", rate_free()),
            true,
            MAX_TRIES,
            NOW,
        ));
        assert_eq!(error.name(), "Transient");
    }

    fn rate_free() -> RateLimit {
        RateLimit::default()
    }

    #[test]
    fn a_forbidden_that_is_no_rate_limit_is_the_callers_to_read() {
        let v = verdict(
            "x",
            seen(403, "Resource not accessible by integration", rate_free()),
            true,
            1,
            NOW,
        );
        assert!(matches!(v, Verdict::Use));
        let v = verdict("x", seen(409, "Already exists", rate_free()), false, 1, NOW);
        assert!(matches!(v, Verdict::Use));
    }

    #[test]
    fn a_secondary_limit_without_headers_waits_a_minute_so_it_is_throttled() {
        let message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
        let error = error_of(verdict("x", seen(403, message, rate_free()), true, 1, NOW));
        assert!(error.to_string().contains("retry after 60 s"));
    }

    #[test]
    fn server_errors_are_retried_only_when_the_call_is_safe_to_repeat() {
        let wait = wait_of(verdict(
            "x",
            seen(503, "unavailable", rate_free()),
            true,
            1,
            NOW,
        ));
        assert!(wait <= SERVER_ERROR_BACKOFF);
        let error = error_of(verdict(
            "jit",
            seen(503, "unavailable", rate_free()),
            false,
            1,
            NOW,
        ));
        assert_eq!(error.name(), "Transient");
    }

    #[test]
    fn the_next_cursor_is_read_from_the_link_header() {
        let link = "<https://api.github.com/app/hook/deliveries?per_page=100&cursor=v1_123%3D>; rel=\"next\", \
                    <https://api.github.com/app/hook/deliveries?per_page=100>; rel=\"first\"";
        assert_eq!(next_cursor(link).as_deref(), Some("v1_123="));
        assert_eq!(next_cursor("<https://x/?cursor=a>; rel=\"prev\""), None);
        assert_eq!(next_cursor(""), None);
    }

    proptest! {
        #[test]
        fn every_wait_is_bounded(status in 100u16..600, retry_after in proptest::option::of(0u64..100_000),
                                 remaining in proptest::option::of(0u64..10), reset in proptest::option::of(0u64..NOW * 2),
                                 try_ in 1u32..10, repeatable: bool) {
            let rate = RateLimit { limit: Some(5000), remaining, reset_epoch: reset, retry_after_seconds: retry_after };
            match verdict("x", seen(status, "API rate limit exceeded", rate), repeatable, try_, NOW) {
                Verdict::Again(wait) => {
                    prop_assert!(try_ < MAX_TRIES);
                    prop_assert!(wait <= MAX_INLINE_WAIT.max(SERVER_ERROR_BACKOFF * 2u32.pow(MAX_TRIES)));
                }
                Verdict::Stop(_) | Verdict::Use => {}
            }
        }

        #[test]
        fn a_cursor_survives_encoding(cursor in "\\PC{1,40}") {
            let link = format!("<https://h/app/hook/deliveries?per_page=2&cursor={}>; rel=\"next\"", percent_encode(&cursor));
            prop_assert_eq!(next_cursor(&link), Some(cursor));
        }
    }
}
