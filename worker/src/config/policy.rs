//! Per-resource settings, looked up like kinto-signer's `signer.<bid>.<cid>.<name>` then `signer.<bid>.<name>`
//! then the global value: which signer signs a collection, and whether its changes need a review.

use super::{AutographSettings, ConfigError, EcdsaSettings, Settings};
use serde::{Deserialize, Serialize};
use signer_types::CollectionRef;

/// One `[overrides."<bucket>"]` or `[overrides."<bucket>/<collection>"]` table; unset fields inherit.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub signer_backend: Option<String>,
    pub to_review_enabled: Option<bool>,
    pub editors_group: Option<String>,
    pub reviewers_group: Option<String>,
    pub ecdsa: Option<EcdsaSettings>,
    pub autograph: Option<AutographOverride>,
}

/// Autograph settings of a bucket or collection: each unset field is the global one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AutographOverride {
    pub server_url: Option<String>,
    pub hawk_id: Option<String>,
    pub hawk_secret: Option<String>,
    pub key_ids: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerBackend {
    LocalEcdsa,
    Autograph,
}

impl SignerBackend {
    /// kinto-signer's dotted names (`kinto_signer.signer.autograph`) are accepted too.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name.rsplit('.').next() {
            Some("local_ecdsa") => Ok(SignerBackend::LocalEcdsa),
            Some("autograph") => Ok(SignerBackend::Autograph),
            _ => Err(ConfigError::Invalid(format!(
                "unknown signer_backend {name:?} (expected local_ecdsa or autograph)"
            ))),
        }
    }
}

/// How one source collection is signed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SignerConfig {
    LocalEcdsa(EcdsaSettings),
    Autograph(AutographSettings),
}

/// Everything the workflow needs to know about one source collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePolicy {
    pub signer: SignerConfig,
    pub to_review_enabled: bool,
    /// Group ids in the source bucket, placeholders resolved.
    pub editors_group: String,
    pub reviewers_group: String,
}

impl Settings {
    /// The overrides that apply to `source`, most specific last.
    fn overrides_for(&self, source: &CollectionRef) -> impl Iterator<Item = &Override> {
        let keys = [
            source.bucket.clone(),
            format!("{}/{}", source.bucket, source.collection),
        ];
        keys.into_iter()
            .filter_map(|key| self.overrides.get(&key))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The settings of one source collection: collection override, then bucket override, then global.
    pub fn policy(&self, source: &CollectionRef) -> Result<ResourcePolicy, ConfigError> {
        let mut backend = self.signer_backend.clone();
        let mut to_review_enabled = self.to_review_enabled;
        let mut editors = self.editors_group.clone();
        let mut reviewers = self.reviewers_group.clone();
        let mut ecdsa = self.ecdsa.clone();
        let mut autograph = self.autograph.clone();
        for o in self.overrides_for(source) {
            backend = o.signer_backend.clone().unwrap_or(backend);
            to_review_enabled = o.to_review_enabled.unwrap_or(to_review_enabled);
            editors = o.editors_group.clone().unwrap_or(editors);
            reviewers = o.reviewers_group.clone().unwrap_or(reviewers);
            ecdsa = o.ecdsa.clone().unwrap_or(ecdsa);
            if let Some(a) = &o.autograph {
                autograph = a.apply(autograph);
            }
        }
        let signer = match SignerBackend::parse(&backend)? {
            SignerBackend::LocalEcdsa => SignerConfig::LocalEcdsa(ecdsa),
            SignerBackend::Autograph => SignerConfig::Autograph(autograph.ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{source}: signer_backend is autograph but no [autograph] server_url, hawk_id and hawk_secret are set"
                ))
            })?),
        };
        let fill = |template: &str| {
            template
                .replace("{bucket_id}", &source.bucket)
                .replace("{collection_id}", &source.collection)
        };
        Ok(ResourcePolicy {
            signer,
            to_review_enabled,
            editors_group: fill(&editors),
            reviewers_group: fill(&reviewers),
        })
    }

    /// Every distinct signer configuration in use (the global one and the overrides'), checking that every
    /// override key names a bucket or a collection and resolves.
    pub fn signer_configs(&self) -> Result<Vec<SignerConfig>, ConfigError> {
        // A collection no override names: what the global settings give.
        let mut configs = vec![self.policy(&CollectionRef::new("", ""))?.signer];
        for key in self.overrides.keys() {
            let source = match key.split_once('/') {
                Some((b, c)) => CollectionRef::new(b, c),
                None => CollectionRef::new(key.as_str(), ""),
            };
            if source.bucket.is_empty() || source.collection.contains('/') {
                return Err(ConfigError::Invalid(format!(
                    "overrides.{key:?}: expected \"<bucket>\" or \"<bucket>/<collection>\""
                )));
            }
            let signer = self.policy(&source)?.signer;
            if !configs.contains(&signer) {
                configs.push(signer);
            }
        }
        Ok(configs)
    }
}

impl AutographOverride {
    fn apply(&self, base: Option<AutographSettings>) -> Option<AutographSettings> {
        let mut merged = base.unwrap_or_default();
        if let Some(v) = &self.server_url {
            merged.server_url = v.clone();
        }
        if let Some(v) = &self.hawk_id {
            merged.hawk_id = v.clone();
        }
        if let Some(v) = &self.hawk_secret {
            merged.hawk_secret = v.clone();
        }
        if let Some(v) = &self.key_ids {
            merged.key_ids = v.clone();
        }
        (!merged.server_url.is_empty()).then_some(merged)
    }
}
