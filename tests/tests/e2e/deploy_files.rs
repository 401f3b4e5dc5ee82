//! The deploy files cannot run here (no container engine), so what can be checked is: the alert rules pass
//! promtool, every command line they contain uses flags the binaries really have, every setting they pass
//! loads, the Kubernetes objects probe and scale what they should, and the Dockerfile ships real binaries.

use serde_json::Value;
use signer_api::settings::Config;
use signer_e2e::root;
use signer_e2e::service::{bin, run_binary, Api, Setup, TempDir};
use std::process::Command;

fn deploy_facts() -> Value {
    let output = Command::new(signer_e2e::venv_bin("python"))
        .arg(root().join("tests/python/deploy_commands.py"))
        .arg(root().join("deploy"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON facts")
}

fn promtool(args: &[&str]) {
    let output = Command::new(root().join(".tools/bin/promtool"))
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool is unpacked (`make tools`)");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    promtool(&["check", "rules", "signer-alerts.yml"]);
    promtool(&["test", "rules", "signer-alerts.test.yml"]);
}

#[test]
fn every_command_line_in_compose_kubernetes_and_systemd_uses_real_flags() {
    let facts = deploy_facts();
    let commands = facts["commands"].as_array().unwrap();
    assert!(commands.len() >= 11, "{commands:?}");
    for service in [
        "compose:signer-api:healthcheck",
        "compose:signer-worker:healthcheck",
    ] {
        assert!(
            commands.iter().any(|c| c["where"] == service),
            "{service}: {commands:?}"
        );
    }
    for command in commands {
        let argv: Vec<&str> = command["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let binary = argv[0].rsplit('/').next().unwrap();
        // signer-api has subcommands; signer-worker has none.
        let (help_args, flags) = match binary {
            "signer-api" => (vec![argv[1], "--help"], &argv[2..]),
            _ => (vec!["--help"], &argv[1..]),
        };
        let (code, help) = run_binary(binary, &help_args);
        assert_eq!(
            code, 0,
            "{}: {binary} {help_args:?}: {help}",
            command["where"]
        );
        for flag in flags.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{}: {binary} has no {flag}:\n{help}",
                command["where"]
            );
        }
    }
}

/// The settings files of Compose and of the Kubernetes ConfigMap load, with every SIGNER_* variable the deploy
/// files set (a misspelt setting would be refused: settings deny unknown fields).
#[test]
fn the_deployed_settings_and_variables_load() {
    let facts = deploy_facts();
    let dir = TempDir::new("signer-deploy");
    let compose = std::fs::read_to_string(root().join("deploy/compose/signer.toml")).unwrap();
    let kubernetes = facts["kubernetes_config"].as_str().unwrap().to_owned();
    for (name, text) in [("compose", compose), ("kubernetes", kubernetes)] {
        // Each deployment's own variables only (this test runs in a process of its own).
        let variables: Vec<&str> = facts["variables"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .filter(|v| *v != "SIGNER_CONFIG")
            .collect();
        for variable in &variables {
            let value = match *variable {
                "SIGNER_DATABASE_URL" => "postgres://signer:x@db:5432/signer",
                "SIGNER_RABBITMQ__URL" => "amqp://signer:x@rabbitmq:5672/%2f",
                _ => "a-secret",
            };
            std::env::set_var(variable, value);
        }
        let path = dir.0.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let Config {
            service: settings,
            auth,
            ..
        } = Config::load(Some(&path)).unwrap_or_else(|e| panic!("{name} settings: {e}"));
        assert_eq!(
            settings.queue.dispatch,
            signer_worker::config::Dispatch::Rabbitmq,
            "{name}"
        );
        assert!(
            settings.worker.metrics_listen.is_some(),
            "{name}: workers expose metrics"
        );
        assert!(
            settings.permissions.is_some(),
            "{name}: an API listening on 0.0.0.0 enforces permissions"
        );
        if variables.contains(&"SIGNER_AUTH__BASICAUTH__USERS__OPS") {
            let users = &auth.basicauth.as_ref().expect("basicauth").users;
            assert_eq!(
                users.get("ops").map(String::as_str),
                Some("a-secret"),
                "{name}"
            );
        }
        for variable in variables {
            std::env::remove_var(variable);
        }
    }
}

#[test]
fn kubernetes_probes_and_autoscaler_point_at_the_right_things() {
    let facts = deploy_facts();
    let objects = facts["objects"].as_array().unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let api = &find("Deployment", "signer-api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(api["livenessProbe"]["httpGet"]["path"], "/__lbheartbeat__");
    assert_eq!(api["readinessProbe"]["httpGet"]["path"], "/__ready__");
    let worker_pod = &find("Deployment", "signer-worker")["spec"]["template"]["spec"];
    assert_eq!(
        worker_pod["containers"][0]["livenessProbe"]["httpGet"]["path"],
        "/__lbheartbeat__"
    );
    let grace: u64 = facts["kubernetes_config"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("shutdown_grace_seconds = "))
        .expect("the ConfigMap sets worker.shutdown_grace_seconds")
        .parse()
        .unwrap();
    assert!(
        worker_pod["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap()
            > grace,
        "Kubernetes must wait longer than the worker's own grace period"
    );
    let hpa = &find("HorizontalPodAutoscaler", "signer-worker")["spec"];
    assert_eq!(hpa["scaleTargetRef"]["name"], "signer-worker");
    assert_eq!(
        hpa["metrics"][0]["external"]["metric"]["name"],
        "signer_queue_depth"
    );
    assert_eq!(
        find("Service", "signer-api")["spec"]["ports"][0]["port"],
        8000
    );
}

#[test]
fn the_dockerfile_builds_and_ships_the_workspace_binaries() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let built: Vec<&str> = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build step")
        .split("--bin ")
        .skip(1)
        .map(|s| s.split_whitespace().next().unwrap())
        .collect();
    let shipped: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY --from=build /src/target/release/"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(built, ["signer-api", "signer-worker"]);
    assert_eq!(shipped, built, "the image ships what the build step builds");
    for name in shipped {
        assert!(bin(name).exists(), "{name} is a binary of this workspace");
    }
    assert!(
        dockerfile.contains("USER 10001"),
        "the image runs as non-root"
    );
}

/// Compose's health check (the image has no curl): `signer-api probe` exits 0 while the API is ready, 1 when it
/// answers anything else (draining after SIGTERM: 503; a wrong path: 404) or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_probe_exits_zero_only_while_the_api_is_ready() {
    let setup = Setup::new(
        "",
        "http://127.0.0.1:9/v1",
        "ws/a -> prod/a",
        "[api]\nshutdown_delay_seconds = 30\n[feed]\nenabled = false\n",
    );
    let api = Api::start(&setup, 0).await;
    let probe = |url: String| run_binary("signer-api", ["probe", "--url", &url]);
    let ready = format!("{}/__ready__", api.url);
    assert_eq!(probe(ready.clone()), (0, String::new()));
    let (code, said) = probe(format!("{}/nowhere", api.url));
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("404 Not Found"), "{said}");
    api.process.terminate();
    signer_e2e::eventually(10, "readiness to fail while draining", || {
        let ready = ready.clone();
        async move {
            let (code, said) = tokio::task::spawn_blocking(move || probe(ready))
                .await
                .unwrap();
            (code == 1 && said.contains("503")).then_some(())
        }
    })
    .await;
    let closed = format!("http://127.0.0.1:{}/__ready__", signer_e2e::free_port());
    let (code, said) = probe(closed);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("no answer"), "{said}");
}
