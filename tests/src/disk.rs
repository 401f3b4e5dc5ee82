//! A small filesystem of a test's own, to fill up or to make read-only under a running store: a tmpfs mounted over
//! a directory. Mounting needs root (CI runs as root); elsewhere `mount` gives `None` and the test says it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `8m`) over `dir`, creating it.
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("can create the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (it needs root)");
        }
        mounted.then(|| Self(dir.to_owned()))
    }

    /// From now on nothing on it can be written, by root either.
    pub fn make_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .expect("runs mount");
        assert!(status.success(), "remount read-only: {status:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
