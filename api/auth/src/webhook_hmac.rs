//! The Kinto listener plugin's signature on webhook calls (`deploy/kinto/kinto_signer_webhook`):
//! `X-Signer-Timestamp: <unix seconds>` and `X-Signer-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>`.
//! The timestamp is inside the MAC and must be within a window, so a captured call cannot be replayed later; within
//! the window the webhook remembers each call's MAC in the job store and refuses it a second time.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "x-signer-timestamp";
pub const SIGNATURE_HEADER: &str = "x-signer-signature";
/// How far the sender's clock and the transit may put the timestamp from ours.
pub const WINDOW_SECONDS: i64 = 300;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookAuthError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{SIGNATURE_HEADER} must be sha256=<hex>")]
    Malformed,
    #[error("{TIMESTAMP_HEADER} is {0} s away from now (at most {WINDOW_SECONDS} s allowed)")]
    Stale(i64),
    #[error("signature does not match the body")]
    Mismatch,
}

impl WebhookAuthError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookAuthError::Missing(_) => "missing",
            WebhookAuthError::Malformed => "malformed",
            WebhookAuthError::Stale(_) => "stale",
            WebhookAuthError::Mismatch => "mismatch",
        }
    }
}

/// The header value for `body` sent at `timestamp` (what the plugin computes; tests use it too).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(secret, timestamp, body);
    format!("sha256={}", hex::encode(mac.finalize_reset().into_bytes()))
}

/// A call whose signature checked out: what makes it single-use.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The call's MAC (lowercase hex): remembered, so the same call is refused if it comes again.
    pub mac: String,
    /// Until when (unix seconds) the call could be accepted: how long its MAC must be remembered.
    pub acceptable_until: i64,
}

/// Checks the two headers against the body, in constant time.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Verified, WebhookAuthError> {
    let timestamp = timestamp.ok_or(WebhookAuthError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(WebhookAuthError::Missing(SIGNATURE_HEADER))?;
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookAuthError::Malformed)?;
    let expected = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(WebhookAuthError::Malformed)?;
    // Any i64 can arrive here: the distance saturates instead of overflowing (a panic in the handler).
    let distance = now.saturating_sub(timestamp);
    if distance.saturating_abs() > WINDOW_SECONDS {
        return Err(WebhookAuthError::Stale(distance));
    }
    mac(secret, timestamp, body)
        .verify_slice(&expected)
        .map_err(|_| WebhookAuthError::Mismatch)?;
    Ok(Verified {
        mac: hex::encode(&expected),
        acceptable_until: timestamp.saturating_add(WINDOW_SECONDS),
    })
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_verifies_and_any_change_is_refused() {
        let body = br#"{"action":"update"}"#;
        let header = sign(b"s3cret", 1_700_000_000, body);
        let ok = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&header),
            body,
            1_700_000_100,
        );
        let ok = ok.unwrap();
        assert_eq!(ok.acceptable_until, 1_700_000_000 + WINDOW_SECONDS);
        assert_eq!(format!("sha256={}", ok.mac), header);
        // The same MAC written in capitals is the same call.
        let shouted = format!("sha256={}", ok.mac.to_uppercase());
        let again = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&shouted),
            body,
            1_700_000_100,
        );
        assert_eq!(again.unwrap().mac, ok.mac);
        let tampered = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&header),
            b"{}",
            1_700_000_100,
        );
        assert_eq!(tampered, Err(WebhookAuthError::Mismatch));
        let other_key = verify(
            b"other",
            Some("1700000000"),
            Some(&header),
            body,
            1_700_000_100,
        );
        assert_eq!(other_key, Err(WebhookAuthError::Mismatch));
        let moved_ts = verify(
            b"s3cret",
            Some("1700000001"),
            Some(&header),
            body,
            1_700_000_100,
        );
        assert_eq!(moved_ts, Err(WebhookAuthError::Mismatch));
        let replayed = verify(
            b"s3cret",
            Some("1700000000"),
            Some(&header),
            body,
            1_700_000_400,
        );
        assert_eq!(replayed, Err(WebhookAuthError::Stale(400)));
        assert_eq!(
            verify(b"s3cret", None, Some(&header), body, 0),
            Err(WebhookAuthError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(b"s3cret", Some("1"), Some("md5=00"), body, 1),
            Err(WebhookAuthError::Malformed)
        );
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        let body = b"{}";
        let header = sign(b"k", 0, body);
        for (timestamp, now) in [
            ("-9223372036854775808", 1_700_000_000),
            ("9223372036854775807", -1_700_000_000),
            ("-9223372036854775808", i64::MAX),
        ] {
            assert!(
                matches!(
                    verify(b"k", Some(timestamp), Some(&header), body, now),
                    Err(WebhookAuthError::Stale(_))
                ),
                "{timestamp} at {now}"
            );
        }
    }

    #[test]
    fn matches_what_python_hmac_computes() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"k", b"1.{}", hashlib.sha256).hexdigest())'
        assert_eq!(
            sign(b"k", 1, b"{}"),
            "sha256=3dd49b2593d0f9a349e9e71c4bde3e2b862c2be4003fe9b4ba81332029310158"
        );
    }
}
