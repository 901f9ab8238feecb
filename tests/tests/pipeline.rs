//! Pipelining: many commands in one write, every reply in order.

use std::io::Write;

use keel_tests::{encode_command, Resp, Server, ServerOptions};

/// Commands sent in one write, each kind.
const PIPELINE_COMMANDS: usize = 10_000;

#[test]
fn ten_thousand_sets_then_gets_in_one_write_reply_in_order() {
    let server = Server::start(ServerOptions::default());
    let mut raw = server.raw();
    let mut request = Vec::new();
    for index in 0..PIPELINE_COMMANDS {
        request.extend(encode_command(&[
            b"SET",
            format!("pipe:{index}").as_bytes(),
            format!("value-{index}").as_bytes(),
        ]));
    }
    for index in 0..PIPELINE_COMMANDS {
        request.extend(encode_command(&[
            b"GET",
            format!("pipe:{index}").as_bytes(),
        ]));
    }
    // A writer thread, so that replies are read while the request is still
    // being sent and neither side's socket buffer fills up for good.
    let mut writer = raw.stream.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || writer.write_all(&request));
    for index in 0..PIPELINE_COMMANDS {
        assert_eq!(
            raw.read_reply().expect("a SET reply"),
            Resp::Simple("OK".into()),
            "SET #{index}"
        );
    }
    for index in 0..PIPELINE_COMMANDS {
        let expected = Resp::Bulk(format!("value-{index}").into_bytes());
        assert_eq!(
            raw.read_reply().expect("a GET reply"),
            expected,
            "GET #{index}"
        );
    }
    sender
        .join()
        .expect("the writer thread")
        .expect("the request is written");
}
