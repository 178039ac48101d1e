//! Which repositories tasuki serves: the allowlist, and public repositories only when allowed.

use crate::domain::config::Config;
use crate::domain::job::JobRef;

/// Why a job's repository is not served, if it is not.
pub fn refusal_for_repository(config: &Config, job: &JobRef) -> Option<String> {
    if !config.serves_repository(&job.repository) {
        return Some(format!(
            "repository {} is not in the access allowlist",
            job.repository
        ));
    }
    if !job.private && !config.access.allow_public_repositories {
        return Some(format!(
            "repository {} is public: anyone could run code on its runners (set access.allow_public_repositories to serve it)",
            job.repository
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::tests::example;
    use crate::domain::job::tests::job_ref;

    #[test]
    fn public_and_unlisted_repositories_are_refused_with_the_repository_named() {
        let mut job = job_ref(&["tasuki"]);
        assert_eq!(refusal_for_repository(&example(), &job), None);
        job.private = false;
        assert!(refusal_for_repository(&example(), &job)
            .unwrap()
            .contains("octo-org/app is public"));
        job.repository = "stranger/app".into();
        assert!(refusal_for_repository(&example(), &job)
            .unwrap()
            .contains("stranger/app"));
    }
}
