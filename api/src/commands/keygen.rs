//! `keygen`: a fresh P-384 key pair, the private half readable by its owner only.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

pub fn keygen(out: &Path, force: bool) -> anyhow::Result<std::process::ExitCode> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let public_path = public_key_path(out);
    let (private, public) = signer_worker::signing::generate_key_pair();
    let open = |path: &Path, mode: u32| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        options.open(path).with_context(|| {
            format!(
                "cannot create {} (use --force to replace it)",
                path.display()
            )
        })
    };
    // 0600 from creation, not chmod afterwards: the key is never readable by others, even briefly.
    open(out, 0o600)?.write_all(private.as_bytes())?;
    std::fs::set_permissions(out, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    open(&public_path, 0o644)?.write_all(public.as_bytes())?;
    println!(
        "private key: {}\npublic key:  {}",
        out.display(),
        public_path.display()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// `keys/ec.pem` → `keys/ec.pub.pem`.
fn public_key_path(private: &Path) -> PathBuf {
    let stem = private
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ecdsa".into());
    let ext = private
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pem".into());
    let stem = stem.strip_suffix(".private").unwrap_or(&stem).to_owned();
    private.with_file_name(format!("{stem}.pub.{ext}"))
}
