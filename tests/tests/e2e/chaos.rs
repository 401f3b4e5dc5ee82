//! Chaos: four worker processes sign 300 collections triggered in bursts while a worker is SIGKILLed (and
//! restarted) every few seconds, and the broker and the database are each restarted once. At the end every job
//! succeeded without help, every destination verifies with the independent verifier, and no destination ever
//! had two running attempts at once. Once with RabbitMQ dispatch, once with Postgres alone.

use rand::Rng as _;
use serde_json::{json, Value};
use signer_e2e::eventually;
use signer_e2e::kinto::KintoServer;
use signer_e2e::private::{PrivateBroker, PrivatePostgres};
use signer_e2e::rabbitmq::dispatch_settings;
use signer_e2e::service::{Api, Process, Setup};
use sqlx::{Connection as _, PgConnection, Row as _};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const COLLECTIONS: usize = 300;
const BURSTS: usize = 6;
const WORKERS: usize = 4;
const KILL_EVERY: Duration = Duration::from_millis(2500);
const KILLS: usize = 8;

fn collection(i: usize) -> String {
    format!("c{i:03}")
}

/// One bucket of collections with a couple of records each, written with batch requests.
async fn create_sources(kinto: &KintoServer) {
    let editor = kinto.editor();
    editor
        .ok(
            reqwest::Method::PUT,
            "/buckets/ws",
            Some(json!({"permissions": {"write": ["system.Authenticated"]}})),
        )
        .await;
    let requests: Vec<Value> = (0..COLLECTIONS)
        .flat_map(|i| {
            let path = format!("/buckets/ws/collections/{}", collection(i));
            [
                json!({"method": "PUT", "path": path, "body": {"data": {}}}),
                json!({"method": "PUT", "path": format!("{path}/records/r1"), "body": {"data": {"n": i}}}),
                json!({"method": "PUT", "path": format!("{path}/records/r2"), "body": {"data": {"title": format!("record {i}")}}}),
            ]
        })
        .collect();
    for chunk in requests.chunks(25) {
        editor
            .ok(
                reqwest::Method::POST,
                "/batch",
                Some(json!({"requests": chunk})),
            )
            .await;
    }
}

fn spawn_worker(setup: &Setup, generation: usize) -> Process {
    Process::spawn(
        "signer-worker",
        &[],
        &setup.config,
        setup.dir.0.join(format!("worker-{generation}.log")),
    )
}

/// POSTs until the API takes it: a request during the database restart gets a 503, as a client would see.
async fn trigger(api: &Api, resource: String) {
    let body = json!({ "resource": resource }).to_string();
    eventually(60, "the API to take the trigger", || {
        let body = body.clone();
        async move {
            let (status, _, _) = api.post("/v1/jobs", &body).await;
            (status == 202).then_some(())
        }
    })
    .await;
}

async fn connect(url: &str) -> Option<PgConnection> {
    PgConnection::connect(url).await.ok()
}

/// Every transition of every job, per destination, in the order the store wrote them: a `running` must end
/// (succeeded, failed, retry, released, rescued, cancelled) before the next `running` of that destination.
fn assert_never_two_writers(events: &[(String, String, String, i32)]) {
    let mut open: HashMap<&str, (&str, i32)> = HashMap::new();
    for (destination, job, event, attempt) in events {
        match event.as_str() {
            "running" => {
                if let Some(other) = open.insert(destination, (job, *attempt)) {
                    panic!("{destination}: {job} attempt {attempt} started while {other:?} was running");
                }
            }
            "succeeded" | "failed" | "retry" | "released" | "rescued" | "cancelled"
                if open.get(destination.as_str()) == Some(&(job.as_str(), *attempt)) =>
            {
                open.remove(destination.as_str());
            }
            _ => {}
        }
    }
    assert!(open.is_empty(), "attempts never ended: {open:?}");
}

/// The number of jobs once every collection has a succeeded job and no job is in another state.
async fn progress(url: &str) -> Option<i64> {
    let mut conn = connect(url).await?;
    let row = sqlx::query(
        "SELECT count(DISTINCT resource) FILTER (WHERE state = 'succeeded') AS done,
                count(*) FILTER (WHERE state <> 'succeeded') AS other, count(*) AS jobs FROM jobs",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    let (done, other): (i64, i64) = (row.get("done"), row.get("other"));
    (done == COLLECTIONS as i64 && other == 0).then(|| row.get("jobs"))
}

/// Jobs by state, with an error each, for a failure message.
async fn summary(url: &str) -> String {
    let Some(mut conn) = connect(url).await else {
        return "database unreachable".into();
    };
    let rows: Vec<(String, i64, Option<String>)> =
        sqlx::query_as("SELECT state, count(*), max(last_error) FROM jobs GROUP BY state")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    format!("{rows:?}")
}

async fn chaos_run(rabbitmq: bool) {
    let started = Instant::now();
    let db = PrivatePostgres::start().await;
    let broker = match rabbitmq {
        true => Some(PrivateBroker::start().await),
        false => None,
    };
    let kinto = KintoServer::start().await;
    create_sources(&kinto).await;
    let dispatch = match &broker {
        Some(b) => format!(
            "dispatch = \"rabbitmq\"\n{}",
            dispatch_settings(&b.url, "signer.jobs")
        ),
        None => "dispatch = \"postgres\"\n".into(),
    };
    let extra = format!(
        "[queue]\nlease_seconds = 4\npoll_interval_ms = 1000\nbackoff_min_ms = 200\nbackoff_max_ms = 2000\n\
         rescue_interval_seconds = 1\nmax_attempts = 50\n{dispatch}[worker]\nconcurrency = 2\n\
         shutdown_grace_seconds = 2\n[feed]\nenabled = false\n"
    );
    let setup = Setup::new(&db.url, &kinto.url, "/buckets/ws -> /buckets/prod", &extra);
    let api = Api::start(&setup, 0).await;
    let mut workers: Vec<Process> = (0..WORKERS).map(|g| spawn_worker(&setup, g)).collect();
    let setup_done = started.elapsed();

    let triggers = async {
        for burst in 0..BURSTS {
            let per = COLLECTIONS / BURSTS;
            let posts = (burst * per..(burst + 1) * per)
                .map(|i| trigger(&api, format!("ws/{}", collection(i))));
            futures::future::join_all(posts).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };
    let chaos = async {
        for kill in 1..=KILLS {
            tokio::time::sleep(KILL_EVERY).await;
            let victim = rand::thread_rng().gen_range(0..workers.len());
            workers[victim].kill();
            workers[victim] = spawn_worker(&setup, WORKERS + kill);
            match (kill, &broker) {
                (2, Some(broker)) => broker.restart().await,
                (4, _) => db.restart().await,
                _ => {}
            }
        }
    };
    tokio::join!(triggers, chaos);

    // Nobody helps from here on: the workers alone finish the work.
    let deadline = Instant::now() + Duration::from_secs(240);
    let (jobs, elapsed) = loop {
        if let Some(done) = progress(&db.url).await {
            break (done, started.elapsed());
        }
        if Instant::now() > deadline {
            panic!(
                "not every collection was signed in time: {}\n{}",
                summary(&db.url).await,
                workers
                    .iter()
                    .map(|w| w
                        .log_text()
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut conn = connect(&db.url).await.expect("the private Postgres");
    let events: Vec<(String, String, String, i32)> = sqlx::query(
        "SELECT j.destination, j.id::text AS job, e.event, e.attempt FROM job_events e JOIN jobs j ON j.id = e.job_id
         ORDER BY e.id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("destination"), r.get("job"), r.get("event"), r.get("attempt")))
    .collect();
    assert_never_two_writers(&events);
    let count = |name: &str| events.iter().filter(|e| e.2 == name).count();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM jobs GROUP BY state")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        states,
        [("succeeded".to_owned(), jobs)],
        "every job succeeded"
    );
    assert!(
        count("rescued") >= 1,
        "the kills hit running jobs (else this run proved nothing)"
    );
    if rabbitmq {
        let by_doorbell: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM job_events WHERE event = 'running' AND detail = 'doorbell'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            by_doorbell as usize >= COLLECTIONS / 2,
            "most claims came from RabbitMQ, not the sweep: {by_doorbell}"
        );
        println!("chaos (rabbitmq): {by_doorbell} claims from doorbells");
        // Doorbells a killed relay held, or whose confirm a broker restart swallowed, are published again
        // once their hold expires.
        eventually(30, "every doorbell confirmed by the broker", || async {
            let mut conn = connect(&db.url).await?;
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_outbox")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            (left == 0).then_some(())
        })
        .await;
    }
    let names: Vec<String> = (0..COLLECTIONS)
        .map(|i| format!("prod/{}", collection(i)))
        .collect();
    setup.assert_all_verify(&kinto.url, &names);
    println!(
        "chaos ({}): {jobs} jobs for {COLLECTIONS} collections in {:.1}s after {:.1}s of set-up; \
         {KILLS} workers killed, {} rescues, {} retries, {} releases",
        if rabbitmq { "rabbitmq" } else { "postgres" },
        (elapsed - setup_done).as_secs_f64(),
        setup_done.as_secs_f64(),
        count("rescued"),
        count("retry"),
        count("released"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_with_rabbitmq_dispatch_loses_nothing_and_never_runs_a_destination_twice_at_once() {
    chaos_run(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_with_postgres_dispatch_loses_nothing_and_never_runs_a_destination_twice_at_once() {
    chaos_run(false).await;
}
