//! Servers of our own, for tests that restart them: a Postgres cluster and a RabbitMQ node on free ports, in
//! throw-away directories, stopped and deleted on drop. The machine's shared servers stay untouched.
//!
//! Both server packages refuse to run as root: as root, the servers run as their Debian system users
//! (`postgres`, `rabbitmq`), which own the directories.

use crate::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program args…`, as `user` when we are root; panics with its output if it fails.
fn run_as(user: &str, program: &Path, args: &[&str], env: &[(&str, String)]) {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let output = command
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn owned_dir(prefix: &str, user: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("can create a server directory");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", user])
            .arg(&dir)
            .status()
            .expect("chown runs");
        assert!(status.success());
    }
    dir
}

async fn wait_port(port: u16, what: &str) {
    crate::eventually(60, what, || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// A Postgres cluster of its own (trust auth, fsync off), for tests that restart the database.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    pub url: String,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config (postgresql server package) is installed");
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        let dir = owned_dir("signer-pg", "postgres");
        let data = dir.join("data");
        run_as(
            "postgres",
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
            &[],
        );
        let port = free_port();
        let server = Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            bin,
            port,
        };
        server.pg_ctl(&["start"]);
        wait_port(port, "the private Postgres").await;
        server
    }

    fn pg_ctl(&self, action: &[&str]) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        let mut args = vec!["-D", &data, "-l", &log, "-o", &options, "-w"];
        args.extend_from_slice(action);
        run_as("postgres", &self.bin.join("pg_ctl"), &args, &[]);
    }

    /// Stops the server the hard way (`immediate`: no checkpoint, clients cut off) and starts it again, as a
    /// crashed and restarted database looks to its clients.
    pub async fn restart(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
        self.pg_ctl(&["start"]);
        wait_port(self.port, "the private Postgres after its restart").await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.pg_ctl(&["-m", "immediate", "stop"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of its own (guest/guest on loopback), for tests that restart the broker.
pub struct PrivateBroker {
    dir: PathBuf,
    node: String,
    dist_port: u16,
    pub port: u16,
    pub url: String,
}

impl PrivateBroker {
    pub async fn start() -> Self {
        let dir = owned_dir("signer-rabbit", "rabbitmq");
        let port = free_port();
        let dist_port = free_port();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("can write the broker config");
        let broker = Self {
            node: format!("signer{port}@localhost"),
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
            dir,
            dist_port,
            port,
        };
        broker.start_node().await;
        broker
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let path = |name: &str| self.dir.join(name).display().to_string();
        vec![
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq")),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_PID_FILE", path("pid")),
        ]
    }

    async fn start_node(&self) {
        run_as(
            "rabbitmq",
            Path::new("/usr/sbin/rabbitmq-server"),
            &["-detached"],
            &self.env(),
        );
        wait_port(self.port, "the private RabbitMQ node").await;
    }

    fn stop_node(&self) {
        run_as(
            "rabbitmq",
            Path::new("/usr/sbin/rabbitmqctl"),
            &["-n", &self.node, "stop"],
            &self.env(),
        );
    }

    /// Stops the node (every connection dropped, queues written to disk) and starts it again.
    pub async fn restart(&self) {
        // A node of the same name cannot start while the old one's process lives. (`rabbitmqctl stop` given the
        // pid file would wait for it too, but looks once a second.)
        let pid = std::fs::read_to_string(self.dir.join("pid")).expect("the node's pid file");
        let process = PathBuf::from(format!("/proc/{}", pid.trim()));
        self.stop_node();
        crate::eventually(30, "the stopped node's process to exit", || {
            let gone = !process.exists();
            async move { gone.then_some(()) }
        })
        .await;
        self.start_node().await;
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.stop_node());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
