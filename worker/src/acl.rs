//! Who may do what. Principals are Kinto's vocabulary (`basicauth:ops`, `jwt:ci-bot`, `account:alice`,
//! `system.Authenticated`, `system.Everyone`, plus `scope:<name>` for what a certificate or KMS key vouches for);
//! `[permissions]` grants actions on source collections, buckets or everything. Pure: values in, answers out.
//!
//! Without a `[permissions]` table nothing is enforced (a single node on loopback, the default); with one,
//! every grant must be explicit, and a grant on a bucket covers its collections, as in Kinto.

use crate::config::ConfigError;
use signer_types::job::JobKind;
use signer_types::CollectionRef;

pub use crate::config::{Grants, PermissionSettings, ALL_RESOURCES};
use signer_types::principals::{Principals, EVERYONE};

/// Something a caller does to a source collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask for a job of this kind (the status `to-<kind>`, or `POST /v1/jobs`).
    Request(JobKind),
    /// Read jobs of the collection (their status, result and history).
    Read,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Request(kind) => write!(f, "request a {kind} of"),
            Action::Read => f.write_str("read the jobs of"),
        }
    }
}

impl Grants {
    fn principals(&self, action: Action) -> &[String] {
        match action {
            Action::Request(JobKind::Sign) => &self.sign,
            Action::Request(JobKind::Review) => &self.review,
            Action::Request(JobKind::Resign) => &self.resign,
            Action::Request(JobKind::Rollback) => &self.rollback,
            Action::Request(JobKind::Cleanup) => &self.cleanup,
            Action::Read => &self.read,
        }
    }
}

/// Compiled `[permissions]`, or the open mode when there are none.
#[derive(Debug, Clone, PartialEq)]
pub struct Permissions {
    settings: Option<PermissionSettings>,
}

impl Permissions {
    /// Checks every resource key names `*`, a bucket or a collection.
    pub fn new(settings: Option<PermissionSettings>) -> Result<Self, ConfigError> {
        if let Some(settings) = &settings {
            settings.check()?;
        }
        Ok(Self { settings })
    }

    /// Whether any rule is enforced (false: everyone may do everything).
    pub fn enforced(&self) -> bool {
        self.settings.is_some()
    }

    pub fn is_admin(&self, who: &Principals) -> bool {
        self.settings.as_ref().is_none_or(|s| who.any_in(&s.admin))
    }

    pub fn may_scrape_metrics(&self, who: &Principals) -> bool {
        self.settings
            .as_ref()
            .is_none_or(|s| who.any_in(&s.admin) || who.any_in(&s.metrics))
    }

    /// Whether `who` may do `action` on the source collection `source`: a grant on the collection, its bucket or
    /// `*`, or admin.
    pub fn allows(&self, who: &Principals, action: Action, source: &CollectionRef) -> bool {
        let Some(settings) = &self.settings else {
            return true;
        };
        if who.any_in(&settings.admin) {
            return true;
        }
        let keys = [
            ALL_RESOURCES.to_owned(),
            source.bucket.clone(),
            format!("{}/{}", source.bucket, source.collection),
        ];
        keys.iter()
            .filter_map(|k| settings.resources.get(k))
            .any(|grants| who.any_in(grants.principals(action)))
    }

    /// The principals a Kinto user has when Kinto relays their request (webhook or feed): Kinto authenticated
    /// them, so they count as `system.Authenticated` unless Kinto itself saw nobody.
    pub fn kinto_user(user_id: &str) -> Principals {
        if user_id.is_empty() || user_id == EVERYONE {
            Principals::anonymous()
        } else {
            Principals::user(user_id, [])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signer_types::principals::AUTHENTICATED;
    use std::collections::BTreeMap;

    fn permissions(toml_grants: &[(&str, Grants)], admin: &[&str]) -> Permissions {
        Permissions::new(Some(PermissionSettings {
            admin: admin.iter().map(|s| s.to_string()).collect(),
            metrics: vec!["basicauth:prometheus".into()],
            resources: toml_grants
                .iter()
                .map(|(k, g)| (k.to_string(), g.clone()))
                .collect(),
        }))
        .unwrap()
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grants_on_a_bucket_cover_its_collections_and_add_to_collection_grants() {
        let p = permissions(
            &[
                (
                    "ws",
                    Grants {
                        sign: list(&["jwt:release-bot"]),
                        ..Grants::default()
                    },
                ),
                (
                    "ws/cfr",
                    Grants {
                        sign: list(&["scope:sign"]),
                        read: list(&[AUTHENTICATED]),
                        ..Grants::default()
                    },
                ),
            ],
            &["basicauth:ops"],
        );
        let cfr = CollectionRef::new("ws", "cfr");
        let other = CollectionRef::new("ws", "other");
        let elsewhere = CollectionRef::new("security", "onecrl");
        let bot = Principals::user("jwt:release-bot", []);
        let cert = Principals::user("mtls:ci", ["scope:sign".to_owned()]);
        let sign = Action::Request(JobKind::Sign);
        assert!(p.allows(&bot, sign, &cfr));
        assert!(p.allows(&bot, sign, &other));
        assert!(!p.allows(&bot, sign, &elsewhere));
        assert!(!p.allows(&bot, Action::Request(JobKind::Rollback), &cfr));
        assert!(p.allows(&cert, sign, &cfr));
        assert!(
            !p.allows(&cert, sign, &other),
            "the scope is granted on cfr only"
        );
        assert!(p.allows(&cert, Action::Read, &cfr));
        assert!(!p.allows(&Principals::anonymous(), Action::Read, &cfr));
        let ops = Principals::user("basicauth:ops", []);
        assert!(p.allows(&ops, Action::Request(JobKind::Rollback), &elsewhere));
        assert!(p.is_admin(&ops) && !p.is_admin(&bot));
        assert!(p.may_scrape_metrics(&ops));
        assert!(!p.may_scrape_metrics(&bot));
    }

    #[test]
    fn without_permissions_everything_is_allowed_and_with_them_nothing_by_default() {
        let open = Permissions::new(None).unwrap();
        let anyone = Principals::anonymous();
        assert!(!open.enforced());
        assert!(open.allows(
            &anyone,
            Action::Request(JobKind::Sign),
            &CollectionRef::new("a", "b")
        ));
        assert!(open.is_admin(&anyone));
        let closed = Permissions::new(Some(PermissionSettings {
            admin: vec![],
            metrics: vec![EVERYONE.to_owned()],
            resources: BTreeMap::new(),
        }))
        .unwrap();
        let user = Principals::user("basicauth:alice", []);
        assert!(!closed.allows(
            &user,
            Action::Request(JobKind::Sign),
            &CollectionRef::new("a", "b")
        ));
        assert!(
            closed.may_scrape_metrics(&anyone),
            "metrics stay public by default"
        );
    }

    #[test]
    fn kinto_users_are_authenticated_unless_kinto_saw_nobody() {
        let p = permissions(
            &[(
                "*",
                Grants {
                    review: list(&[AUTHENTICATED]),
                    ..Grants::default()
                },
            )],
            &[],
        );
        let c = CollectionRef::new("ws", "cfr");
        let review = Action::Request(JobKind::Review);
        assert!(p.allows(&Permissions::kinto_user("account:alice"), review, &c));
        assert!(!p.allows(&Permissions::kinto_user(EVERYONE), review, &c));
        assert!(!p.allows(&Permissions::kinto_user(""), review, &c));
    }

    #[test]
    fn resource_keys_are_checked() {
        for bad in ["", "a/", "/b", "a/b/c"] {
            let settings = PermissionSettings {
                admin: vec![],
                metrics: vec![EVERYONE.to_owned()],
                resources: [(bad.to_owned(), Grants::default())].into(),
            };
            let err = Permissions::new(Some(settings)).unwrap_err().to_string();
            assert!(err.contains("expected \"*\""), "{bad:?}: {err}");
        }
    }
}
