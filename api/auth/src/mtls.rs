//! Client certificates (certified's model): the API's TLS handshake already verified the chain against
//! the trusted client CAs, validity included; here the end-entity certificate names the caller and says what it
//! vouches for. User id `mtls:<name>`: the first DNS name, URI or e-mail address of its subjectAltName, else its
//! subject's common name.
//!
//! Scopes are certificate policies (a non-critical certificatePolicies extension: webpki refuses a critical one
//! at the handshake, as it refuses any critical extension it does not process). Ours live under the arc
//! [`SCOPE_ARC`] (a UUID OID, X.667, so nobody else's), one per scope of [`SCOPES`]; `[auth.mtls] scopes` maps
//! more OIDs, such as an existing PKI's, to scope names. Each becomes the principal `scope:<name>`; OIDs nobody
//! mapped are ignored.

use super::{AuthConfigError, Outcome, Reason, Refusal, Request};
use crate::settings::{MtlsSettings, Scheme};
use signer_types::Principals;
use x509_cert::der::asn1::{Any, Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::der::{Decode as _, Tag, Tagged as _};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

/// `2.25.<UUID e1044094-6d15-4e1e-9700-0b6df00dcab0 as an integer>`: the project's policy OIDs.
pub const SCOPE_ARC: &str = "2.25.299098378072782518953507022030798441136";

/// `<SCOPE_ARC>.<n>` and the scope it grants.
pub const SCOPES: [(u32, &str); 7] = [
    (1, "sign"),
    (2, "review"),
    (3, "resign"),
    (4, "rollback"),
    (5, "read"),
    (6, "admin"),
    (7, "metrics"),
];

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const CERTIFICATE_POLICIES: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32");

/// An OID as its DER content bytes. UUID arcs (X.667) are 128 bits, beyond the 32-bit arcs the x509 crates
/// parse, so policy identifiers are compared in this form.
type OidBytes = Vec<u8>;

/// `1.2.840...` to DER content bytes; arcs up to 128 bits.
pub fn oid_bytes(dotted: &str) -> Result<OidBytes, String> {
    let arcs = dotted
        .split('.')
        .map(|a| {
            a.parse::<u128>()
                .map_err(|_| format!("{dotted:?} is not a dotted OID"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let [first, second, rest @ ..] = arcs.as_slice() else {
        return Err(format!("{dotted:?} has fewer than two arcs"));
    };
    if *first > 2 || (*first < 2 && *second >= 40) {
        return Err(format!("{dotted:?} does not start with a valid arc"));
    }
    let mut bytes = Vec::new();
    for arc in std::iter::once(first * 40 + second).chain(rest.iter().copied()) {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            chunk.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        bytes.extend(chunk.iter().rev());
    }
    Ok(bytes)
}

pub struct Mtls {
    scopes: Vec<(OidBytes, String)>,
}

/// Who a certificate names, and the scopes its policies grant.
#[derive(Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub scopes: Vec<String>,
}

impl Mtls {
    pub fn new(settings: &MtlsSettings) -> Result<Self, AuthConfigError> {
        let mut scopes: Vec<(OidBytes, String)> = SCOPES
            .iter()
            .map(|(n, name)| {
                let oid = oid_bytes(&format!("{SCOPE_ARC}.{n}")).expect("the arc is a valid OID");
                (oid, (*name).to_owned())
            })
            .collect();
        for (oid, name) in &settings.scopes {
            let parsed = oid_bytes(oid)
                .map_err(|e| AuthConfigError::new(Scheme::Mtls, format!("scopes: {e}")))?;
            scopes.push((parsed, name.clone()));
        }
        Ok(Self { scopes })
    }

    pub fn authenticate(&self, request: &Request<'_>) -> Outcome {
        let Some(der) = request.tls.and_then(|t| t.certificate.as_deref()) else {
            return Outcome::NotMine;
        };
        match identity(der, &self.scopes) {
            Ok(id) => Outcome::Proven(Principals::user(
                format!("mtls:{}", id.name),
                id.scopes.into_iter().map(|s| format!("scope:{s}")),
            )),
            Err(message) => Outcome::Refused(Refusal::new(Reason::Malformed, message)),
        }
    }
}

/// The policy identifiers of a certificatePolicies extension value (`SEQUENCE OF PolicyInformation`, each a
/// `SEQUENCE { OBJECT IDENTIFIER, qualifiers OPTIONAL }`).
fn policy_identifiers(extension: &[u8]) -> Result<Vec<OidBytes>, String> {
    let bad = |e: x509_cert::der::Error| format!("the certificate policies do not parse: {e}");
    Vec::<Any>::from_der(extension)
        .map_err(bad)?
        .iter()
        .map(|info| {
            let fields: Vec<Any> = info.decode_as().map_err(bad)?;
            match fields.first() {
                Some(oid) if oid.tag() == Tag::ObjectIdentifier => Ok(oid.value().to_vec()),
                _ => Err("a certificate policy has no identifier".to_owned()),
            }
        })
        .collect()
}

pub fn identity(der: &[u8], scopes: &[(OidBytes, String)]) -> Result<Identity, String> {
    let cert = Certificate::from_der(der)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let tbs = &cert.tbs_certificate;
    let from_san = match tbs.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0.iter().find_map(|name| match name {
            GeneralName::DnsName(s)
            | GeneralName::UniformResourceIdentifier(s)
            | GeneralName::Rfc822Name(s) => Some(s.to_string()),
            _ => None,
        }),
        _ => None,
    };
    let common_name = || {
        tbs.subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .filter(|atv| atv.oid == COMMON_NAME)
            .filter_map(|atv| {
                atv.value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.to_string())
                    .or_else(|_| {
                        atv.value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map(|s| s.to_string())
                    })
                    .or_else(|_| {
                        atv.value
                            .decode_as::<Ia5StringRef<'_>>()
                            .map(|s| s.to_string())
                    })
                    .ok()
            })
            .next_back()
    };
    let name = from_san
        .or_else(common_name)
        .ok_or("the client certificate names nobody (no subjectAltName, no common name)")?;
    let mut granted = Vec::new();
    for extension in tbs
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == CERTIFICATE_POLICIES)
    {
        for policy in policy_identifiers(extension.extn_value.as_bytes())? {
            granted.extend(
                scopes
                    .iter()
                    .filter(|(oid, _)| *oid == policy)
                    .map(|(_, name)| name.clone()),
            );
        }
    }
    Ok(Identity {
        name,
        scopes: granted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::der::DecodePem as _;
    use x509_cert::der::Encode as _;

    /// SAN `ci.example` and `other.example`; policies `<arc>.1`, `<arc>.5`, the CA/B Forum's DV OID and 1.2.3.4.
    const WITH_SCOPES: &str = "-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIBATAKBggqhkjOPQQDAjAlMQ4wDAYDVQQKDAVUZXN0czET
MBEGA1UEAwwKaWdub3JlZC1jbjAeFw0yNjAxMDEwMDAwMDBaFw0zNjAxMDEwMDAw
MDBaMCUxDjAMBgNVBAoMBVRlc3RzMRMwEQYDVQQDDAppZ25vcmVkLWNuMFkwEwYH
KoZIzj0CAQYIKoZIzj0DAQcDQgAEyFM3TLjGg1IGPkpQQ8t6rGsxu8Zd2JG8OUQc
Y0nEn32O6ZQKJkSXLB4oYBhgIH8NfZcHxo2iP0jndMJ9dZHMdaN2MHQwJAYDVR0R
BB0wG4IKY2kuZXhhbXBsZYINb3RoZXIuZXhhbXBsZTBMBgNVHSAERTBDMBcGFWmD
woSgpY3Rqri9l4CC7d+At5UwATAXBhVpg8KEoKWN0aq4vZeAgu3fgLeVMAUwCAYG
Z4EMAQIBMAUGAyoDBDAKBggqhkjOPQQDAgNIADBFAiAds286bRmeeT6A3bbBOouE
ijQPUr4UiMx65GgHSSNsEAIhAIh2+P97DYjLUM/ktywAx0ByVeFJ9p4vfphjfwGe
tz2X
-----END CERTIFICATE-----";

    /// Subject `O=Tests, CN=release-bot`, no extensions.
    const COMMON_NAME_ONLY: &str = "-----BEGIN CERTIFICATE-----
MIIBODCB36ADAgECAgEBMAoGCCqGSM49BAMCMCYxDjAMBgNVBAoMBVRlc3RzMRQw
EgYDVQQDDAtyZWxlYXNlLWJvdDAeFw0yNjAxMDEwMDAwMDBaFw0zNjAxMDEwMDAw
MDBaMCYxDjAMBgNVBAoMBVRlc3RzMRQwEgYDVQQDDAtyZWxlYXNlLWJvdDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABMhTN0y4xoNSBj5KUEPLeqxrMbvGXdiRvDlE
HGNJxJ99jumUCiZElyweKGAYYCB/DX2XB8aNoj9I53TCfXWRzHUwCgYIKoZIzj0E
AwIDSAAwRQIgWF3O1txG5jh9N4CPZKpH4t+QxqIe+iyu3wv88SxHTQ4CIQCkskeU
wQIbuG4OfIfY/JElfp68maFgU6vi+VMrK1SEwQ==
-----END CERTIFICATE-----";

    fn der(pem: &str) -> Vec<u8> {
        Certificate::from_pem(pem).unwrap().to_der().unwrap()
    }

    #[test]
    fn names_come_from_the_san_then_the_common_name_and_mapped_policies_become_scopes() {
        let extra = MtlsSettings {
            scopes: [("1.2.3.4".to_owned(), "legacy-pki".to_owned())].into(),
        };
        let mtls = Mtls::new(&extra).unwrap();
        assert_eq!(
            identity(&der(WITH_SCOPES), &mtls.scopes).unwrap(),
            Identity {
                name: "ci.example".into(),
                scopes: vec!["sign".into(), "read".into(), "legacy-pki".into()],
            }
        );
        assert_eq!(
            identity(&der(COMMON_NAME_ONLY), &mtls.scopes).unwrap(),
            Identity {
                name: "release-bot".into(),
                scopes: vec![],
            }
        );
        assert!(identity(b"garbage", &mtls.scopes).is_err());
        for bad in ["not.an.oid", "7.1", "1.40.2", "1"] {
            let settings = MtlsSettings {
                scopes: [(bad.to_owned(), "x".to_owned())].into(),
            };
            assert!(Mtls::new(&settings).is_err(), "{bad}");
        }
    }

    #[test]
    fn oids_encode_as_der_does() {
        // 1.2.840.113549 (RSA Data Security) and 2.5.29.32 (certificatePolicies), as every DER encoder writes them.
        assert_eq!(
            oid_bytes("1.2.840.113549").unwrap(),
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
        );
        assert_eq!(oid_bytes("2.5.29.32").unwrap(), [0x55, 0x1d, 0x20]);
        // A UUID arc: the first byte packs 2.25, then 128 bits in base 128.
        let ours = oid_bytes(&format!("{SCOPE_ARC}.1")).unwrap();
        assert_eq!((ours[0], ours.len()), (0x69, 1 + 19 + 1));
    }
}
