//! A job: "bring the destination in line with the source and sign it". States, kinds and what they mean.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where a job is in its life. `queued` and `running` are live; the others are final.
    JobState {
        Queued => "queued",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

string_enum!(
    /// What the job does to the collection: the status value that asks for it, without `to-`; or `cleanup`,
    /// asked by the source collection's deletion (its preview and destination emptied and signed).
    JobKind {
        Sign => "sign",
        Review => "review",
        Resign => "resign",
        Rollback => "rollback",
        Cleanup => "cleanup",
    }
);

string_enum!(
    /// Who asked.
    Trigger {
        Webhook => "webhook",
        Api => "api",
        Feed => "feed",
    }
);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    /// Source collection URI, `/buckets/<b>/collections/<c>`.
    pub resource: String,
    pub destination: String,
    pub preview: Option<String>,
    pub kind: JobKind,
    pub state: JobState,
    pub priority: i32,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub trigger: Trigger,
    pub requested_by: String,
    pub source_timestamp: Option<i64>,
    /// The source's status before the one that asked for this job, when the trigger knew it.
    pub previous_status: Option<String>,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How far the current (or last) attempt got.
    pub progress: Option<Progress>,
}

/// What a running job reports about itself, so a long sign shows it is moving.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Progress {
    /// `snapshot`, `push`, `sign`, `publish` or `finish`.
    pub phase: String,
    /// The collection being worked on.
    pub collection: String,
    pub records_fetched: usize,
    pub records_to_push: usize,
    pub records_pushed: usize,
}

impl Job {
    /// The `result` of a job that ran out of attempts on failures that were all worth retrying: what it asked
    /// may still be done later (the change feed asks again), unlike a job that failed for good.
    pub fn out_of_retries() -> serde_json::Value {
        serde_json::json!({ "out_of_retries": true })
    }

    pub fn ran_out_of_retries(&self) -> bool {
        self.state == JobState::Failed
            && self
                .result
                .as_ref()
                .and_then(|r| r.get("out_of_retries"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
    }

    /// The proof a worker holds while running this attempt; every write it makes is guarded by it.
    pub fn lease(&self) -> Option<Lease> {
        Some(Lease {
            job_id: self.id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone()?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: Uuid,
    pub attempt: i32,
    pub worker_id: String,
}

/// A request for work, before the store gives it an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub resource: String,
    pub destination: String,
    pub preview: Option<String>,
    pub kind: JobKind,
    pub priority: i32,
    pub max_attempts: i32,
    pub trigger: Trigger,
    pub requested_by: String,
    pub source_timestamp: Option<i64>,
    pub previous_status: Option<String>,
}

impl NewJob {
    /// A request for `resource` as configured; no source timestamp or previous status known yet.
    pub fn new(
        resource: &crate::resources::Resource,
        kind: JobKind,
        trigger: Trigger,
        requested_by: String,
        max_attempts: i32,
    ) -> Self {
        Self {
            resource: resource.source.uri(),
            destination: resource.destination.uri(),
            preview: resource.preview.as_ref().map(|p| p.uri()),
            kind,
            priority: 0,
            max_attempts,
            trigger,
            requested_by,
            source_timestamp: None,
            previous_status: None,
        }
    }

    /// Whether this request rewrites the queued job it coalesces onto. The latest status change is what the
    /// collection asks for now; a re-sign is the weakest request (every other kind signs too, or will be
    /// followed by one), so it never rewrites another kind. A rewrite takes the whole request: kind, requester
    /// and trigger together, so the job runs under the authority of whoever asked for what it now does (an
    /// operator's API call is not checked again; a Kinto user's status change is).
    pub fn rewrites(&self, queued: &Job) -> bool {
        self.kind != JobKind::Resign
            && (
                self.kind,
                self.trigger,
                self.requested_by.as_str(),
                self.previous_status.as_deref(),
            ) != (
                queued.kind,
                queued.trigger,
                queued.requested_by.as_str(),
                queued.previous_status.as_deref(),
            )
    }
}

/// One line of a job's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct JobEvent {
    pub at: DateTime<Utc>,
    pub event: String,
    pub attempt: i32,
    pub worker_id: Option<String>,
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>().unwrap(), *state);
        }
        let err = "done".parse::<JobState>().unwrap_err();
        assert!(
            err.contains("queued, running, succeeded, failed, cancelled"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&JobKind::Resign).unwrap(),
            "\"resign\""
        );
    }

    #[test]
    fn only_succeeded_failed_cancelled_are_final() {
        let finals: Vec<_> = JobState::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [
                &JobState::Succeeded,
                &JobState::Failed,
                &JobState::Cancelled
            ]
        );
    }
}
