//! A small cluster-aware RESP client for failover tests: it sends a command
//! for a given hash slot to the node it believes leads that slot (each
//! connection starts with READWRITE, which marks it as a cluster client's:
//! Keel then answers `-MOVED` instead of forwarding to the leader), follows
//! `-MOVED`, waits and retries on `-TRYAGAIN`, a refused or closed
//! connection or a reply that does not come in time, and gives up at a
//! deadline. It reports when the answering attempt was sent, so a test can
//! tell writes issued after a fault from those issued before.
//!
//! Retrying is only safe for commands whose repetition changes nothing
//! (a SET of a fixed value, a GET): an attempt that timed out may still be
//! executed later by the server.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use crate::{wait_a_moment, RawConnection, Resp};

/// Redirects followed in a row before the client pauses: nodes whose views
/// of the leader disagree for a moment would otherwise bounce a command
/// between them as fast as the loopback allows.
pub const REDIRECTS_BEFORE_PAUSE_MAX: u32 = 3;

/// Why a command got no final reply before its deadline: the last thing
/// each attempt met, and every error reply a server gave on the way.
#[derive(Debug, Default)]
pub struct Failure {
    /// Attempts made.
    pub attempts: u32,
    /// Every `-MOVED` or `-TRYAGAIN` text received, in order.
    pub redirects: Vec<String>,
    /// The last connection error (refused, closed, timed out), if any.
    pub last_io_error: Option<String>,
}

/// A final reply (anything but `-MOVED` and `-TRYAGAIN`) and when the
/// attempt that got it was sent.
#[derive(Debug)]
pub struct Answer {
    pub reply: Resp,
    pub sent: Instant,
    pub port: u16,
}

/// One client over every node of a cluster, by client port.
#[derive(Debug)]
pub struct ClusterClient {
    ports: Vec<u16>,
    connections: HashMap<u16, RawConnection>,
    /// The node each slot was last answered by or redirected to.
    leaders: HashMap<u16, u16>,
    /// The next node to try when a slot's leader is unknown or failed.
    next_port: usize,
    attempt_timeout: Duration,
}

/// What one attempt at one node produced.
enum Attempt {
    Final(Resp),
    Moved { port: u16, text: String },
    TryAgain(String),
    Io(io::Error),
}

impl ClusterClient {
    /// A client over the nodes at `ports`; each attempt waits at most
    /// `attempt_timeout` for its reply before the connection is dropped.
    pub fn new(ports: Vec<u16>, attempt_timeout: Duration) -> ClusterClient {
        assert!(!ports.is_empty(), "a cluster client needs a node");
        ClusterClient {
            ports,
            connections: HashMap::new(),
            leaders: HashMap::new(),
            next_port: 0,
            attempt_timeout,
        }
    }

    /// Sends `args` (a command on keys of `slot`) until a node gives a
    /// final reply or `deadline` passes.
    pub fn command(
        &mut self,
        slot: u16,
        args: &[&[u8]],
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let mut failure = Failure::default();
        let mut redirects_in_a_row = 0;
        while Instant::now() < deadline {
            let port = self.port_for(slot);
            let sent = Instant::now();
            failure.attempts += 1;
            match self.attempt(port, args, deadline) {
                Attempt::Final(reply) => {
                    self.leaders.insert(slot, port);
                    return Ok(Answer { reply, sent, port });
                }
                Attempt::Moved { port, text } => {
                    self.leaders.insert(slot, port);
                    failure.redirects.push(text);
                    redirects_in_a_row += 1;
                    if redirects_in_a_row <= REDIRECTS_BEFORE_PAUSE_MAX {
                        continue;
                    }
                }
                Attempt::TryAgain(text) => failure.redirects.push(text),
                Attempt::Io(error) => {
                    self.forget(slot, port);
                    failure.last_io_error = Some(format!("port {port}: {error}"));
                }
            }
            redirects_in_a_row = 0;
            wait_a_moment();
        }
        Err(failure)
    }

    /// The node to try for `slot`: its last known leader, else the next
    /// node in turn.
    fn port_for(&mut self, slot: u16) -> u16 {
        if let Some(&port) = self.leaders.get(&slot) {
            return port;
        }
        let port = self.ports[self.next_port % self.ports.len()];
        self.next_port += 1;
        port
    }

    /// Drops what is known of `port` after it failed: its connection (a
    /// reply may still be on its way) and its claim to `slot`.
    fn forget(&mut self, slot: u16, port: u16) {
        self.connections.remove(&port);
        if self.leaders.get(&slot) == Some(&port) {
            self.leaders.remove(&slot);
        }
    }

    fn attempt(&mut self, port: u16, args: &[&[u8]], deadline: Instant) -> Attempt {
        let timeout = self
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let reply = self.connection(port).and_then(|connection| {
            connection.stream.set_read_timeout(Some(timeout))?;
            connection.command(args)
        });
        match reply {
            Err(error) => Attempt::Io(error),
            Ok(Resp::Error(text)) if text.starts_with("MOVED ") => match moved_port(&text) {
                Some(port) => Attempt::Moved { port, text },
                None => Attempt::Final(Resp::Error(text)),
            },
            Ok(Resp::Error(text)) if text.starts_with("TRYAGAIN") => Attempt::TryAgain(text),
            Ok(reply) => Attempt::Final(reply),
        }
    }

    fn connection(&mut self, port: u16) -> io::Result<&mut RawConnection> {
        match self.connections.entry(port) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let mut connection = RawConnection::connect(port)?;
                connection
                    .stream
                    .set_read_timeout(Some(self.attempt_timeout))?;
                match connection.command(&[b"READWRITE"])? {
                    Resp::Simple(ok) if ok == "OK" => Ok(entry.insert(connection)),
                    other => Err(io::Error::other(format!("READWRITE answered {other:?}"))),
                }
            }
        }
    }
}

/// The port of `MOVED <slot> <host>:<port>`.
fn moved_port(text: &str) -> Option<u16> {
    let address = text.split(' ').nth(2)?;
    address.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::moved_port;

    #[test]
    fn moved_names_the_port_after_the_last_colon() {
        assert_eq!(moved_port("MOVED 12182 127.0.0.1:7003"), Some(7003));
        assert_eq!(moved_port("MOVED 1 [::1]:7001"), Some(7001));
        assert_eq!(moved_port("MOVED 1"), None);
    }
}
