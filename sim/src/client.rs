//! A simulated Redis client's connection: connect, send one request, read its
//! reply. The random workload and the scenarios both talk to the node
//! through it.

use std::time::Duration;

use madsim::net::TcpStream;
use madsim::time::timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};

use crate::models::redis::{RedisInput, RedisOutput};
use crate::workload::{encode, parse_reply, ReplyError};

/// A client's connection to the node.
pub type ClientStream = BufStream<TcpStream>;

/// Why a request got no answer the client can use.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no reply within {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Reply(#[from] ReplyError),
}

/// Connects to `address`, waiting at most `timeout_ms`.
pub async fn connect(address: &str, timeout_ms: u64) -> Result<ClientStream, ClientError> {
    match timeout(
        Duration::from_millis(timeout_ms),
        TcpStream::connect(address),
    )
    .await
    {
        Ok(stream) => Ok(BufStream::new(stream?)),
        Err(_) => Err(ClientError::Timeout(timeout_ms)),
    }
}

/// Sends READWRITE, as Redis Cluster's clients do on a connection: the node
/// then answers `-MOVED` for a key another member leads, where it would
/// forward a plain client's command.
pub async fn declare_cluster_aware(
    stream: &mut ClientStream,
    timeout_ms: u64,
) -> Result<(), ClientError> {
    let exchange = async {
        stream.write_all(b"*1\r\n$9\r\nREADWRITE\r\n").await?;
        stream.flush().await?;
        let mut reply = Vec::new();
        loop {
            match parse_reply(&reply)? {
                Some(RedisOutput::Ok) => return Ok(()),
                Some(other) => {
                    let text = format!("READWRITE answered {other}");
                    return Err(ClientError::Io(std::io::Error::other(text)));
                }
                None => {}
            }
            if stream.read_buf(&mut reply).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    timeout(Duration::from_millis(timeout_ms), exchange)
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout_ms)))
}

/// Sends `input` and reads its reply, waiting at most `timeout_ms`. After an
/// error the connection is in an unknown state: drop it.
pub async fn request(
    stream: &mut ClientStream,
    input: &RedisInput,
    timeout_ms: u64,
) -> Result<RedisOutput, ClientError> {
    let exchange = async {
        stream.write_all(&encode(input)).await?;
        stream.flush().await?;
        let mut reply = Vec::new();
        loop {
            if let Some(output) = parse_reply(&reply)? {
                return Ok(output);
            }
            if stream.read_buf(&mut reply).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    timeout(Duration::from_millis(timeout_ms), exchange)
        .await
        .unwrap_or(Err(ClientError::Timeout(timeout_ms)))
}
