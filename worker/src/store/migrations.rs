//! Each store's migrations, embedded at build time (`build.rs`) and read the way `sqlx::migrate!` reads them:
//! `<version>_<description>.sql`, sqlx's SHA-384 checksum of the text (which a database that applied it keeps, so
//! an applied migration must never be edited), `-- no-transaction` honoured.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

pub fn postgres() -> Migrator {
    migrator(embedded::POSTGRES)
}

pub fn sqlite() -> Migrator {
    migrator(embedded::SQLITE)
}

fn migrator(files: &'static [(&'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(name, sql)| {
            let (version, rest) = name
                .split_once('_')
                .expect("migration files are named <version>_<description>.sql");
            let kind = MigrationType::from_filename(rest);
            Migration::new(
                version.parse().expect("a migration's version is a number"),
                Cow::Owned(rest.trim_end_matches(kind.suffix()).replace('_', " ")),
                kind,
                Cow::Borrowed(sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums that databases migrated by earlier builds (through `sqlx::migrate!`) hold, read from their
    /// `_sqlx_migrations` tables (SHA-384, first 8 bytes): a difference means an applied migration was edited or is
    /// read differently, which sqlx would refuse on every such database. A new migration adds its line.
    #[test]
    fn applied_migrations_keep_the_checksums_databases_hold() {
        let summary = |m: Migrator| -> Vec<(i64, String, String)> {
            m.iter()
                .map(|m| {
                    let hex: String = m.checksum[..8].iter().map(|b| format!("{b:02x}")).collect();
                    (m.version, m.description.to_string(), hex)
                })
                .collect()
        };
        let expected = |rows: &[(i64, &str, &str)]| -> Vec<(i64, String, String)> {
            rows.iter()
                .map(|&(v, d, c)| (v, d.to_owned(), c.to_owned()))
                .collect()
        };
        assert_eq!(
            summary(postgres()),
            expected(&[
                (20261122000001, "jobs", "ae11d65c58f97b3f"),
                (20261122000002, "progress", "4935d23eae2a4ee1"),
                (20261122000003, "workflow", "ffda5ea439e2dabe"),
                (20261122000004, "outbox", "ebbebfabcbaf0c96"),
                (20261201000005, "unchecked events", "a5829cc689bba6cf"),
                (20261205000006, "cleanup kind", "d232a6548eec15c2"),
                (20261205000007, "webhook calls", "1841b2b8308c324d"),
                (20261205000008, "store heartbeat", "0dcf48449fddb89f"),
            ])
        );
        assert_eq!(
            summary(sqlite()),
            expected(&[
                (20261122000001, "jobs", "1648934ccdeae064"),
                (20261122000002, "progress", "0b67a325f95267ce"),
                (20261122000003, "workflow", "e2ab9021459f8b15"),
                (20261205000004, "cleanup kind", "a76e794dc8250fd5"),
                (20261205000005, "webhook calls", "c2ca6ed89ad25830"),
                (20261205000006, "store heartbeat", "6f5f49866ac87fd5"),
            ])
        );
    }
}
