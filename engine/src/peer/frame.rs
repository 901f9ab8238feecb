//! The transport frame: how one [`PeerMessage`](crate::node::io::PeerMessage)
//! travels on a peer connection, after the handshake.
//!
//! # Layout (all integers little-endian, fixed width)
//!
//! ```text
//! offset size field       meaning
//!      0    4 frame_len   bytes of `frame` (at most PEER_FRAME_BYTES_MAX)
//!      4    4 shard       the shard both copies of which talk
//!      8    4 header_crc  CRC32 (crc32fast) of bytes 0..8
//!     12    n frame       one keel_replication::codec frame, as given
//! ```
//!
//! The frame has no version of its own: the handshake's version
//! ([`super::handshake::HANDSHAKE_VERSION`]) names the format of everything
//! that follows it on the connection.
//!
//! Why a CRC of the header only: the replication frame carries its own CRC,
//! so a second one over it would only cost time; but `frame_len` and `shard`
//! lie outside it, and the replication frame names no shard, so a flipped
//! bit in `shard` would hand a valid message to another shard's group, which
//! might act on it. TCP's 16-bit checksum lets such flips through now and
//! then (Stone & Partridge, SIGCOMM 2000); the header's CRC catches them.

use crate::node::io::PeerMessage;

/// Bytes before the frame.
pub const TRANSPORT_HEADER_BYTES: usize = 12;
/// Largest replication frame a peer may send, in bytes: the replication
/// codec's own bound (`keel_replication::codec::MESSAGE_BYTES_MAX`).
pub const PEER_FRAME_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(PEER_FRAME_BYTES_MAX <= u32::MAX as usize);

/// Why the bytes a peer sent are not a transport frame: the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error(
        "transport header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
    )]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("transport frame of {bytes} bytes exceeds PEER_FRAME_BYTES_MAX")]
    TooLarge { bytes: u32 },
}

/// Appends the transport frame of `frame` for `shard` to `out`.
pub fn encode_frame(shard: u32, frame: &[u8], out: &mut Vec<u8>) {
    assert!(
        frame.len() <= PEER_FRAME_BYTES_MAX,
        "the sender refuses frames over PEER_FRAME_BYTES_MAX"
    );
    let mut header = [0u8; TRANSPORT_HEADER_BYTES];
    header[0..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&shard.to_le_bytes());
    let crc = crc32fast::hash(&header[0..8]);
    header[8..12].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(frame);
}

/// The bytes [`encode_frame`] adds for a frame of `frame_bytes`.
pub const fn encoded_bytes(frame_bytes: usize) -> usize {
    TRANSPORT_HEADER_BYTES + frame_bytes
}

/// Decodes a header: the shard and the frame's length.
fn decode_header(header: &[u8]) -> Result<(u32, usize), FrameError> {
    let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let (frame_len, shard, stored) = (field(0), field(4), field(8));
    let computed = crc32fast::hash(&header[0..8]);
    if stored != computed {
        return Err(FrameError::HeaderChecksum { stored, computed });
    }
    if frame_len as usize > PEER_FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes: frame_len });
    }
    Ok((shard, frame_len as usize))
}

/// Cuts a peer's byte stream into frames, whatever pieces the socket brings
/// it in. It holds only bytes received: a claimed length allocates nothing,
/// so a peer that claims 64 MiB and sends 12 bytes costs 12 bytes.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    pending: Vec<u8>,
    /// Bytes of `pending` already handed out as frames.
    consumed: usize,
}

impl FrameDecoder {
    /// Adds bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        // Frames handed out are dropped before the buffer grows, so it
        // holds at most one partial frame plus one read.
        if self.consumed > 0 {
            self.pending.drain(..self.consumed);
            self.consumed = 0;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// The next whole frame as a message from `from`, `None` until more bytes
    /// come; an error means the stream is not ours to read further.
    pub fn next_message(&mut self, from: u64) -> Result<Option<PeerMessage>, FrameError> {
        let rest = &self.pending[self.consumed..];
        if rest.len() < TRANSPORT_HEADER_BYTES {
            return Ok(None);
        }
        let (shard, frame_len) = decode_header(&rest[..TRANSPORT_HEADER_BYTES])?;
        let end = TRANSPORT_HEADER_BYTES + frame_len;
        if rest.len() < end {
            return Ok(None);
        }
        let frame = rest[TRANSPORT_HEADER_BYTES..end].to_vec();
        self.consumed += end;
        Ok(Some(PeerMessage { from, shard, frame }))
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered_bytes(&self) -> usize {
        self.pending.len() - self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(stream: &[u8], piece_bytes: usize) -> (Vec<PeerMessage>, Option<FrameError>) {
        let mut decoder = FrameDecoder::default();
        let mut messages = Vec::new();
        for piece in stream.chunks(piece_bytes.max(1)) {
            decoder.push(piece);
            loop {
                match decoder.next_message(7) {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => break,
                    Err(error) => return (messages, Some(error)),
                }
            }
        }
        (messages, None)
    }

    #[test]
    fn a_frame_round_trips_and_its_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_frame(5, b"hello", &mut out);
        assert_eq!(out.len(), encoded_bytes(5));
        assert_eq!(&out[0..4], &5u32.to_le_bytes());
        assert_eq!(&out[4..8], &5u32.to_le_bytes());
        assert_eq!(&out[8..12], &crc32fast::hash(&out[0..8]).to_le_bytes());
        assert_eq!(&out[12..], b"hello");
        let (messages, error) = decode_all(&out, out.len());
        assert_eq!(error, None);
        assert_eq!(
            messages,
            vec![PeerMessage {
                from: 7,
                shard: 5,
                frame: b"hello".to_vec()
            }]
        );
    }

    #[test]
    fn a_truncated_frame_waits_for_more_bytes() {
        let mut out = Vec::new();
        encode_frame(1, &[9; 100], &mut out);
        for cut in 0..out.len() {
            let (messages, error) = decode_all(&out[..cut], 7);
            assert!(messages.is_empty() && error.is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_header_bit_is_caught() {
        let mut out = Vec::new();
        encode_frame(3, b"abc", &mut out);
        for bit in 0..TRANSPORT_HEADER_BYTES * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (messages, error) = decode_all(&bad, bad.len());
            assert!(
                matches!(error, Some(FrameError::HeaderChecksum { .. })),
                "bit {bit}: {messages:?} {error:?}"
            );
        }
    }

    /// A hostile peer with a valid header CRC claiming more than the bound
    /// is refused before any byte of the frame is held.
    #[test]
    fn an_oversize_claim_is_refused_from_the_header_alone() {
        let mut header = Vec::new();
        header.extend_from_slice(&(PEER_FRAME_BYTES_MAX as u32 + 1).to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        let (_, error) = decode_all(&header, header.len());
        assert_eq!(
            error,
            Some(FrameError::TooLarge {
                bytes: PEER_FRAME_BYTES_MAX as u32 + 1
            })
        );
    }

    #[test]
    fn the_decoder_holds_received_bytes_not_claimed_ones() {
        let mut out = Vec::new();
        encode_frame(0, &[1; 1000], &mut out);
        let mut decoder = FrameDecoder::default();
        decoder.push(&out[..20]);
        assert_eq!(decoder.next_message(1), Ok(None));
        assert_eq!(decoder.buffered_bytes(), 20);
        assert!(decoder.pending.capacity() < 1000);
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_pieces(
            frames in proptest::collection::vec((any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            piece_bytes in 1usize..64,
        ) {
            let mut stream = Vec::new();
            for (shard, frame) in &frames {
                encode_frame(*shard, frame, &mut stream);
            }
            let (messages, error) = decode_all(&stream, piece_bytes);
            prop_assert_eq!(error, None);
            let decoded: Vec<_> = messages.into_iter().map(|message| (message.shard, message.frame)).collect();
            prop_assert_eq!(decoded, frames);
        }
    }
}
