//! Who a caller is, in Kinto's vocabulary: a user id (`basicauth:ops`, `jwt:ci-bot`, `account:alice`), the
//! system principals every caller has, and `scope:<name>` for what a certificate or KMS key vouches for.

pub const EVERYONE: &str = "system.Everyone";
pub const AUTHENTICATED: &str = "system.Authenticated";

/// Who a caller is: their user id (if they proved one) and every principal that gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principals {
    user_id: Option<String>,
    all: Vec<String>,
}

impl Principals {
    /// Nobody in particular: only `system.Everyone`.
    pub fn anonymous() -> Self {
        Self {
            user_id: None,
            all: vec![EVERYONE.to_owned()],
        }
    }

    /// A proven user id, plus what else the credential vouches for (scopes).
    pub fn user(user_id: impl Into<String>, extra: impl IntoIterator<Item = String>) -> Self {
        let user_id = user_id.into();
        let mut all = vec![
            user_id.clone(),
            AUTHENTICATED.to_owned(),
            EVERYONE.to_owned(),
        ];
        all.extend(extra);
        Self {
            user_id: Some(user_id),
            all,
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    pub fn all(&self) -> &[String] {
        &self.all
    }

    /// Whether any of these principals is one of the caller's.
    pub fn any_in(&self, granted: &[String]) -> bool {
        granted.iter().any(|g| self.all.contains(g))
    }
}
