//! The signers of a deployment: one per distinct configuration (the global one and each override's), built
//! and checked at start-up, looked up per source collection.

use super::{
    AutographSigner, LocalEcdsaSigner, Message, SignatureMetadata, Signer, SigningError,
    PROBE_PAYLOAD,
};
use crate::config::SignerConfig;
use crate::report::Report;

pub enum AnySigner {
    Local(LocalEcdsaSigner),
    Autograph(AutographSigner),
}

impl AnySigner {
    pub fn build(config: &SignerConfig) -> Result<Self, SigningError> {
        match config {
            SignerConfig::LocalEcdsa(ecdsa) => {
                let path = ecdsa.private_key.as_deref().ok_or(SigningError::NoKey)?;
                Ok(AnySigner::Local(
                    LocalEcdsaSigner::from_pem_file(path)?.with_x5u(ecdsa.x5u.clone()),
                ))
            }
            SignerConfig::Autograph(settings) => {
                Ok(AnySigner::Autograph(AutographSigner::new(settings)?))
            }
        }
    }

    /// Asks a remote signer to sign a probe payload, so that a refusing or broken signer fails a job before it
    /// writes anything; a local key cannot fail that way.
    pub async fn probe(&self, report: &Report) -> Result<(), SigningError> {
        match self {
            AnySigner::Local(_) => Ok(()),
            AnySigner::Autograph(_) => self
                .sign(&Message::of_bytes(PROBE_PAYLOAD), report)
                .await
                .map(drop),
        }
    }

    /// `local_ecdsa` or `autograph`, for logs and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            AnySigner::Local(_) => "local_ecdsa",
            AnySigner::Autograph(_) => "autograph",
        }
    }
}

impl Signer for AnySigner {
    async fn sign(
        &self,
        message: &Message<'_>,
        report: &Report,
    ) -> Result<Vec<SignatureMetadata>, SigningError> {
        let started = std::time::Instant::now();
        let result = match self {
            AnySigner::Local(s) => s.sign(message, report).await,
            AnySigner::Autograph(s) => s.sign(message, report).await,
        };
        crate::metrics::metrics()
            .signer_calls
            .with_label_values(&[self.backend(), if result.is_ok() { "ok" } else { "error" }])
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

pub struct SignerSet {
    signers: Vec<(SignerConfig, AnySigner)>,
}

impl SignerSet {
    pub fn build(configs: Vec<SignerConfig>) -> Result<Self, SigningError> {
        let signers = configs
            .into_iter()
            .map(|config| AnySigner::build(&config).map(|signer| (config, signer)))
            .collect::<Result<_, _>>()?;
        Ok(Self { signers })
    }

    /// The signer built for `config`; every configuration a policy can resolve to was built at start-up.
    pub fn get(&self, config: &SignerConfig) -> Option<&AnySigner> {
        self.signers
            .iter()
            .find(|(c, _)| c == config)
            .map(|(_, signer)| signer)
    }

    pub fn iter(&self) -> impl Iterator<Item = &AnySigner> {
        self.signers.iter().map(|(_, s)| s)
    }
}
