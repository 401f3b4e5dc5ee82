//! kinto-signer's review workflow as pure decisions (spec §3.2): which action a job performs given the source's
//! status when it runs, who may ask for it, and what the source's tracking fields become.

use crate::job::{JobKind, Trigger};
use serde_json::{json, Map, Value};

pub const WORK_IN_PROGRESS: &str = "work-in-progress";
pub const TO_REVIEW: &str = "to-review";
pub const SIGNED: &str = "signed";

/// The job kind a source status asks for; `None` for resting statuses (`work-in-progress`, `signed`).
pub fn kind_for_status(status: &str) -> Option<JobKind> {
    match status {
        "to-sign" => Some(JobKind::Sign),
        "to-review" => Some(JobKind::Review),
        "to-resign" => Some(JobKind::Resign),
        "to-rollback" => Some(JobKind::Rollback),
        _ => None,
    }
}

/// What a job does once it sees the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Run(JobKind),
    Skip(String),
}

/// An API call is an operator's explicit request: it runs as asked. A webhook or feed job acts on the status the
/// source has *now* (the status it was queued for may have been superseded, or already handled by another
/// job); with a resting status only a re-sign still makes sense (the certificate schedule asks for those).
pub fn plan(trigger: Trigger, kind: JobKind, status: Option<&str>) -> Plan {
    if trigger == Trigger::Api {
        return Plan::Run(kind);
    }
    match status.and_then(kind_for_status) {
        Some(asked) => Plan::Run(asked),
        None if kind == JobKind::Resign => Plan::Run(JobKind::Resign),
        None => Plan::Skip(format!(
            "source status is {}: nothing to do",
            status.map_or("unset".to_owned(), |s| format!("{s:?}"))
        )),
    }
}

/// Who is asking, and what the source says about the review so far.
pub struct ReviewFacts<'a> {
    pub requester: &'a str,
    /// The status before the one that asked, when the trigger knew it.
    pub previous_status: Option<&'a str>,
    pub last_review_request_by: Option<&'a str>,
    /// Whether the requester is in the group this action needs (editors for a review, reviewers for a sign).
    pub in_group: bool,
    pub group: &'a str,
}

/// Why a review-enabled resource refuses this action, or `None` when it may go ahead (kinto-signer's
/// `check_collection_status` rules).
pub fn refusal(action: JobKind, facts: &ReviewFacts<'_>) -> Option<String> {
    let who = facts.requester;
    match action {
        JobKind::Review if !facts.in_group => Some(format!(
            "{who} is not in the {} group: cannot request a review",
            facts.group
        )),
        JobKind::Sign => {
            if let Some(previous) = facts.previous_status.filter(|p| *p != TO_REVIEW) {
                return Some(format!(
                    "to-sign from {previous:?}: review is enabled, so changes must be in to-review first"
                ));
            }
            if !facts.in_group {
                return Some(format!(
                    "{who} is not in the {} group: cannot approve",
                    facts.group
                ));
            }
            if facts.last_review_request_by == Some(who) {
                return Some(format!(
                    "{who} requested the review: the last editor cannot review"
                ));
            }
            None
        }
        _ => None,
    }
}

/// The status a refused request puts back: the one before it, else the one that asks nothing.
pub fn status_after_refusal(action: JobKind, previous: Option<&str>) -> String {
    match (action, previous) {
        (_, Some(previous)) => previous.to_owned(),
        (JobKind::Sign, None) => TO_REVIEW.to_owned(),
        (_, None) => WORK_IN_PROGRESS.to_owned(),
    }
}

/// Whether a principal is among a Kinto group's members (`system.Authenticated` admits any named user).
pub fn is_member(members: &[Value], principal: &str) -> bool {
    members.iter().filter_map(Value::as_str).any(|m| {
        m == principal
            || m == "system.Everyone"
            || (m == "system.Authenticated" && !principal.is_empty())
    })
}

/// What a successful action writes on the source metadata (status and kinto-signer's tracking fields).
/// `status_now` is the status the job saw; `previous` the one before it, if known.
pub fn source_update(
    action: JobKind,
    requester: &str,
    now: &str,
    status_now: Option<&str>,
    previous: Option<&str>,
) -> Map<String, Value> {
    let mut fields = Map::new();
    let mut set = |k: &str, v: &str| {
        fields.insert(k.to_owned(), json!(v));
    };
    match action {
        JobKind::Sign => {
            set("status", SIGNED);
            if previous != Some(SIGNED) {
                set("last_review_by", requester);
                set("last_review_date", now);
            }
            set("last_signature_by", requester);
            set("last_signature_date", now);
        }
        JobKind::Review => {
            set("last_review_request_by", requester);
            set("last_review_request_date", now);
        }
        JobKind::Resign => {
            // A re-sign asked through the status gives the status back; a scheduled one leaves it alone.
            if status_now == Some("to-resign") {
                set("status", previous.unwrap_or(WORK_IN_PROGRESS));
            }
            set("last_signature_by", requester);
            set("last_signature_date", now);
        }
        JobKind::Rollback => {
            set("status", SIGNED);
            set("last_edit_by", requester);
            set("last_edit_date", now);
            set("last_editor_comment", "");
            set("last_reviewer_comment", "");
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_and_feed_jobs_follow_the_current_status_api_jobs_run_as_asked() {
        use JobKind::*;
        assert_eq!(
            plan(Trigger::Webhook, Sign, Some("to-sign")),
            Plan::Run(Sign)
        );
        assert_eq!(
            plan(Trigger::Feed, Review, Some("to-sign")),
            Plan::Run(Sign)
        );
        assert!(
            matches!(plan(Trigger::Webhook, Sign, Some("signed")), Plan::Skip(r) if r.contains("\"signed\""))
        );
        assert!(
            matches!(plan(Trigger::Feed, Rollback, None), Plan::Skip(r) if r.contains("unset"))
        );
        assert_eq!(
            plan(Trigger::Feed, Resign, Some("signed")),
            Plan::Run(Resign)
        );
        assert_eq!(
            plan(Trigger::Api, Sign, Some("work-in-progress")),
            Plan::Run(Sign)
        );
    }

    fn facts<'a>(
        requester: &'a str,
        previous: Option<&'a str>,
        last: Option<&'a str>,
        in_group: bool,
    ) -> ReviewFacts<'a> {
        ReviewFacts {
            requester,
            previous_status: previous,
            last_review_request_by: last,
            in_group,
            group: "cfr-reviewers",
        }
    }

    #[test]
    fn approvals_need_a_review_request_another_user_and_a_reviewer() {
        use JobKind::*;
        assert_eq!(
            refusal(
                Sign,
                &facts(
                    "account:bob",
                    Some("to-review"),
                    Some("account:alice"),
                    true
                )
            ),
            None
        );
        assert_eq!(
            refusal(
                Sign,
                &facts("account:bob", None, Some("account:alice"), true)
            ),
            None
        );
        let own = refusal(
            Sign,
            &facts(
                "account:alice",
                Some("to-review"),
                Some("account:alice"),
                true,
            ),
        )
        .unwrap();
        assert!(own.contains("last editor cannot review"), "{own}");
        let outsider = refusal(
            Sign,
            &facts(
                "account:eve",
                Some("to-review"),
                Some("account:alice"),
                false,
            ),
        )
        .unwrap();
        assert!(
            outsider.contains("not in the cfr-reviewers group"),
            "{outsider}"
        );
        let early = refusal(
            Sign,
            &facts("account:bob", Some("work-in-progress"), None, true),
        )
        .unwrap();
        assert!(
            early.contains("to-sign from \"work-in-progress\""),
            "{early}"
        );
        assert!(refusal(Review, &facts("account:eve", None, None, false)).is_some());
        assert_eq!(
            refusal(Resign, &facts("account:eve", None, None, false)),
            None
        );
        assert_eq!(
            status_after_refusal(Sign, Some("work-in-progress")),
            "work-in-progress"
        );
        assert_eq!(status_after_refusal(Sign, None), "to-review");
    }

    #[test]
    fn membership_by_principal_or_system_principals() {
        let members = [json!("account:alice"), json!("ldap:bob")];
        assert!(is_member(&members, "ldap:bob"));
        assert!(!is_member(&members, "account:eve"));
        assert!(is_member(&[json!("system.Authenticated")], "account:eve"));
    }

    #[test]
    fn tracking_fields_as_kinto_signer_writes_them() {
        use JobKind::*;
        let now = "2026-11-22T10:00:00.000000+00:00";
        let sign = source_update(Sign, "account:bob", now, Some("to-sign"), Some("to-review"));
        assert_eq!(sign["status"], "signed");
        assert_eq!(sign["last_review_by"], "account:bob");
        assert_eq!(sign["last_signature_date"], now);
        let resign = source_update(Sign, "account:bob", now, Some("to-sign"), Some("signed"));
        assert!(!resign.contains_key("last_review_by"));
        let review = source_update(Review, "account:alice", now, Some("to-review"), None);
        assert!(!review.contains_key("status"));
        assert_eq!(review["last_review_request_by"], "account:alice");
        let restored = source_update(Resign, "p", now, Some("to-resign"), Some("to-review"));
        assert_eq!(restored["status"], "to-review");
        let scheduled = source_update(Resign, "p", now, Some("signed"), None);
        assert!(!scheduled.contains_key("status"));
        let rollback = source_update(Rollback, "account:alice", now, Some("to-rollback"), None);
        assert_eq!(
            (
                rollback["status"].as_str(),
                rollback["last_editor_comment"].as_str()
            ),
            (Some("signed"), Some(""))
        );
    }
}
