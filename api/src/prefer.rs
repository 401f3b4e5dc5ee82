//! `Prefer: wait=N` (RFC 7240): a caller that would rather have the outcome than an acknowledgement asks the
//! server to hold the answer up to N seconds. The Kinto plugin sends it when a status change should return only
//! once its job finished (scripts and tests that read the preview or destination right after, as kinto-signer
//! allowed).

use axum::http::HeaderMap;
use signer_types::job::Job;
use signer_worker::store::{JobStore as _, Store, StoreError};
use std::time::Duration;
use tokio::time::Instant;

/// The longest a caller may have an answer held: longer waits belong to `GET /v1/jobs/{id}`.
pub const MAX_WAIT_SECONDS: u64 = 60;
/// How often a held answer looks at its jobs.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// The `wait` preference in seconds, capped at `MAX_WAIT_SECONDS`; `None` when absent, zero or malformed (a
/// preference the server does not understand is ignored, RFC 7240 §2).
pub fn wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|preference| {
            let (name, value) = preference.split(';').next()?.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait"))
                .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .next()
        .filter(|seconds| *seconds > 0)
        .map(|seconds| seconds.min(MAX_WAIT_SECONDS))
}

/// The jobs as they are once every one is final, or when `seconds` ran out.
pub async fn until_final(
    store: &Store,
    jobs: Vec<Job>,
    seconds: u64,
) -> Result<Vec<Job>, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut jobs = jobs;
    loop {
        if jobs.iter().all(|job| job.state.is_final()) || Instant::now() >= deadline {
            return Ok(jobs);
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + LOOK_EVERY)).await;
        let mut current = Vec::with_capacity(jobs.len());
        for job in &jobs {
            current.push(store.get(job.id).await?.unwrap_or_else(|| job.clone()));
        }
        jobs = current;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("prefer", value.parse().unwrap());
        }
        map
    }

    #[test]
    fn wait_is_read_among_other_preferences_and_capped() {
        assert_eq!(wait(&headers(&["wait=10"])), Some(10));
        assert_eq!(wait(&headers(&["respond-async, Wait = 5"])), Some(5));
        assert_eq!(wait(&headers(&["handling=lenient", "wait=\"7\""])), Some(7));
        assert_eq!(wait(&headers(&["wait=3600"])), Some(MAX_WAIT_SECONDS));
        for ignored in ["wait=0", "wait=-1", "wait=soon", "wait", "return=minimal"] {
            assert_eq!(wait(&headers(&[ignored])), None, "{ignored}");
        }
        assert_eq!(wait(&HeaderMap::new()), None);
    }
}
