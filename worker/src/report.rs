//! What a running job tells the outside while it works: its progress (overwritten, written with the heartbeat)
//! and notes (appended to its history: a retried signer call, a refused approval).

use signer_types::job::Progress;
use signer_types::CollectionRef;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// One line for the job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub event: &'static str,
    pub detail: String,
}

/// The running job's side of the report.
#[derive(Debug)]
pub struct Report {
    progress: watch::Sender<Progress>,
    notes: mpsc::UnboundedSender<Note>,
    /// The phase under way and when it began, for `signer_job_phase_duration_seconds`.
    phase: std::sync::Mutex<Option<(String, Instant)>>,
}

/// The pool's side: the latest progress and the notes not yet written.
pub struct ReportReceiver {
    pub progress: watch::Receiver<Progress>,
    pub notes: mpsc::UnboundedReceiver<Note>,
}

impl Report {
    pub fn channel() -> (Report, ReportReceiver) {
        let (progress, progress_rx) = watch::channel(Progress::default());
        let (notes, notes_rx) = mpsc::unbounded_channel();
        (
            Report {
                progress,
                notes,
                phase: std::sync::Mutex::new(None),
            },
            ReportReceiver {
                progress: progress_rx,
                notes: notes_rx,
            },
        )
    }

    /// The job starts a phase on a collection (and the previous phase ends).
    pub fn enter(&self, phase: &str, collection: &CollectionRef) {
        self.end_phase(Some(phase));
        self.progress.send_modify(|p| {
            p.phase = phase.to_owned();
            p.collection = collection.uri();
        });
    }

    fn end_phase(&self, next: Option<&str>) {
        let mut current = self.phase.lock().expect("phase lock");
        if let Some((name, since)) = current.take() {
            crate::metrics::metrics()
                .phase_duration
                .with_label_values(&[&name])
                .observe(since.elapsed().as_secs_f64());
        }
        *current = next.map(|n| (n.to_owned(), Instant::now()));
    }

    pub fn update(&self, change: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(change);
    }

    pub fn note(&self, event: &'static str, detail: impl Into<String>) {
        // Nobody listening (a detached report) is fine: notes are for humans.
        let _ = self.notes.send(Note {
            event,
            detail: detail.into(),
        });
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        self.end_phase(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_keeps_the_latest_and_notes_keep_every_line() {
        let (report, mut rx) = Report::channel();
        report.enter("push", &CollectionRef::new("b", "c"));
        report.update(|p| p.records_pushed = 7);
        report.note("signer-retry", "503");
        report.note("signer-retry", "timeout");
        let seen = rx.progress.borrow_and_update().clone();
        assert_eq!(
            (
                seen.phase.as_str(),
                seen.collection.as_str(),
                seen.records_pushed
            ),
            ("push", "/buckets/b/collections/c", 7)
        );
        assert_eq!(rx.notes.try_recv().unwrap().detail, "503");
        assert_eq!(rx.notes.try_recv().unwrap().detail, "timeout");
        assert!(rx.notes.try_recv().is_err());
    }
}
