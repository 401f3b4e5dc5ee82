//! Body digests that a signature covers: `Digest` (RFC 3230, with Cavage) and `Content-Digest` (RFC 9530, with
//! RFC 9421). The signature vouches for the header; only recomputing it over the received body ties it to the
//! body. Compared in constant time; weak or unknown algorithms are refused, not skipped.

use base64::Engine as _;
use sha2::{Digest as _, Sha256, Sha512};
use subtle::ConstantTimeEq as _;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("{0} header is malformed")]
    Malformed(&'static str),
    #[error("{header} names no supported algorithm (sha-256 or sha-512): {names}")]
    Unsupported { header: &'static str, names: String },
    #[error("{0} does not match the body")]
    Mismatch(&'static str),
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha-256" => Some(Hash::Sha256),
            "sha-512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn of(self, body: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(body).to_vec(),
            Hash::Sha512 => Sha512::digest(body).to_vec(),
        }
    }
}

/// Checks each supported `(algorithm, value)` pair against the body; at least one must be supported, and every
/// supported one must match.
fn check(
    header: &'static str,
    pairs: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<(), DigestError> {
    let mut checked = 0;
    for (name, value) in pairs {
        let Some(hash) = Hash::parse(name) else {
            continue;
        };
        if !bool::from(hash.of(body).ct_eq(value)) {
            return Err(DigestError::Mismatch(header));
        }
        checked += 1;
    }
    if checked == 0 {
        let names = pairs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(DigestError::Unsupported { header, names });
    }
    Ok(())
}

/// `Digest: SHA-256=<base64>[, SHA-512=<base64>]`.
pub fn check_digest(value: &str, body: &[u8]) -> Result<(), DigestError> {
    const HEADER: &str = "Digest";
    let pairs = value
        .split(',')
        .map(|part| {
            let (name, b64) = part
                .trim()
                .split_once('=')
                .ok_or(DigestError::Malformed(HEADER))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| DigestError::Malformed(HEADER))?;
            Ok((name.trim().to_owned(), bytes))
        })
        .collect::<Result<Vec<_>, DigestError>>()?;
    check(HEADER, &pairs, body)
}

/// `Content-Digest: sha-256=:<base64>:, sha-512=:<base64>:` (a structured dictionary of byte sequences).
pub fn check_content_digest(value: &str, body: &[u8]) -> Result<(), DigestError> {
    const HEADER: &str = "Content-Digest";
    let dictionary: sfv::Dictionary = sfv::Parser::new(value)
        .parse()
        .map_err(|_| DigestError::Malformed(HEADER))?;
    let pairs = dictionary
        .iter()
        .map(|(name, entry)| match entry {
            sfv::ListEntry::Item(item) => item
                .bare_item
                .as_byte_sequence()
                .map(|b| (name.as_str().to_owned(), b.to_vec()))
                .ok_or(DigestError::Malformed(HEADER)),
            sfv::ListEntry::InnerList(_) => Err(DigestError::Malformed(HEADER)),
        })
        .collect::<Result<Vec<_>, DigestError>>()?;
    check(HEADER, &pairs, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"hello": "world"}"#;

    #[test]
    fn digest_of_the_drafts_example_body() {
        assert_eq!(
            check_digest("SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=", BODY),
            Ok(())
        );
        assert_eq!(
            check_digest(
                "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
                b"{}"
            ),
            Err(DigestError::Mismatch("Digest"))
        );
        assert!(matches!(
            check_digest("MD5=Sd/dVLAcvNLSq16eXua5uQ==", BODY),
            Err(DigestError::Unsupported { .. })
        ));
        assert_eq!(
            check_digest("SHA-256", BODY),
            Err(DigestError::Malformed("Digest"))
        );
    }

    #[test]
    fn content_digest_of_rfc_9421s_example_body() {
        let sha512 = "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:";
        assert_eq!(check_content_digest(sha512, BODY), Ok(()));
        assert_eq!(
            check_content_digest(sha512, b"{\"hello\": \"World\"}"),
            Err(DigestError::Mismatch("Content-Digest"))
        );
        assert!(matches!(
            check_content_digest("md5=:Sd/dVLAcvNLSq16eXua5uQ==:", BODY),
            Err(DigestError::Unsupported { .. })
        ));
        assert_eq!(
            check_content_digest("sha-512=WZDP", BODY),
            Err(DigestError::Malformed("Content-Digest"))
        );
    }
}
