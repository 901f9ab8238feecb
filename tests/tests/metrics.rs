//! The Prometheus endpoint, scraped over plain HTTP.

use keel_tests::{metric_sample as sample, Server, ServerOptions};

#[test]
fn metrics_are_prometheus_text_with_fsync_histogram_and_command_counters() {
    let server = Server::start(ServerOptions {
        metrics: true,
        ..ServerOptions::default()
    });
    let mut connection = server.connection();
    for index in 0..10 {
        let _: () = redis::cmd("SET")
            .arg(format!("metric:{index}"))
            .arg(index)
            .query(&mut connection)
            .expect("SET");
    }
    let response = server.scrape_metrics();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP head and body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("content-type: text/plain"),
        "{head}"
    );
    assert!(
        body.contains("# TYPE keel_fsync_duration_us histogram"),
        "{body}"
    );
    assert!(
        body.contains("keel_fsync_duration_us_bucket{le=\"+Inf\"}"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE keel_commands_total counter"),
        "{body}"
    );
    assert!(sample(body, "keel_commands_total") >= 10.0, "{body}");
    assert!(
        sample(body, "keel_fsync_duration_us_count") >= 1.0,
        "{body}"
    );
    assert!(sample(body, "keel_writes_total") >= 10.0, "{body}");
    // A single node leads its shards; what it logged is committed.
    assert_eq!(
        sample(body, "keel_shard_leader{shard=\"0\"}"),
        1.0,
        "{body}"
    );
    assert!(
        sample(body, "keel_shard_commit_index{shard=\"0\"}")
            + sample(body, "keel_shard_commit_index{shard=\"1\"}")
            >= 10.0,
        "{body}"
    );
}
