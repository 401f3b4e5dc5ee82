//! What a job carries out, as pure decisions. Whether a status change is allowed is decided inside Kinto by the
//! plugin of `deploy/kinto` (`signoff`, in the editor's own request); a job only carries out an accepted change,
//! while the source still asks for it, and writes what the change leads to.

use serde_json::{json, Map, Value};
use signer_types::job::{JobKind, Trigger};

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

/// An API call is an operator's explicit request: it runs as asked. A webhook or feed job carries out the change
/// it was queued for while the source still asks for it: a later change (an edit put the collection back to
/// work in progress, a reviewer approved the review being requested) supersedes it, and the job that change
/// queued carries that out. A re-sign always runs: it moves no records, and the certificate schedule asks for
/// them whatever the status.
/// `status` is that of a source collection that exists: a cleanup (asked by its deletion) is then superseded by
/// the collection made again, whose own requests bring the targets in line with it.
pub fn plan(trigger: Trigger, kind: JobKind, status: Option<&str>) -> Plan {
    if kind == JobKind::Cleanup {
        return Plan::Skip("superseded: the source collection exists again".into());
    }
    let asked = status.and_then(kind_for_status);
    if trigger == Trigger::Api || kind == JobKind::Resign || asked == Some(kind) {
        return Plan::Run(kind);
    }
    Plan::Skip(format!(
        "superseded: the source status is now {}",
        status.map_or("unset".to_owned(), |s| format!("{s:?}"))
    ))
}

/// The status a refused request puts back: the one before it, else the one that asks nothing.
pub fn status_after_refusal(action: JobKind, previous: Option<&str>) -> String {
    match (action, previous) {
        (_, Some(previous)) => previous.to_owned(),
        (JobKind::Sign, None) => TO_REVIEW.to_owned(),
        (_, None) => WORK_IN_PROGRESS.to_owned(),
    }
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
        // Who asked for the review was written with the request, in Kinto's transaction.
        JobKind::Review => {}
        JobKind::Resign => {
            // A re-sign asked through the status gives the status back; a scheduled one leaves it alone.
            if status_now == Some("to-resign") {
                set("status", previous.unwrap_or(WORK_IN_PROGRESS));
            }
            set("last_signature_by", requester);
            set("last_signature_date", now);
        }
        // The source is gone: nothing to write there.
        JobKind::Cleanup => {}
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
    fn a_status_change_is_carried_out_while_the_source_still_asks_for_it() {
        use JobKind::*;
        assert_eq!(
            plan(Trigger::Webhook, Sign, Some("to-sign")),
            Plan::Run(Sign)
        );
        // A review request followed by its approval: the review's job gives way to the approval's.
        assert!(
            matches!(plan(Trigger::Feed, Review, Some("to-sign")), Plan::Skip(r) if r.contains("superseded") && r.contains("\"to-sign\""))
        );
        // An edit after the approval put the collection back to work in progress: nothing reviewed to publish.
        assert!(matches!(
            plan(Trigger::Webhook, Sign, Some("work-in-progress")),
            Plan::Skip(_)
        ));
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
            plan(Trigger::Feed, Resign, Some("to-review")),
            Plan::Run(Resign)
        );
        // A deleted source made again before its cleanup ran: the new collection's requests take over.
        for trigger in [Trigger::Webhook, Trigger::Api] {
            assert!(
                matches!(plan(trigger, Cleanup, Some("signed")), Plan::Skip(r) if r.contains("exists again"))
            );
        }
        assert_eq!(
            plan(Trigger::Api, Sign, Some("work-in-progress")),
            Plan::Run(Sign)
        );
    }

    #[test]
    fn a_refused_request_puts_back_the_status_before_it() {
        assert_eq!(
            status_after_refusal(JobKind::Sign, Some("work-in-progress")),
            "work-in-progress"
        );
        assert_eq!(status_after_refusal(JobKind::Sign, None), "to-review");
        assert_eq!(
            status_after_refusal(JobKind::Rollback, None),
            "work-in-progress"
        );
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
        assert!(source_update(Review, "account:alice", now, Some("to-review"), None).is_empty());
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
