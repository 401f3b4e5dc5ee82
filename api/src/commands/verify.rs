//! `verify`: fetch a collection, rebuild what clients serialize, check every signature; print a verdict.

use anyhow::Context as _;
use signer_types::CollectionRef;
use signer_worker::config::{ServerSettings, Settings};
use signer_worker::kinto::KintoClient;
use signer_worker::signing::parse_public_key;
use signer_worker::signing::x5u::{self, TrustAnchors};
use signer_worker::verifier::{verify_collection, FixedKey, Report, X5uChains};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The collection's URL, e.g. https://kinto.example.com/v1/buckets/main/collections/regions
    url: String,
    /// PEM public key the signature must verify with (signatures from a local key usually carry no x5u).
    /// Without it, the key comes from each signature's x5u certificate chain.
    #[arg(long)]
    public_key: Option<PathBuf>,
    /// The name the x5u end-entity certificate must be issued to (its SAN dNSName).
    #[arg(long, default_value = "remote-settings.content-signature.mozilla.org")]
    signer_name: String,
    /// SHA-256 of the x5u chain's root certificate (hex, colons allowed), as Firefox pins it.
    #[arg(long, group = "anchor")]
    root_sha256: Option<String>,
    /// A PEM file of root certificates the x5u chain must lead to.
    #[arg(long, group = "anchor")]
    roots: Option<PathBuf>,
    /// Accept whatever self-signed root ends the x5u chain. Anyone can make such a chain: the verdict then only
    /// says the data matches the signature, not who signed it.
    #[arg(long, group = "anchor")]
    insecure_any_root: bool,
}

/// The trust anchor the x5u chains must lead to; none given is refused rather than guessed.
fn trust_anchors(args: &VerifyArgs) -> anyhow::Result<TrustAnchors> {
    if let Some(pin) = &args.root_sha256 {
        return Ok(TrustAnchors::Pinned(pin.clone()));
    }
    if let Some(path) = &args.roots {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the roots file {}", path.display()))?;
        let roots = x5u::read_roots(&pem).with_context(|| format!("{}", path.display()))?;
        return Ok(TrustAnchors::Roots(roots));
    }
    if args.insecure_any_root {
        return Ok(TrustAnchors::AnyRoot);
    }
    anyhow::bail!(
        "name the trust anchor for x5u chains: --root-sha256 <hex> (the pinned root), --roots <pem file>, \
         or --insecure-any-root to accept any root (then nothing says who signed)"
    )
}

/// Splits `https://host/v1/buckets/b/collections/c` into the server's base URL and the collection.
fn split_collection_url(url: &str) -> anyhow::Result<(String, CollectionRef)> {
    let at = url
        .find("/buckets/")
        .context("the URL must end in /buckets/<bid>/collections/<cid>")?;
    let collection = CollectionRef::parse(url[at..].trim_end_matches('/'))?;
    Ok((url[..at].to_owned(), collection))
}

pub async fn verify(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (server, collection) = split_collection_url(&args.url)?;
    let settings = ServerSettings {
        url: server,
        ..Settings::default().kinto.source
    };
    let kinto = KintoClient::new(&settings).map_err(anyhow::Error::msg)?;
    let report = match &args.public_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?;
            let key = parse_public_key(&pem).map_err(|e| {
                anyhow::anyhow!("{} is not a P-384 public key: {e}", path.display())
            })?;
            let keys = FixedKey(key, format!("public key {}", path.display()));
            verify_collection(&kinto, &collection, &keys).await?
        }
        None => {
            let keys = X5uChains::new(args.signer_name.clone(), trust_anchors(&args)?);
            verify_collection(&kinto, &collection, &keys).await?
        }
    };
    print!("{}", render(&args.url, &report));
    Ok(if report.valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn render(url: &str, report: &Report) -> String {
    let mut out = format!(
        "collection  {url}\nrecords     {} (timestamp {}, {} bytes signed)\n",
        report.records, report.timestamp, report.payload_bytes
    );
    for check in &report.checks {
        let x5u = if check.signature.x5u.is_empty() {
            "none"
        } else {
            &check.signature.x5u
        };
        out += &format!(
            "signature   {}… ({}, x5u {x5u}) against {}: {}\n",
            check
                .signature
                .signature
                .chars()
                .take(16)
                .collect::<String>(),
            check.signature.mode,
            check.key,
            if check.valid { "valid" } else { "INVALID" }
        );
    }
    out += if report.valid() {
        "verdict     VALID: clients will accept this collection\n"
    } else {
        "verdict     INVALID: clients will reject this collection\n"
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_urls_split_into_server_and_collection() {
        let (server, c) =
            split_collection_url("https://h.example/v1/buckets/main/collections/regions/").unwrap();
        assert_eq!(
            (server.as_str(), c),
            (
                "https://h.example/v1",
                CollectionRef::new("main", "regions")
            )
        );
        assert!(split_collection_url("https://h.example/v1/").is_err());
        assert!(split_collection_url("https://h.example/v1/buckets/main").is_err());
    }
}
