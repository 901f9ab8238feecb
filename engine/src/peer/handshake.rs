//! The peer handshake: the first bytes on every peer connection, which tell
//! the acceptor who dialled (cluster, node, core) and prove, when the cluster
//! has a password, that both sides know it without either sending it.
//! Pure: encoding, decoding and the checks; `glommio_peer` moves the bytes.
//!
//! # Exchange
//!
//! ```text
//! dialer                                   acceptor
//!   Hello(nonce_d) ───────────────────────▶  checks it (`Expected::check`)
//!                 ◀─────────────────────── Hello(nonce_a), or Refuse(reason) and close
//!   checks it
//!   (with a password on both sides)
//!   Proof(HMAC(pw, DIALER_LABEL ‖ hello_d ‖ hello_a)) ──▶ verifies
//!                 ◀─────────────────────── Proof(HMAC(pw, ACCEPTOR_LABEL ‖ hello_d ‖ hello_a))
//!   verifies; frames follow both ways ([`super::frame`])
//! ```
//!
//! Each proof covers both sides' fresh nonces, so a recorded proof is no use
//! on another connection, and the two labels keep one side's proof from
//! being reflected back as the other's. The acceptor sends its proof only
//! after verifying the dialer's.
//!
//! # Messages (version 1, all integers little-endian, fixed width)
//!
//! Every message starts with the same 8 bytes and ends with a CRC32
//! (crc32fast) of every byte before it:
//!
//! ```text
//! offset size field     meaning
//!      0    4 magic     b"KPHS"
//!      4    2 version   HANDSHAKE_VERSION
//!      6    1 kind      1 Hello, 2 Refuse, 3 Proof
//!      7    1 reserved  zero
//! ```
//!
//! Hello ([`HELLO_BYTES`]):
//!
//! ```text
//!      8    8 from      the sender's node id
//!     16    8 to        the node id it means to reach
//!     24    2 core      the core index of this connection
//!     26    2 cores     the sender's core count
//!     28    4 shards    the sender's shard count
//!     32   16 nonce     random, fresh for this connection
//!     48    1 name_len  bytes of the cluster name (1..=CLUSTER_NAME_BYTES_MAX)
//!     49    1 password  1 if the sender has a password set, else 0
//!     50    2 client    the sender's client (Redis protocol) port, for
//!                         `-MOVED` and CLUSTER SLOTS; 0 if not serving
//!     52   64 name      the cluster name, zero padded
//!    116    4 crc
//! ```
//!
//! Refuse ([`REFUSE_BYTES`]): `8 1 reason` ([`Refusal`]), `9 3 reserved`
//! zero, `12 4 crc`. Proof ([`PROOF_BYTES`]): `8 32 tag` (HMAC-SHA256),
//! `40 4 crc`.
//!
//! Decoding accepts one encoding per message (reserved bytes and the name's
//! padding zero), so `encode(decode(bytes)) == bytes`.
//!
//! # Version changes
//!
//! 1: the first.
//! 2: bytes 50..52 of Hello carry the client port (reserved zero in 1).

use crate::secret::Secret;

/// The first bytes of every handshake message.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"KPHS";
/// The version this build speaks; an acceptor refuses any other.
pub const HANDSHAKE_VERSION: u16 = 2;
/// Bytes every message starts with: magic, version, kind, reserved.
pub const MESSAGE_HEADER_BYTES: usize = 8;
/// Longest cluster name, in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;
/// Bytes of a random nonce.
pub const NONCE_BYTES: usize = 16;
/// Bytes of a proof (HMAC-SHA256).
pub const TAG_BYTES: usize = 32;
pub const HELLO_BYTES: usize = 120;
pub const REFUSE_BYTES: usize = 16;
pub const PROOF_BYTES: usize = 44;
/// What the dialer's proof is computed over, before the two hellos.
const DIALER_LABEL: &[u8] = b"keel peer dialer v1";
/// What the acceptor's proof is computed over, before the two hellos.
const ACCEPTOR_LABEL: &[u8] = b"keel peer acceptor v1";

const KIND_HELLO: u8 = 1;
const KIND_REFUSE: u8 = 2;
const KIND_PROOF: u8 = 3;
const NAME_AT: usize = 52;
const _: () = assert!(NAME_AT + CLUSTER_NAME_BYTES_MAX + 4 == HELLO_BYTES);

/// One side's introduction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub from: u64,
    pub to: u64,
    pub core: u16,
    pub cores: u16,
    pub shards: u32,
    pub nonce: [u8; NONCE_BYTES],
    pub password: bool,
    pub cluster_name: String,
    /// Where the sender serves clients (0: unknown).
    pub client_port: u16,
}

/// Why an acceptor (or a dialer, of the acceptor's hello) refuses a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("the peer speaks another handshake version")]
    Version = 1,
    #[error("the peer belongs to another cluster")]
    WrongCluster = 2,
    #[error("the peer's node id is not a member of this cluster")]
    UnknownNode = 3,
    #[error("the peer meant to reach another node id")]
    WrongNode = 4,
    #[error("the peer's core index or core count differs")]
    CoreMismatch = 5,
    #[error("the peer's shard count differs")]
    ShardMismatch = 6,
    #[error("one side has a password set and the other not")]
    PasswordMismatch = 7,
    #[error("the peer's proof of the password is wrong")]
    BadProof = 8,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::Version,
        Refusal::WrongCluster,
        Refusal::UnknownNode,
        Refusal::WrongNode,
        Refusal::CoreMismatch,
        Refusal::ShardMismatch,
        Refusal::PasswordMismatch,
        Refusal::BadProof,
    ];

    fn from_code(code: u8) -> Option<Refusal> {
        Refusal::ALL
            .into_iter()
            .find(|reason| *reason as u8 == code)
    }
}

/// One handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Refuse(Refusal),
    Proof([u8; TAG_BYTES]),
}

/// Bytes that are not a handshake message: the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("not a Keel peer (bad magic)")]
    Magic,
    #[error("handshake version {version}, this build speaks {HANDSHAKE_VERSION}")]
    Version { version: u16 },
    #[error("unknown handshake message kind {kind}")]
    Kind { kind: u8 },
    #[error("handshake message of {bytes} bytes where {expected} were due")]
    Length { bytes: usize, expected: usize },
    #[error("handshake checksum mismatch")]
    Checksum,
    #[error("malformed handshake message: {field}")]
    Malformed { field: &'static str },
}

/// Whether `name` may name a cluster: 1 to [`CLUSTER_NAME_BYTES_MAX`]
/// bytes of printable ASCII without spaces.
pub fn valid_cluster_name(name: &str) -> bool {
    (1..=CLUSTER_NAME_BYTES_MAX).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_graphic())
}

fn header(kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(HELLO_BYTES);
    out.extend_from_slice(&HANDSHAKE_MAGIC);
    out.extend_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    out.extend_from_slice(&[kind, 0]);
    out
}

fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The bytes of `message`.
pub fn encode(message: &Message) -> Vec<u8> {
    match message {
        Message::Hello(hello) => {
            assert!(
                valid_cluster_name(&hello.cluster_name),
                "the configuration checked the cluster name"
            );
            let mut out = header(KIND_HELLO);
            out.extend_from_slice(&hello.from.to_le_bytes());
            out.extend_from_slice(&hello.to.to_le_bytes());
            out.extend_from_slice(&hello.core.to_le_bytes());
            out.extend_from_slice(&hello.cores.to_le_bytes());
            out.extend_from_slice(&hello.shards.to_le_bytes());
            out.extend_from_slice(&hello.nonce);
            out.extend_from_slice(&[hello.cluster_name.len() as u8, u8::from(hello.password)]);
            out.extend_from_slice(&hello.client_port.to_le_bytes());
            let mut name = [0u8; CLUSTER_NAME_BYTES_MAX];
            name[..hello.cluster_name.len()].copy_from_slice(hello.cluster_name.as_bytes());
            out.extend_from_slice(&name);
            seal(out)
        }
        Message::Refuse(reason) => {
            let mut out = header(KIND_REFUSE);
            out.extend_from_slice(&[*reason as u8, 0, 0, 0]);
            seal(out)
        }
        Message::Proof(tag) => {
            let mut out = header(KIND_PROOF);
            out.extend_from_slice(tag);
            seal(out)
        }
    }
}

/// Reads the common header: the whole message's length, so that the reader
/// knows how many bytes to wait for (never more than [`HELLO_BYTES`]).
pub fn message_bytes(header: &[u8]) -> Result<usize, HandshakeError> {
    let expected = MESSAGE_HEADER_BYTES;
    if header.len() != expected {
        return Err(HandshakeError::Length {
            bytes: header.len(),
            expected,
        });
    }
    if header[0..4] != HANDSHAKE_MAGIC {
        return Err(HandshakeError::Magic);
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != HANDSHAKE_VERSION {
        return Err(HandshakeError::Version { version });
    }
    if header[7] != 0 {
        return Err(HandshakeError::Malformed { field: "reserved" });
    }
    match header[6] {
        KIND_HELLO => Ok(HELLO_BYTES),
        KIND_REFUSE => Ok(REFUSE_BYTES),
        KIND_PROOF => Ok(PROOF_BYTES),
        kind => Err(HandshakeError::Kind { kind }),
    }
}

/// Decodes one whole message.
pub fn decode(bytes: &[u8]) -> Result<Message, HandshakeError> {
    let expected = message_bytes(bytes.get(..MESSAGE_HEADER_BYTES).unwrap_or(bytes))?;
    if bytes.len() != expected {
        return Err(HandshakeError::Length {
            bytes: bytes.len(),
            expected,
        });
    }
    let (body, crc) = bytes.split_at(expected - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err(HandshakeError::Checksum);
    }
    match bytes[6] {
        KIND_HELLO => decode_hello(body).map(Message::Hello),
        KIND_REFUSE => {
            if body[9..12] != [0, 0, 0] {
                return Err(HandshakeError::Malformed { field: "reserved" });
            }
            Refusal::from_code(body[8])
                .map(Message::Refuse)
                .ok_or(HandshakeError::Malformed { field: "reason" })
        }
        _ => Ok(Message::Proof(
            body[8..8 + TAG_BYTES].try_into().expect("32 bytes"),
        )),
    }
}

fn decode_hello(body: &[u8]) -> Result<Hello, HandshakeError> {
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let u16_at = |at: usize| u16::from_le_bytes(body[at..at + 2].try_into().expect("2 bytes"));
    let name_len = usize::from(body[48]);
    let password = match body[49] {
        0 => false,
        1 => true,
        _ => return Err(HandshakeError::Malformed { field: "password" }),
    };
    let name_field = &body[NAME_AT..NAME_AT + CLUSTER_NAME_BYTES_MAX];
    let padding = name_field.get(name_len..).unwrap_or(&[1]);
    if padding.iter().any(|byte| *byte != 0) {
        return Err(HandshakeError::Malformed { field: "name_len" });
    }
    let cluster_name = std::str::from_utf8(&name_field[..name_len])
        .ok()
        .filter(|name| valid_cluster_name(name))
        .ok_or(HandshakeError::Malformed { field: "name" })?
        .to_owned();
    Ok(Hello {
        from: u64_at(8),
        to: u64_at(16),
        core: u16_at(24),
        cores: u16_at(26),
        shards: u32::from_le_bytes(body[28..32].try_into().expect("4 bytes")),
        nonce: body[32..48].try_into().expect("16 bytes"),
        password,
        cluster_name,
        client_port: u16_at(50),
    })
}

/// What this node expects of a peer's hello.
#[derive(Clone, Debug)]
pub struct Expected<'a> {
    pub cluster_name: &'a str,
    /// This node's id.
    pub me: u64,
    /// Every member's id, this node's included.
    pub members: &'a [u64],
    /// The node dialled, when checking an acceptor's answer.
    pub dialled: Option<u64>,
    pub core: u16,
    pub cores: u16,
    pub shards: u32,
    pub password: bool,
}

impl Expected<'_> {
    /// Whether `hello` comes from a member of this cluster, meant for this
    /// node and core, running the same shape.
    pub fn check(&self, hello: &Hello) -> Result<(), Refusal> {
        if hello.cluster_name != self.cluster_name {
            return Err(Refusal::WrongCluster);
        }
        let known = hello.from != self.me && self.members.contains(&hello.from);
        if !known || self.dialled.is_some_and(|dialled| dialled != hello.from) {
            return Err(Refusal::UnknownNode);
        }
        if hello.to != self.me {
            return Err(Refusal::WrongNode);
        }
        if hello.core != self.core || hello.cores != self.cores {
            return Err(Refusal::CoreMismatch);
        }
        if hello.shards != self.shards {
            return Err(Refusal::ShardMismatch);
        }
        if hello.password != self.password {
            return Err(Refusal::PasswordMismatch);
        }
        Ok(())
    }
}

/// Which side of the connection a proof speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Acceptor,
}

/// The proof `side` sends: HMAC-SHA256 keyed by the password over its label
/// and both hellos as sent (their encoded bytes).
pub fn proof(
    secret: &Secret,
    side: Side,
    dialer_hello: &[u8],
    acceptor_hello: &[u8],
) -> [u8; TAG_BYTES] {
    secret.mac(&[label(side), dialer_hello, acceptor_hello])
}

/// Whether `tag` is the proof `side` must send (compared in constant time).
pub fn verify_proof(
    secret: &Secret,
    side: Side,
    dialer_hello: &[u8],
    acceptor_hello: &[u8],
    tag: &[u8; TAG_BYTES],
) -> bool {
    secret.verify_mac(&[label(side), dialer_hello, acceptor_hello], tag)
}

fn label(side: Side) -> &'static [u8] {
    match side {
        Side::Dialer => DIALER_LABEL,
        Side::Acceptor => ACCEPTOR_LABEL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A change to a good hello, and to its bytes, that a check must catch.
    type HelloChange = fn(&mut Hello);
    type BytesChange = fn(&mut Vec<u8>);

    fn hello() -> Hello {
        Hello {
            from: 2,
            to: 1,
            core: 1,
            cores: 2,
            shards: 4,
            nonce: [7; NONCE_BYTES],
            password: false,
            cluster_name: "keel".into(),
            client_port: 7379,
        }
    }

    fn expected() -> Expected<'static> {
        Expected {
            cluster_name: "keel",
            me: 1,
            members: &[1, 2, 3],
            dialled: None,
            core: 1,
            cores: 2,
            shards: 4,
            password: false,
        }
    }

    #[test]
    fn every_message_round_trips_at_its_documented_size() {
        let messages = [
            (Message::Hello(hello()), HELLO_BYTES),
            (Message::Refuse(Refusal::WrongCluster), REFUSE_BYTES),
            (Message::Proof([9; TAG_BYTES]), PROOF_BYTES),
        ];
        for (message, size) in messages {
            let bytes = encode(&message);
            assert_eq!(bytes.len(), size, "{message:?}");
            assert_eq!(message_bytes(&bytes[..MESSAGE_HEADER_BYTES]), Ok(size));
            assert_eq!(decode(&bytes), Ok(message));
        }
        for reason in Refusal::ALL {
            let bytes = encode(&Message::Refuse(reason));
            assert_eq!(decode(&bytes), Ok(Message::Refuse(reason)));
        }
    }

    #[test]
    fn the_hello_layout_is_as_documented() {
        let bytes = encode(&Message::Hello(hello()));
        assert_eq!(&bytes[0..4], b"KPHS");
        assert_eq!(&bytes[4..6], &HANDSHAKE_VERSION.to_le_bytes());
        assert_eq!(bytes[6], KIND_HELLO);
        assert_eq!(&bytes[8..16], &2u64.to_le_bytes());
        assert_eq!(&bytes[16..24], &1u64.to_le_bytes());
        assert_eq!(&bytes[24..26], &1u16.to_le_bytes());
        assert_eq!(&bytes[26..28], &2u16.to_le_bytes());
        assert_eq!(&bytes[28..32], &4u32.to_le_bytes());
        assert_eq!(&bytes[32..48], &[7; NONCE_BYTES]);
        assert_eq!(bytes[48], 4);
        assert_eq!(&bytes[50..52], &7379u16.to_le_bytes());
        assert_eq!(&bytes[52..56], b"keel");
    }

    #[test]
    fn expected_check_passes_a_good_hello_and_names_each_refusal() {
        assert_eq!(expected().check(&hello()), Ok(()));
        let cases: [(HelloChange, Refusal); 8] = [
            (|h| h.cluster_name = "other".into(), Refusal::WrongCluster),
            (|h| h.from = 9, Refusal::UnknownNode),
            (|h| h.from = 1, Refusal::UnknownNode),
            (|h| h.to = 3, Refusal::WrongNode),
            (|h| h.core = 0, Refusal::CoreMismatch),
            (|h| h.cores = 3, Refusal::CoreMismatch),
            (|h| h.shards = 8, Refusal::ShardMismatch),
            (|h| h.password = true, Refusal::PasswordMismatch),
        ];
        for (change, refusal) in cases {
            let mut bad = hello();
            change(&mut bad);
            assert_eq!(expected().check(&bad), Err(refusal), "{bad:?}");
        }
        let dialled_3 = Expected {
            dialled: Some(3),
            ..expected()
        };
        assert_eq!(dialled_3.check(&hello()), Err(Refusal::UnknownNode));
    }

    #[test]
    fn bad_magic_version_kind_length_and_checksum_are_refused() {
        let good = encode(&Message::Hello(hello()));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert_eq!(decode(&bad_magic), Err(HandshakeError::Magic));
        let mut other_version = good.clone();
        other_version[4] = 1;
        assert_eq!(
            decode(&other_version),
            Err(HandshakeError::Version { version: 1 })
        );
        let mut bad_kind = good.clone();
        bad_kind[6] = 9;
        assert_eq!(decode(&bad_kind), Err(HandshakeError::Kind { kind: 9 }));
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert_eq!(decode(&flipped), Err(HandshakeError::Checksum));
    }

    /// Bytes that pass the CRC but break a rule of the layout: a hostile
    /// peer can compute a CRC.
    #[test]
    fn non_canonical_fields_are_refused_even_with_a_valid_checksum() {
        let resealed = |change: fn(&mut Vec<u8>)| {
            let mut bytes = encode(&Message::Hello(hello()));
            bytes.truncate(HELLO_BYTES - 4);
            change(&mut bytes);
            decode(&seal(bytes))
        };
        let cases: [(BytesChange, &str); 5] = [
            (|b| b[49] = 2, "password"),
            (
                |b| {
                    b[48] = 0;
                    b[52..56].fill(0);
                },
                "name",
            ),
            (|b| b[48] = 65, "name_len"),
            (|b| b[60] = b'x', "name_len"),
            (|b| b[52] = b' ', "name"),
        ];
        for (change, field) in cases {
            assert_eq!(
                resealed(change),
                Err(HandshakeError::Malformed { field }),
                "{field}"
            );
        }
        let mut refuse = encode(&Message::Refuse(Refusal::Version));
        refuse.truncate(REFUSE_BYTES - 4);
        refuse[8] = 0;
        assert_eq!(
            decode(&seal(refuse)),
            Err(HandshakeError::Malformed { field: "reason" })
        );
    }

    #[test]
    fn proofs_need_the_password_and_are_bound_to_side_and_nonces() {
        let secret = Secret::new("pw");
        let dialer = encode(&Message::Hello(hello()));
        let acceptor = encode(&Message::Hello(Hello {
            from: 1,
            to: 2,
            nonce: [8; NONCE_BYTES],
            ..hello()
        }));
        let tag = proof(&secret, Side::Dialer, &dialer, &acceptor);
        assert!(verify_proof(
            &secret,
            Side::Dialer,
            &dialer,
            &acceptor,
            &tag
        ));
        let wrong = Secret::new("pW");
        assert!(!verify_proof(
            &wrong,
            Side::Dialer,
            &dialer,
            &acceptor,
            &tag
        ));
        assert!(!verify_proof(
            &secret,
            Side::Acceptor,
            &dialer,
            &acceptor,
            &tag
        ));
        let replayed = encode(&Message::Hello(Hello {
            nonce: [9; NONCE_BYTES],
            ..hello()
        }));
        assert!(!verify_proof(
            &secret,
            Side::Dialer,
            &replayed,
            &acceptor,
            &tag
        ));
        assert!(!tag.windows(2).any(|pair| pair == b"pw"));
    }

    proptest! {
        #[test]
        fn any_hello_round_trips(
            from in any::<u64>(), to in any::<u64>(), core in any::<u16>(), cores in any::<u16>(),
            shards in any::<u32>(), nonce in any::<[u8; NONCE_BYTES]>(), password in any::<bool>(),
            name in "[!-~]{1,64}", client_port in any::<u16>(),
        ) {
            let message = Message::Hello(Hello { from, to, core, cores, shards, nonce, password, cluster_name: name, client_port });
            prop_assert_eq!(decode(&encode(&message)), Ok(message));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes_to_itself(
            bytes in proptest::collection::vec(any::<u8>(), 0..130),
        ) {
            if let Ok(message) = decode(&bytes) {
                prop_assert_eq!(encode(&message), bytes);
            }
        }
    }
}
