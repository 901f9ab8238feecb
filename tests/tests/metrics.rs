//! The Prometheus endpoint, scraped over plain HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;

use keel_tests::{Server, ServerOptions};

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response to its end");
    response
}

/// The value of an unlabelled sample line `name value`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        .parse()
        .expect("a number")
}

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
    let response = scrape(server.metrics_port().expect("a metrics port"));
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
}
