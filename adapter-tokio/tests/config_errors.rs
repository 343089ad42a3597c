//! Bad configuration exits with code 2 and a message naming the key and the file; the example
//! deploy files are valid.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{Proc, scratch};

fn run_with_config(contents: &str) -> (Option<i32>, String, String) {
    let dir = scratch("config");
    let path = dir.join("relay.toml");
    std::fs::write(&path, contents).unwrap();
    let path = path.to_str().unwrap().to_owned();
    let mut proc = Proc::spawn(&["relay", "--config", &path, "--listen", "127.0.0.1:0"]);
    let status = proc.wait(Duration::from_secs(10));
    (status.code(), proc.stderr(), path)
}

#[test]
fn unknown_config_key_exits_2_naming_the_key_and_the_file() {
    let (code, stderr, path) = run_with_config("[relay]\nmax_reservatons = 10\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("relay.max_reservatons"), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
    assert!(stderr.contains("unknown field"), "{stderr}");
}

#[test]
fn invalid_config_value_exits_2_naming_the_key_and_the_file() {
    let (code, stderr, path) = run_with_config("[relay]\nmax_circuits = \"lots\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("relay.max_circuits"), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");

    let (code, stderr, _) = run_with_config("[transport]\nidle_timeout = \"soon\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("transport.idle_timeout"), "{stderr}");

    // A value that parses but breaks a rule is named too.
    let (code, stderr, path) = run_with_config("[relay]\nreservation_ttl = \"0s\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("relay.reservation_ttl") && stderr.contains(&path),
        "{stderr}"
    );
}

#[test]
fn flags_override_the_file() {
    // The file's listen address is taken by the flag's; the file's bad port would fail.
    let dir = scratch("override");
    let path = dir.join("relay.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:1\"\n").unwrap();
    let mut relay = Proc::spawn(&[
        "relay",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    let line = relay.expect_line("relay ", Duration::from_secs(10));
    assert!(!line.contains("/udp/1/"), "{line}");
}

#[test]
fn identity_is_persisted_and_reused() {
    let dir = scratch("identity");
    let key = dir.join("node.key");
    let key = key.to_str().unwrap();
    let mut keygen = Proc::spawn(&["keygen", "--out", key]);
    assert!(keygen.wait(Duration::from_secs(10)).success());
    let generated = keygen.seen[0].clone();
    let mut id = Proc::spawn(&["id", key]);
    assert!(id.wait(Duration::from_secs(10)).success());
    assert_eq!(id.seen[0], generated);
    let mut again = Proc::spawn(&["keygen", "--out", key]);
    assert_eq!(
        again.wait(Duration::from_secs(10)).code(),
        Some(1),
        "no silent overwrite"
    );
    let mut relay = Proc::spawn(&["relay", "--listen", "127.0.0.1:0", "--identity", key]);
    let line = relay.expect_line("relay ", Duration::from_secs(10));
    assert_eq!(common::field(&line, "peer"), generated);
}

fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[test]
fn example_config_in_deploy_loads() {
    let path = repo_file("deploy/dep2p.toml");
    let mut check = Proc::spawn(&["check-config", path.to_str().unwrap()]);
    let status = check.wait(Duration::from_secs(10));
    assert!(status.success(), "{}", check.stderr());
    // Every section is present, so every key is exercised.
    let file = dep2p_tokio::config::FileConfig::load(&path).unwrap();
    let limits = file.relay_limits().unwrap();
    assert_eq!(limits.connection_watermarks(), (100, 200));
    assert!(file.relay.reservation_rate_per_ip.is_some() && file.client.min_relays.is_some());
    // [client] lists every AutoRelay knob with the core's default.
    let client = file.client().unwrap();
    assert_eq!(
        client.auto_relay,
        dep2p_core::autorelay::AutoRelayConfig::default()
    );
    assert_eq!(client.relays.len(), 1);
}

#[test]
fn systemd_unit_command_line_parses() {
    let unit = std::fs::read_to_string(repo_file("deploy/dep2p-relay.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert!(args[0].ends_with("/dep2p"), "{exec}");
    let cli = dep2p_tokio::cli::Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{e}"));
    let dep2p_tokio::cli::Command::Relay(relay) = cli.command else {
        panic!("the unit runs `dep2p relay`: {exec}");
    };
    let config = relay.common.config.expect("the unit passes --config");
    assert_eq!(config, std::path::Path::new("/etc/dep2p/dep2p.toml"));
    assert!(unit.contains("KillSignal=SIGTERM"));
}
