//! A cluster whose node sessions run over mutual TLS (`--tls-cert/--tls-key/--tls-ca`),
//! with certificates made at test time: real `herdsman` processes on loopback.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use support::*;
use tokio::time::Instant;

/// A CA, and a way to issue node certificates from it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().expect("ca key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("ca cert");
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, issuer.pem()).expect("ca written");
        Ca { issuer, pem }
    }

    /// A node certificate naming 127.0.0.1 (the address agents join), good for both ends
    /// of a session; returns (cert, key) files.
    fn issue(&self, dir: &Path, node: &str) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("node params");
        params.distinguished_name.push(DnType::CommonName, node);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("node cert");
        let (cert_path, key_path) = (
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}-key.pem")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("cert written");
        std::fs::write(&key_path, key.serialize_pem()).expect("key written");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (cert_path, key_path)
    }
}

fn cookie(dir: &Path) -> PathBuf {
    let path = dir.join("cookie");
    std::fs::write(&path, "tls-test-secret").expect("cookie written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Two replicas, holding no port, spread over the coordinator and agent-a.
fn two_replicas() -> Spec {
    spec(
        r#"version: v1
deployment: tls
services:
  idle:
    command:
      entrypoint: ["sleep", "3600"]
    scale: {mode: fixed, replicas: 2}
    placement: {nodes: [coord, agent-a]}
    stop_grace_period: 1s
"#,
    )
}

fn tls_args<'a>(cert: &'a Path, key: &'a Path, ca: &'a Path) -> [&'a str; 6] {
    [
        "--tls-cert",
        s(cert),
        "--tls-key",
        s(key),
        "--tls-ca",
        s(ca),
    ]
}

fn agent(name: &str, join: &str, cookie: &Path, tls: &[&str]) -> Herdsman {
    let mut extra = vec!["--heartbeat", "200ms"];
    extra.extend_from_slice(tls);
    support::start_agent(name, join, cookie, &extra)
}

/// (node, pid) of every replica in a status.
fn placed(status: &Value) -> Vec<(String, u64)> {
    let mut placed: Vec<(String, u64)> = status["services"][0]["replicas"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["node"].as_str().unwrap_or_default().to_string(),
                r["pid"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    placed.sort();
    placed
}

async fn node_names(api: &str) -> Option<Vec<String>> {
    let r = client()
        .get(format!("http://{api}/v1/nodes"))
        .send()
        .await
        .ok()?;
    let nodes: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
    let mut names: Vec<String> = nodes["nodes"]
        .as_array()?
        .iter()
        .filter_map(|n| n["node"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_become_stable_past_a_silent_connection_and_agents_without_tls_or_with_a_foreign_cert_are_refused(
) {
    let spec = two_replicas();
    let dir = spec.dir.path();
    let secret = cookie(dir);
    let ca = Ca::new(dir, "cluster");
    let other = Ca::new(dir, "other");
    let (coord_cert, coord_key) = ca.issue(dir, "coord");
    let (a_cert, a_key) = ca.issue(dir, "agent-a");
    // Signed by another CA, but trusting the cluster's: only the coordinator's check of
    // client certificates can keep it out.
    let (x_cert, x_key) = other.issue(dir, "intruder-cert");

    let api = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let state = tempfile::tempdir().expect("tempdir");
    let mut args = vec![
        "run",
        s(&spec.path),
        "--api",
        &api,
        "--node",
        "coord",
        "--listen",
        &listen,
        "--cookie-file",
        s(&secret),
        "--heartbeat",
        "200ms",
        "--node-lost-after",
        "1s",
    ];
    args.extend_from_slice(&tls_args(&coord_cert, &coord_key, &ca.pem));
    let mut coordinator =
        Herdsman::start_with_env(&args, &[("HERDSMAN_STATE_DIR", s(state.path()))]);
    // A connection that never starts its handshake must not hold up the nodes that join
    // after it (ractor_cluster's own listener would wait on it).
    let silent = eventually(Duration::from_secs(10), "the coordinator listens", || {
        let listen = listen.clone();
        async move { tokio::net::TcpStream::connect(listen).await.ok() }
    })
    .await;
    let mut member = agent(
        "agent-a",
        &listen,
        &secret,
        &tls_args(&a_cert, &a_key, &ca.pem),
    );

    let started = Instant::now();
    let stable = eventually(Duration::from_secs(60), "a TLS cluster is stable", || {
        let api = api.clone();
        async move {
            let s = status(&api).await?;
            (s["stable"] == true).then_some(s)
        }
    })
    .await;
    let before = placed(&stable);
    member.seen_pids = before
        .iter()
        .filter(|(n, _)| n == "agent-a")
        .map(|(_, p)| *p as u32)
        .collect();
    let on: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(on, ["agent-a", "coord"], "{stable}");
    assert!(
        member.stdout().contains("joined the coordinator"),
        "{}",
        member.output()
    );
    eprintln!("TLS cluster stable after {:?}", started.elapsed());

    let plain = agent("plain", &listen, &secret, &[]);
    let foreign = agent(
        "foreign",
        &listen,
        &secret,
        &tls_args(&x_cert, &x_key, &ca.pem),
    );
    for (who, intruder) in [("plain", &plain), ("foreign", &foreign)] {
        eventually(
            Duration::from_secs(30),
            &format!("the {who} agent says it was refused"),
            || {
                let err = intruder.stderr();
                async move { err.contains("refused this node").then_some(()) }
            },
        )
        .await;
    }
    let said = eventually(
        Duration::from_secs(30),
        "the coordinator reports both refusals",
        || {
            let out = coordinator.stdout();
            async move {
                let refusals: Vec<String> = out
                    .lines()
                    .filter(|l| {
                        l.contains("refused a node session from 127.0.0.1:")
                            && l.contains("TLS handshake failed")
                    })
                    .map(str::to_string)
                    .collect();
                let foreign = refusals.iter().any(|l| l.contains("certificate"));
                (foreign && refusals.len() >= 2).then_some(refusals)
            }
        },
    )
    .await;
    eprintln!("coordinator said:\n{}", said.join("\n"));
    // Neither ever joined, and the deployment did not notice them.
    assert_eq!(
        node_names(&api).await.expect("nodes answer"),
        ["agent-a", "coord"]
    );
    let after = status(&api).await.expect("status answers");
    assert_eq!(after["stable"], true, "{after}");
    assert_eq!(placed(&after), before, "{after}");
    assert!(
        !coordinator.stdout().contains("no longer stable"),
        "{}",
        coordinator.output()
    );
    drop((plain, foreign, silent));
    coordinator.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(coordinator.wait(Duration::from_secs(20)).await.success());
}

#[test]
fn tls_flags_come_together_and_a_bad_pem_file_is_named_before_anything_starts() {
    let spec = two_replicas();
    let dir = spec.dir.path();
    let secret = cookie(dir);
    let ca = Ca::new(dir, "cluster");
    let (cert, key) = ca.issue(dir, "coord");
    let (_, other_key) = ca.issue(dir, "other");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").expect("junk");
    let listen = format!("127.0.0.1:{}", free_port());
    let run = |tls: &[&str]| {
        let mut args = vec![
            "run",
            s(&spec.path),
            "--api",
            "off",
            "--node",
            "coord",
            "--listen",
            &listen,
            "--cookie-file",
            s(&secret),
        ];
        args.extend_from_slice(tls);
        herdsman_once(&args)
    };
    let agent_once = |tls: &[&str]| {
        let mut args = vec![
            "agent",
            "--node",
            "a",
            "--listen",
            &listen,
            "--join",
            "127.0.0.1:1",
            "--cookie-file",
            s(&secret),
        ];
        args.extend_from_slice(tls);
        herdsman_once(&args)
    };

    let (code, out, err) = run(&["--tls-cert", s(&cert)]);
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("--tls-ca"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");

    let (code, out, err) = run(&tls_args(&junk, &key, &ca.pem));
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(
        err.contains("junk.pem") && err.contains("invalid PEM"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing started: {out}");

    let missing = dir.join("missing-ca.pem");
    let (code, _, err) = run(&tls_args(&cert, &key, &missing));
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(err.contains("missing-ca.pem"), "{err}");

    let (code, _, err) = agent_once(&tls_args(&cert, &other_key, &ca.pem));
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(
        err.contains("coord.pem") && err.contains("other-key.pem"),
        "a key that is not the certificate's: {err}"
    );

    let (code, _, err) = agent_once(&tls_args(&cert, &junk, &ca.pem));
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(err.contains("junk.pem"), "{err}");
    // The port was never bound.
    assert!(std::net::TcpListener::bind(&listen).is_ok());
}
