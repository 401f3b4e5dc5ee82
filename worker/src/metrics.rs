//! The `signer_*` Prometheus series, in one registry per process: `signer-api serve --workers N` runs
//! the API and workers in one process, so both feed the same `/metrics`.

use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

/// Seconds, from a few milliseconds (a Kinto call) to minutes (a 100k-record sign).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    pub jobs_enqueued: IntCounterVec,
    pub jobs_finished: IntCounterVec,
    pub job_duration: HistogramVec,
    pub phase_duration: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub oldest_runnable_age: Gauge,
    pub retries: IntCounter,
    pub rescued: IntCounter,
    pub signer_calls: HistogramVec,
    pub kinto_requests: HistogramVec,
    pub http_requests: HistogramVec,
    pub auth_failures: IntCounterVec,
    pub records_copied: IntCounterVec,
    pub payload_bytes: IntCounter,
    pub broker_connected: IntGaugeVec,
    pub broker_sessions_failed: IntCounterVec,
    pub doorbells_published: IntCounter,
    pub deliveries: IntCounterVec,
    pub dead_letters: IntGauge,
    pub outbox_pending: IntGauge,
    pub worker_heartbeat: IntGauge,
    pub certificate_expiry: IntGauge,
    pub feed_checks: IntCounterVec,
    pub log_writes_dropped: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let plain = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let queue_depth = gauges(
            "signer_queue_depth",
            "Jobs in the store, by state",
            &["state"],
        );
        let oldest = Gauge::new(
            "signer_queue_oldest_runnable_age_seconds",
            "How long the oldest runnable queued job has waited",
        )
        .expect("valid metric");
        r.register(Box::new(oldest.clone())).expect("unique metric");
        let feed_checks = counter(
            &r,
            "signer_feed_checks_total",
            "Looks of the change feed's leader, by check (changes: collections asking for work; resigns: \
             signatures due again) and outcome (ok, failed)",
            &["check", "outcome"],
        );
        // Every series from the start, so that a rate of failures has a baseline before the first one.
        for check in ["changes", "resigns"] {
            for outcome in ["ok", "failed"] {
                feed_checks.with_label_values(&[check, outcome]);
            }
        }
        Self {
            jobs_enqueued: counter(
                &r,
                "signer_jobs_enqueued_total",
                "Signing requests recorded (new or coalesced)",
                &["trigger", "coalesced"],
            ),
            jobs_finished: counter(
                &r,
                "signer_jobs_finished_total",
                "Job attempts finished, by outcome",
                &["outcome"],
            ),
            job_duration: histogram(
                &r,
                "signer_job_duration_seconds",
                "One attempt, claim to outcome",
                &["kind"],
            ),
            phase_duration: histogram(
                &r,
                "signer_job_phase_duration_seconds",
                "Time spent in each phase of a job",
                &["phase"],
            ),
            retries: plain(
                "signer_job_retries_total",
                "Attempts that failed transiently and were scheduled again",
            ),
            rescued: plain(
                "signer_leases_rescued_total",
                "Running jobs whose lease expired and were rescued",
            ),
            signer_calls: histogram(
                &r,
                "signer_signer_call_duration_seconds",
                "Calls to the signer, by backend and outcome",
                &["backend", "outcome"],
            ),
            kinto_requests: histogram(
                &r,
                "signer_kinto_request_duration_seconds",
                "Kinto requests, by server and status class",
                &["server", "status"],
            ),
            http_requests: histogram(
                &r,
                "signer_http_request_duration_seconds",
                "API requests, by route and status",
                &["route", "status"],
            ),
            auth_failures: counter(
                &r,
                "signer_auth_failures_total",
                "Refused callers, by scheme and reason",
                &["scheme", "reason"],
            ),
            records_copied: counter(
                &r,
                "signer_records_copied_total",
                "Record writes pushed to previews, destinations and rolled-back sources, by how they were sent \
                 (bulk: the listener plugin's endpoint; batch: /v1/batch)",
                &["via"],
            ),
            payload_bytes: plain(
                "signer_payload_bytes_signed_total",
                "Bytes of canonical JSON signed",
            ),
            broker_connected: gauges(
                "signer_broker_connected",
                "1 while the RabbitMQ relay or consumer of this process is connected",
                &["role"],
            ),
            broker_sessions_failed: counter(
                &r,
                "signer_broker_sessions_failed_total",
                "RabbitMQ sessions of the relay or consumer that ended in an error (each one is retried with \
                 backoff; a rate above zero for long is an outage)",
                &["role"],
            ),
            log_writes_dropped: plain(
                "signer_log_writes_dropped_total",
                "Log lines that could not be written (stderr closed or full) and were dropped",
            ),
            doorbells_published: plain(
                "signer_doorbells_published_total",
                "Job ids published to RabbitMQ and confirmed by the broker",
            ),
            deliveries: counter(
                &r,
                "signer_doorbells_delivered_total",
                "RabbitMQ deliveries, by what the claim made of them",
                &["outcome", "redelivered"],
            ),
            dead_letters: gauge(
                "signer_dead_letters",
                "Messages in the RabbitMQ dead-letter queue",
            ),
            outbox_pending: gauge(
                "signer_outbox_pending",
                "Doorbells written in Postgres and not yet confirmed by RabbitMQ",
            ),
            worker_heartbeat: gauge(
                "signer_worker_heartbeat_timestamp_seconds",
                "Unix time of this process's worker pool's last maintenance tick (0: no pool here)",
            ),
            certificate_expiry: gauge(
                "signer_certificate_earliest_expiry_timestamp_seconds",
                "Unix time the earliest x5u end-entity certificate of a published signature expires (0: unknown)",
            ),
            feed_checks,
            queue_depth,
            oldest_runnable_age: oldest,
            registry: r,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// `2xx`, `4xx`, `5xx`, or `error` when no answer came.
pub fn status_class(status: Option<u16>) -> String {
    status.map_or_else(|| "error".to_owned(), |s| format!("{}xx", s / 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_render_with_their_labels() {
        let m = metrics();
        m.jobs_finished.with_label_values(&["succeeded"]).inc();
        m.kinto_requests
            .with_label_values(&["127.0.0.1:8888", &status_class(Some(503))])
            .observe(0.02);
        let text = m.render();
        assert!(
            text.contains("signer_jobs_finished_total{outcome=\"succeeded\"}"),
            "{text}"
        );
        assert!(text.contains(
            "signer_kinto_request_duration_seconds_count{server=\"127.0.0.1:8888\",status=\"5xx\"} 1"
        ));
        assert_eq!(status_class(None), "error");
    }
}
