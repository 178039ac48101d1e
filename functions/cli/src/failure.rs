//! What went wrong talking to AWS, said as one line a person can act on: what is missing and the
//! command or setting that fixes it. The store classifies the SDK's errors (`StoreError`); this
//! adds where the CLI was looking (table, region, endpoint) and what to do.

use tasuki_core::ports::StoreError;

/// Where the CLI looked for the lifecycle table.
pub struct Target {
    pub table: String,
    pub region: String,
    /// `AWS_ENDPOINT_URL` (the local stack), if set.
    pub endpoint: Option<String>,
    /// How to name another table: `pass --table or set TASUKI_TABLE`.
    pub table_hint: &'static str,
}

pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_PROFILE or AWS_ACCESS_KEY_ID, \
     or `source .tasuki/local.env` for the local stack";

pub fn explain(error: &StoreError, target: &Target) -> String {
    let line = match error {
        StoreError::NoCredentials(_) => NO_CREDENTIALS.to_string(),
        StoreError::Unreachable(cause) => match &target.endpoint {
            Some(endpoint) => format!(
                "cannot reach {endpoint} ({cause}): is the local stack up? (`make local-up`)"
            ),
            None => format!(
                "cannot reach DynamoDB in {} ({cause}): check the network or proxy",
                target.region
            ),
        },
        StoreError::NoTable(_) => format!(
            "table {} not found in {}: {}",
            target.table, target.region, target.table_hint
        ),
        StoreError::Throttled(cause) => {
            format!("DynamoDB is throttling requests ({cause}): try again in a few seconds")
        }
        StoreError::Conflict | StoreError::NotFound(_) | StoreError::Failure(_) => {
            error.to_string()
        }
    };
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: Option<&str>) -> Target {
        Target {
            table: "tasuki-jobs".into(),
            region: "us-east-1".into(),
            endpoint: endpoint.map(String::from),
            table_hint: "pass --table or set TASUKI_TABLE",
        }
    }

    #[test]
    fn each_classified_failure_says_what_is_wrong_and_what_to_do_in_one_line() {
        let local = target(Some("http://127.0.0.1:4566"));
        let cases = [
            (
                StoreError::NoCredentials("the credential provider was not enabled".into()),
                NO_CREDENTIALS.to_string(),
            ),
            (
                StoreError::Unreachable("Connection refused (os error 111)".into()),
                "cannot reach http://127.0.0.1:4566 (Connection refused (os error 111)): \
                 is the local stack up? (`make local-up`)"
                    .into(),
            ),
            (
                StoreError::NoTable("Requested resource not found".into()),
                "table tasuki-jobs not found in us-east-1: pass --table or set TASUKI_TABLE".into(),
            ),
            (
                StoreError::Throttled("ThrottlingException: slow down".into()),
                "DynamoDB is throttling requests (ThrottlingException: slow down): \
                 try again in a few seconds"
                    .into(),
            ),
        ];
        for (error, expected) in cases {
            let line = explain(&error, &local);
            assert_eq!(line, expected);
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn without_a_local_endpoint_an_unreachable_store_points_at_the_network() {
        let line = explain(&StoreError::Unreachable("dns error".into()), &target(None));
        assert_eq!(
            line,
            "cannot reach DynamoDB in us-east-1 (dns error): check the network or proxy"
        );
    }
}
