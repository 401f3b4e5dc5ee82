//! Only one change-feed poller acts at a time, however many workers run: the leader holds a session-level
//! Postgres advisory lock on a connection of its own. If that connection dies, Postgres releases the lock and
//! another worker takes over on its next tick. The embedded store serves one process: it always leads.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use std::str::FromStr as _;

/// The advisory lock key: "signerfd" in ASCII, unlikely to collide with an application's own keys.
const LOCK_KEY: i64 = 0x7369_676e_6572_6664;

pub enum Leader {
    Postgres {
        options: Box<PgConnectOptions>,
        conn: Option<PgConnection>,
        held: bool,
    },
    Alone,
}

impl Leader {
    pub fn postgres(url: &str) -> Result<Self, sqlx::Error> {
        Ok(Leader::Postgres {
            options: Box::new(PgConnectOptions::from_str(url)?),
            conn: None,
            held: false,
        })
    }

    /// Whether this process leads now: keeps the lock it holds (checking its connection is alive), or tries to
    /// take it.
    pub async fn check(&mut self) -> bool {
        let Leader::Postgres {
            options,
            conn,
            held,
        } = self
        else {
            return true;
        };
        if conn.is_none() {
            *held = false;
            match PgConnection::connect_with(options).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: cannot reach the database for leadership");
                    return false;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let answer = if *held {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(&mut *c)
                .await
                .map(|_| true)
        } else {
            sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *c)
                .await
        };
        match answer {
            Ok(leads) => {
                if leads && !*held {
                    tracing::info!("change feed: this worker is the leader");
                }
                *held = leads;
                leads
            }
            Err(e) => {
                if *held {
                    tracing::warn!(error = %e, "change feed: lost the leader connection");
                }
                *conn = None;
                *held = false;
                false
            }
        }
    }
}
