//! A fresh Postgres database per test, dropped afterwards.

use sqlx::{Connection as _, Executor as _, PgConnection};

pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("SIGNER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("signer_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("Postgres must run at {admin} (set SIGNER_TEST_DATABASE_URL): {e}")
        });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("can create a test database");
        let base = admin
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&admin);
        Self {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("test database reachable")
    }
}

/// Drops a database, closing whatever is still connected to it.
async fn drop_database(admin: &str, name: &str) {
    if let Ok(mut conn) = PgConnection::connect(admin).await {
        let _ = conn
            .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await;
    }
}

impl TestDb {
    /// The database disappears under whoever uses it (as when Postgres is lost).
    pub async fn drop_now(&self) {
        drop_database(&self.admin, &self.name).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime we may block: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(drop_database(&admin, &name));
        })
        .join();
    }
}
