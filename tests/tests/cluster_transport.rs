//! `keel serve --id --peers`: real processes connect their peer transport
//! (only the links are checked here, through the `keel_peer_*` metrics;
//! replication has tests of its own, `cluster*.rs`), reconnect after one is SIGKILLed and restarted,
//! refuse a node of another cluster, and refuse bad cluster settings at
//! start. Every wait polls with a deadline.

use std::time::{Duration, Instant};

use keel_tests::cluster::free_peer_ports;
use keel_tests::{metric_sample, wait_a_moment, Server, ServerOptions};

/// Cores per node: each pair of nodes has one connection per core.
const CORES: usize = 2;
/// Longest a link may take to come up (a reconnect waits at most
/// `RECONNECT_BACKOFF_MS_MAX`, 2 s, between attempts).
const LINK_DEADLINE: Duration = Duration::from_secs(20);
/// `keel serve`'s exit code for bad settings (EX_USAGE).
const EXIT_USAGE: i32 = 64;

fn node(id: u64, peers: &str, cluster_name: &str) -> ServerOptions {
    ServerOptions {
        cores: CORES,
        shards: CORES as u32,
        metrics: true,
        extra_args: vec![
            "--id".into(),
            id.to_string(),
            "--peers".into(),
            peers.into(),
            "--cluster-name".into(),
            cluster_name.into(),
        ],
        ..ServerOptions::default()
    }
}

fn sample(server: &Server, name: &str) -> f64 {
    let response = server.scrape_metrics();
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP body");
    metric_sample(body, name)
}

/// Polls until `server`'s metric `name` reaches `at_least`.
fn wait_for_metric(server: &Server, name: &str, at_least: f64) {
    let started = Instant::now();
    loop {
        let value = sample(server, name);
        if value >= at_least {
            return;
        }
        assert!(
            started.elapsed() < LINK_DEADLINE,
            "{name} is {value}, not {at_least}\n{}",
            server.stderr()
        );
        wait_a_moment();
    }
}

#[test]
fn two_nodes_link_every_core_and_relink_after_a_sigkill() {
    let (port_1, port_2) = (free_peer_ports(CORES), free_peer_ports(CORES));
    let peers = format!("1=127.0.0.1:{port_1},2=127.0.0.1:{port_2}");
    let mut node_1 = Server::start(node(1, &peers, "keel"));
    let node_2 = Server::start(node(2, &peers, "keel"));
    let links = CORES as f64;
    wait_for_metric(&node_1, "keel_peer_connections_total", links);
    wait_for_metric(&node_2, "keel_peer_connections_total", links);
    assert_eq!(sample(&node_1, "keel_peer_handshake_refusals_total"), 0.0);
    node_1.kill9();
    node_1.restart();
    // Node 2 dials node 1 (the smaller id) again on every core.
    wait_for_metric(&node_2, "keel_peer_connections_total", 2.0 * links);
    wait_for_metric(&node_1, "keel_peer_connections_total", links);
    assert_eq!(sample(&node_2, "keel_peer_protocol_errors_total"), 0.0);
}

#[test]
fn a_node_of_another_cluster_is_refused_by_both_sides() {
    let (port_1, port_3) = (free_peer_ports(CORES), free_peer_ports(CORES));
    let peers = format!("1=127.0.0.1:{port_1},3=127.0.0.1:{port_3}");
    let node_1 = Server::start(node(1, &peers, "keel"));
    let stranger = Server::start(node(3, &peers, "elsewhere"));
    wait_for_metric(&node_1, "keel_peer_handshake_refusals_total", 1.0);
    wait_for_metric(&stranger, "keel_peer_handshake_refusals_total", 1.0);
    assert_eq!(sample(&node_1, "keel_peer_connections_total"), 0.0);
    assert_eq!(sample(&stranger, "keel_peer_connections_total"), 0.0);
    assert!(
        node_1.stderr().contains("another cluster"),
        "{}",
        node_1.stderr()
    );
}

#[test]
fn bad_cluster_settings_are_refused_at_start_with_the_reason() {
    let port = free_peer_ports(CORES);
    let cases = [
        (
            vec!["--id", "3", "--peers", "1=127.0.0.1:7400,2=127.0.0.1:7401"],
            "not in --peers",
        ),
        (
            vec!["--id", "1", "--peers", "1=127.0.0.1:7400,1=127.0.0.1:7401"],
            "listed twice",
        ),
        (
            vec!["--id", "1", "--peers", "0=127.0.0.1:7400,1=127.0.0.1:7401"],
            "start at 1",
        ),
        (vec!["--id", "1", "--peers", "1=127.0.0.1"], "HOST:PORT"),
        (vec!["--id", "1"], "without --peers"),
    ];
    for (flags, reason) in cases {
        let exited = Server::refused(ServerOptions {
            extra_args: flags.iter().map(|flag| flag.to_string()).collect(),
            ..ServerOptions::default()
        });
        assert_eq!(
            exited.status.code(),
            Some(EXIT_USAGE),
            "{flags:?}: {}",
            exited.stderr
        );
        assert!(
            exited.stderr.contains(reason),
            "{flags:?}: {}",
            exited.stderr
        );
    }
    // The client port inside the peer ports' range.
    let exited = Server::refused(ServerOptions {
        port: Some(port),
        cores: CORES,
        extra_args: vec![
            "--id".into(),
            "1".into(),
            "--peers".into(),
            format!("1=127.0.0.1:{port}"),
        ],
        ..ServerOptions::default()
    });
    assert_eq!(exited.status.code(), Some(EXIT_USAGE), "{}", exited.stderr);
    assert!(exited.stderr.contains("peer_port"), "{}", exited.stderr);
}
