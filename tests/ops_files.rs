//! The deployment files, checked as far as this machine allows without a Docker engine:
//! alert rules and their unit tests (promtool), the compose file and the Prometheus and
//! Grafana provisioning it mounts, the Dockerfile's inputs, and the daemon config in
//! `docker/` (`cdc-cache check --offline`), and the systemd unit in `deploy/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;
use support::run_cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(support::servers::find_binary("promtool"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_check_and_their_unit_tests_pass() {
    let out = promtool(&["check", "rules", "dashboards/alerts.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "dashboards/alerts.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has at least one unit test.
    let rules = std::fs::read_to_string(root().join("dashboards/alerts.yml")).expect("alerts");
    let tests = std::fs::read_to_string(root().join("dashboards/alerts.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "alert {alert} has no test in alerts.test.yml"
        );
    }
}

/// Host paths of a service's bind mounts, resolved against `docker/`.
fn mounts(service: &Value) -> Vec<(PathBuf, String)> {
    let docker = root().join("docker");
    service["volumes"]
        .as_sequence()
        .map(|v| v.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v.as_str())
        .filter(|v| v.starts_with('.'))
        .map(|v| {
            let mut parts = v.split(':');
            let host = docker.join(parts.next().expect("host path"));
            (host, parts.next().expect("container path").to_string())
        })
        .collect()
}

#[test]
fn compose_file_parses_and_every_file_it_references_exists() {
    let compose = yaml(&root().join("docker/compose.yml"));
    let services = compose["services"].as_mapping().expect("services");
    for name in ["mysql", "redis", "cdc-cache", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    assert_eq!(
        compose["services"]["mysql"]["image"].as_str(),
        Some("mysql:8.4")
    );
    let mysql_args: Vec<&str> = compose["services"]["mysql"]["command"]
        .as_sequence()
        .expect("mysql command")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for needed in [
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--gtid-mode=ON",
    ] {
        assert!(mysql_args.contains(&needed), "mysql lacks {needed}");
    }
    for (name, service) in services {
        for (host, _) in mounts(service) {
            assert!(
                host.exists(),
                "{name:?} mounts {} which does not exist",
                host.display()
            );
        }
    }
    let build = &compose["services"]["cdc-cache"]["build"];
    let context = root()
        .join("docker")
        .join(build["context"].as_str().expect("context"));
    let dockerfile = context.join(build["dockerfile"].as_str().expect("dockerfile"));
    assert!(dockerfile.exists(), "{}", dockerfile.display());
    // What the Dockerfile copies from the build context exists there.
    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let copies: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[1..words.len() - 1].to_vec()
        })
        .collect();
    assert!(
        copies.contains(&"Cargo.lock") && copies.contains(&"src"),
        "{copies:?}"
    );
    for source in &copies {
        assert!(
            context.join(source).exists(),
            "Dockerfile copies missing {source}"
        );
    }
    // Files the crate compiles in (include_str!) must be in the build context too.
    let included = included_files(&root().join("src"));
    assert!(included.len() >= 4, "include_str! uses found: {included:?}");
    let crate_root = root().canonicalize().expect("crate root");
    for included in included {
        let relative = included
            .strip_prefix(&crate_root)
            .expect("inside the crate");
        let top = relative.components().next().expect("a path");
        let top = top.as_os_str().to_string_lossy();
        assert!(
            copies.contains(&top.as_ref()),
            "{} is compiled in but the Dockerfile does not copy {top}",
            relative.display()
        );
    }
    assert!(
        text.contains("USER "),
        "the runtime image must not run as root"
    );
}

/// Files named by `include_str!("…")` under `dir`, resolved against the including file.
fn included_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(included_files(&path));
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for part in text.split("include_str!(\"").skip(1) {
            let name = part.split('"').next().expect("a path");
            let file = path.parent().expect("parent").join(name);
            found.push(file.canonicalize().expect("included file exists"));
        }
    }
    found
}

#[test]
fn prometheus_and_grafana_provisioning_are_valid_and_consistent() {
    let compose = yaml(&root().join("docker/compose.yml"));
    // Prometheus: check the config with its rule files mapped to the repository's copies.
    let prom_mounts = mounts(&compose["services"]["prometheus"]);
    let (config, _) = prom_mounts
        .iter()
        .find(|(_, c)| c.ends_with("prometheus.yml"))
        .expect("prometheus.yml mounted");
    let mut text = std::fs::read_to_string(config).expect("prometheus.yml");
    let prom: Value = serde_yaml::from_str(&text).expect("prometheus.yml parses");
    for rule_file in prom["rule_files"].as_sequence().expect("rule_files") {
        let inside = rule_file.as_str().expect("path");
        let (host, _) = prom_mounts
            .iter()
            .find(|(_, c)| c == inside)
            .unwrap_or_else(|| panic!("rule file {inside} is not mounted"));
        text = text.replace(inside, &host.display().to_string());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let local = dir.path().join("prometheus.yml");
    std::fs::write(&local, text).expect("write");
    promtool(&["check", "config", local.to_str().expect("utf-8 path")]);
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .expect("a scrape target");
    let daemon_config =
        std::fs::read_to_string(root().join("docker/cdc-cache.toml")).expect("toml");
    let port = target.rsplit(':').next().expect("port");
    assert!(target.starts_with("cdc-cache:"), "{target}");
    assert!(
        daemon_config.contains(&format!("listen = \"0.0.0.0:{port}\"")),
        "the daemon in docker/ must listen on {port} on all interfaces"
    );

    // Grafana: the datasource uid the dashboard uses and the dashboards directory.
    let grafana = mounts(&compose["services"]["grafana"]);
    let (provisioning, _) = grafana
        .iter()
        .find(|(_, c)| c == "/etc/grafana/provisioning")
        .expect("provisioning mounted");
    let ds = yaml(&provisioning.join("datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    let providers = yaml(&provisioning.join("dashboards/cdc-cache.yml"));
    let inside = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    let (dashboards, _) = grafana
        .iter()
        .find(|(_, c)| c == inside)
        .unwrap_or_else(|| panic!("{inside} is not mounted"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dashboards.join("cdc-cache.json")).expect("dashboard"),
    )
    .expect("dashboard JSON parses");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert!(t["expr"].as_str().is_some_and(|e| e.contains("cdc_cache_")));
        }
    }
}

#[test]
fn the_docker_config_passes_the_offline_check() {
    let path = root().join("docker/cdc-cache.toml");
    let (code, out, err) = run_cli(&[
        "check",
        "--offline",
        "--config",
        path.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration valid"), "{out}");
}

/// `deploy/cdc-cache.service`: `systemd-analyze verify` accepts it without a warning
/// (with its `ExecStart` pointed at the built binary), and it does not restart on the exit
/// codes a restart cannot help, which are the ones the daemon gives for them: a missing
/// configuration file exits 2.
#[test]
fn the_systemd_unit_verifies_and_leaves_definite_stops_stopped() {
    let unit = std::fs::read_to_string(root().join("deploy/cdc-cache.service")).expect("unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/cdc-cache", "{exec}");
    assert_eq!(&args[1..3], ["run", "--config"], "{exec}");

    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("cdc-cache.service");
    let binary = env!("CARGO_BIN_EXE_cdc-cache");
    std::fs::write(&copy, unit.replace(args[0], binary)).expect("write unit");
    let out = Command::new(support::servers::find_binary("systemd-analyze"))
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );

    let prevented: Vec<i32> = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("RestartPreventExitStatus")
        .split_whitespace()
        .map(|c| c.parse().expect("an exit code"))
        .collect();
    assert_eq!(prevented, [2, 3]);
    assert!(
        unit.contains("\nRestart=on-failure\n"),
        "restarts on exit 1"
    );
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = run_cli(&["run", "--config", missing.to_str().expect("utf-8")]);
    assert!(prevented.contains(&code), "exit {code}: {err}");
    let (_, help, _) = run_cli(&["--help"]);
    for code in prevented {
        assert!(
            help.contains(&format!("\n  {code}  ")),
            "--help explains exit {code}:\n{help}"
        );
    }
}
