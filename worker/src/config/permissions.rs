//! `[permissions]`, as read from the settings; what they allow is the `acl` module's to answer.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use signer_types::principals::EVERYONE;
/// The key of the grants that cover every source collection.
pub const ALL_RESOURCES: &str = "*";

/// `[permissions]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PermissionSettings {
    /// May do anything: every action on every collection, list and cancel any job.
    #[serde(default)]
    pub admin: Vec<String>,
    /// May scrape `/metrics` (anyone unless restricted).
    #[serde(default = "everyone")]
    pub metrics: Vec<String>,
    /// Grants per source collection (`"<bid>/<cid>"`), bucket (`"<bid>"`) or all of them (`"*"`).
    #[serde(default)]
    pub resources: BTreeMap<String, Grants>,
}

/// The principals allowed each action on one collection, bucket or everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub sign: Vec<String>,
    #[serde(default)]
    pub review: Vec<String>,
    #[serde(default)]
    pub resign: Vec<String>,
    #[serde(default)]
    pub rollback: Vec<String>,
    #[serde(default)]
    pub cleanup: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
}

fn everyone() -> Vec<String> {
    vec![EVERYONE.to_owned()]
}

impl PermissionSettings {
    /// Every resource key names `*`, a bucket or a collection.
    pub fn check(&self) -> Result<(), ConfigError> {
        for key in self.resources.keys() {
            let valid = key == ALL_RESOURCES
                || match key.split_once('/') {
                    Some((b, c)) => !b.is_empty() && !c.is_empty() && !c.contains('/'),
                    None => !key.is_empty(),
                };
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "permissions.resources.{key:?}: expected \"*\", \"<bucket>\" or \"<bucket>/<collection>\""
                )));
            }
        }
        Ok(())
    }
}
