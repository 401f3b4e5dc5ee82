//! The embedded store's file as it was when opened. A file deleted or replaced while in use (a volume remounted,
//! a clean-up script, an operator) would take every job accepted since with it, silently: SQLite keeps writing to
//! the open, unlinked inode. A file overwritten in place (a restore over a running service, a bad copy) goes
//! unnoticed too: the store's one connection keeps serving and writing from its cache and its write-ahead log. So
//! every write, and every health check, first checks that the path still names the file that was opened, that the
//! file still starts as an SQLite database, and that its disk has room; a failure is said once in the log until it
//! clears.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Below this much free space on the file's disk, writes are refused before SQLite fails halfway.
const MIN_FREE_BYTES: u64 = 1 << 20;

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

pub struct StoreFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
    /// Held open so that its inode is not reused by a new file at the same path (SQLite holds it too, but that is
    /// SQLite's business), and read for its header.
    held: std::fs::File,
    reported: AtomicBool,
}

impl StoreFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let held = std::fs::File::open(path)?;
        Ok(Self {
            path: path.to_owned(),
            identity: identity(&held.metadata()?),
            held,
            reported: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok` while the path names the opened file, the file starts as an SQLite database and its disk has room.
    pub fn check(&self) -> Result<(), StoreError> {
        let now = std::fs::metadata(&self.path).map(|m| identity(&m));
        let problem = match now {
            Ok(now) if now == self.identity => {
                if !starts_as_sqlite(&self.held) {
                    Some(
                        "was overwritten while in use: it no longer starts as an SQLite database; jobs are \
                         refused until it is restored from a backup (or moved away to start empty) and the \
                         service restarted"
                            .to_owned(),
                    )
                } else {
                    match free_bytes(&self.path) {
                        Some(free) if free < MIN_FREE_BYTES => Some(format!(
                            "has {free} bytes free on its disk: writes are refused below {MIN_FREE_BYTES}"
                        )),
                        _ => None,
                    }
                }
            }
            _ => Some(
                "was deleted or replaced while in use: jobs are refused until the service restarts on a file it \
                 can keep (jobs accepted before are only in the old file, if it still exists)"
                    .to_owned(),
            ),
        };
        match problem {
            None => {
                if self.reported.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "the embedded store is writable again");
                }
                Ok(())
            }
            Some(reason) => {
                if !self.reported.swap(true, Ordering::Relaxed) {
                    tracing::error!(path = %self.path.display(), "the embedded store {reason}");
                }
                Err(StoreError::Unusable {
                    path: self.path.display().to_string(),
                    reason,
                })
            }
        }
    }
}

/// Whether the file's first bytes are SQLite's header (read at offset 0, whatever else reads the file).
#[cfg(unix)]
fn starts_as_sqlite(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt as _;
    let mut header = [0u8; SQLITE_HEADER.len()];
    file.read_exact_at(&mut header, 0).is_ok() && &header == SQLITE_HEADER
}

#[cfg(not(unix))]
fn starts_as_sqlite(_: &std::fs::File) -> bool {
    true
}

/// Device and inode, on Unix; elsewhere nothing to compare (`None` both times).
fn identity(metadata: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        Some((metadata.dev(), metadata.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        None
    }
}

#[cfg(unix)]
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_deleted_replaced_or_overwritten_is_noticed() {
        let dir = std::env::temp_dir().join(format!("store-file-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jobs.db");
        std::fs::write(&path, SQLITE_HEADER).unwrap();
        let file = StoreFile::open(&path).unwrap();
        assert!(file.check().is_ok());
        // Overwritten in place: the same file, no longer a database.
        std::fs::write(&path, [0u8; 16]).unwrap();
        assert!(
            matches!(file.check(), Err(StoreError::Unusable { reason, .. }) if reason.contains("overwritten"))
        );
        std::fs::write(&path, SQLITE_HEADER).unwrap();
        assert!(file.check().is_ok(), "restored in place");
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(file.check(), Err(StoreError::Unusable { .. })));
        std::fs::write(&path, b"a new file").unwrap();
        assert!(
            matches!(file.check(), Err(StoreError::Unusable { .. })),
            "a new file at the same path is not the one holding the jobs"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
