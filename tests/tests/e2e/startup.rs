//! A bad configuration stops the binaries at start-up with a message that says what to fix.

use signer_e2e::disk::Tmpfs;
use signer_e2e::service::{bin, run_binary, Setup, TempDir};
use std::process::Command;

fn run(binary: &str, config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let config = ["--config".as_ref(), config.as_os_str()];
    run_binary(
        binary,
        config
            .into_iter()
            .chain(args.iter().map(std::ffi::OsStr::new)),
    )
}

#[test]
fn bad_configurations_fail_fast_with_an_actionable_message() {
    let setup = Setup::new(
        "postgres://postgres@127.0.0.1:1/nowhere",
        "http://127.0.0.1:9/v1",
        "ws/a -> prod/a",
        "",
    );
    let original = std::fs::read_to_string(&setup.config).unwrap();
    let cases = [
        (
            original.clone(),
            "database unreachable at postgres://postgres@127.0.0.1:1/nowhere",
        ),
        (
            original.replace("ws/a -> prod/a", "ws/a -> /buckets/prod"),
            "cannot mix bucket and collection URIs",
        ),
        (
            original.replace("ecdsa.private.pem", "missing.pem"),
            "cannot read the private key",
        ),
        (
            format!("{original}\n[worker]\nconcurency = 3\n"),
            "unknown field: found `concurency`, expected `one of `concurrency`",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&setup.config, text).unwrap();
        for (binary, args) in [("signer-worker", &[][..]), ("signer-api", &["serve"][..])] {
            let (code, stderr) = run(binary, &setup.config, args);
            assert_eq!(code, 1, "{binary}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{binary} should say {expected:?}, said: {stderr}"
            );
        }
    }
}

#[test]
fn bad_authentication_settings_stop_the_api_before_it_connects_anywhere() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/a -> prod/a", "");
    let original = std::fs::read_to_string(&setup.config).unwrap();
    let cases = [
        ("[auth]\npolicies = [\"jwt\"]\n", "auth.policies lists jwt but there is no [auth.jwt] table"),
        (
            "[auth]\npolicies = [\"basicauth\"]\n[auth.basicauth.users]\nci = \"hunter2\"\n",
            "users.ci: not a PHC password hash",
        ),
        (
            "[auth]\npolicies = [\"jwt\"]\n[auth.jwt]\nalgorithm = \"none\"\npublic_key = \"x\"\n",
            "never none",
        ),
        (
            "[auth]\npolicies = [\"cavage\"]\n[auth.cavage.keys.k]\nalgorithm = \"ed25519\"\npublic_key_file = \"/nonexistent.pem\"\n",
            "[auth.cavage]: keys.k: cannot read /nonexistent.pem",
        ),
        ("[auth]\npolicies = [\"mtls\"]\n", "set api.tls.client_ca_dir"),
        ("[auth.jwt]\npublic_key = \"x\"\n", "auth.policies does not list \"jwt\""),
        ("[permissions.resources.\"a/b/c\"]\nsign = []\n", "expected \"*\", \"<bucket>\" or"),
        (
            "[api.tls]\ncert_file = \"/nonexistent.crt\"\nkey_file = \"/nonexistent.key\"\n",
            "cannot read the certificate chain /nonexistent.crt",
        ),
    ];
    for (extra, expected) in cases {
        std::fs::write(&setup.config, format!("{original}\n{extra}")).unwrap();
        let (code, stderr) = run("signer-api", &setup.config, &["serve"]);
        assert_eq!(code, 1, "{extra}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{extra}: should say {expected:?}, said: {stderr}"
        );
    }
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("keygen");
    let key = dir.0.join("signer.pem");
    let keygen = || {
        Command::new(bin("signer-api"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
    };
    assert!(keygen().status.success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let public = std::fs::read_to_string(dir.0.join("signer.pub.pem")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    let again = keygen();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

/// Issue 32, item 10, as an operator's bad day: the log sink gone (a log shipper or `tee` that died: stderr is a
/// pipe without a reader) or full (`/dev/full`). The API still starts, serves, and stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_log_sink_neither_stops_nor_blocks_the_service() {
    let setup = Setup::new(
        "",
        "http://127.0.0.1:9/v1",
        "ws/cfr -> prod/cfr",
        "[api]\nshutdown_delay_seconds = 0\n[feed]\nenabled = false\n",
    );
    for sink in ["closed pipe", "/dev/full"] {
        let stderr: std::process::Stdio = match sink {
            "/dev/full" => std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap()
                .into(),
            _ => {
                let (reader, writer) = std::io::pipe().unwrap();
                drop(reader);
                writer.into()
            }
        };
        let port = signer_e2e::free_port();
        let mut child = Command::new(bin("signer-api"))
            .arg("--config")
            .arg(&setup.config)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "1",
            ])
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}/__lbheartbeat__");
        signer_e2e::eventually(30, &format!("serving with stderr on a {sink}"), || async {
            let answer = reqwest::get(&url).await.ok()?;
            (answer.status() == 200).then_some(())
        })
        .await;
        for _ in 0..20 {
            assert_eq!(reqwest::get(&url).await.unwrap().status(), 200, "{sink}");
        }
        let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dropped = signer_e2e::metric(&metrics, "signer_log_writes_dropped_total", &[]);
        assert!(dropped.is_some_and(|n| n > 0.0), "{sink}: {dropped:?}");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{sink}: SIGTERM did not stop the service"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(status.success(), "{sink}: {status:?}");
    }
}

/// Starts `processes` `signer-api migrate` at the same instant with `config`; every one must succeed.
fn start_together(config: &std::path::Path, processes: usize, round: usize) {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(processes));
    let runs: Vec<_> = (0..processes)
        .map(|_| {
            let (barrier, config) = (barrier.clone(), config.to_owned());
            std::thread::spawn(move || {
                barrier.wait();
                run("signer-api", &config, &["migrate"])
            })
        })
        .collect();
    for run in runs {
        let (code, text) = run.join().unwrap();
        assert_eq!(code, 0, "round {round}: a process failed to start: {text}");
    }
}

/// Processes started together on one new store (an embedded SQLite file, or an empty Postgres database) all
/// start: the migrations take turns, the losers wait and go on. Many rounds, each on a new store.
#[tokio::test(flavor = "multi_thread")]
async fn processes_starting_together_on_a_new_store_all_start() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/a -> prod/a", "");
    let original = std::fs::read_to_string(&setup.config).unwrap();
    let data_dir = format!("data_dir = \"{}\"", setup.dir.0.display());
    for round in 0..15 {
        let dir = setup.dir.0.join(format!("round-{round}"));
        let config = setup.dir.0.join(format!("round-{round}.toml"));
        std::fs::write(
            &config,
            original.replace(&data_dir, &format!("data_dir = \"{}\"", dir.display())),
        )
        .unwrap();
        start_together(&config, 3, round);
    }
    for round in 0..5 {
        let db = signer_e2e::db::TestDb::create().await;
        let config = setup.dir.0.join(format!("pg-{round}.toml"));
        std::fs::write(
            &config,
            original.replace(
                "database_url = \"\"",
                &format!("database_url = \"{}\"", db.url),
            ),
        )
        .unwrap();
        start_together(&config, 3, round);
    }
}

/// Both binaries stop at start-up with one message naming the embedded store `file`, `cause` once, and `hint`.
fn refused_with(config: &std::path::Path, file: &std::path::Path, cause: &str, hint: &str) {
    for (binary, args) in [("signer-worker", &[][..]), ("signer-api", &["migrate"][..])] {
        let (code, text) = run(binary, config, args);
        assert_eq!(code, 1, "{binary}: {text}");
        let named = format!("the embedded store {} cannot be used", file.display());
        assert_eq!(text.matches(&named).count(), 1, "{binary}: {text}");
        assert_eq!(
            text.matches(cause).count(),
            1,
            "{binary}, the cause once: {text}"
        );
        assert!(text.contains(hint), "{binary} should say {hint:?}: {text}");
        assert!(
            !text.contains("database_url"),
            "no database is configured: {binary}: {text}"
        );
    }
}

/// An embedded store that cannot be opened stops both binaries with one message naming the file, its cause once,
/// and what to do about that cause.
#[test]
fn an_embedded_store_that_cannot_be_opened_is_named_with_its_cause() {
    let setup = Setup::new("", "http://127.0.0.1:9/v1", "ws/a -> prod/a", "");
    let file = setup.dir.0.join("signer.db");
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    refused_with(
        &setup.config,
        &file,
        "file is not a database",
        "restore it from a backup",
    );

    // A store made on a disk that is then remounted read-only.
    let disk = setup.dir.0.join("disk");
    let Some(tmpfs) = Tmpfs::mount(&disk, "8m") else {
        return;
    };
    let original = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        original.replace(
            &format!("data_dir = \"{}\"", setup.dir.0.display()),
            &format!("data_dir = \"{}\"", disk.display()),
        ),
    )
    .unwrap();
    let (code, text) = run("signer-api", &setup.config, &["migrate"]);
    assert_eq!(code, 0, "{text}");
    tmpfs.make_read_only();
    refused_with(
        &setup.config,
        &disk.join("signer.db"),
        "Read-only file system",
        "must be writable",
    );
}
