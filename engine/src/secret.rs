//! [`Secret`]: the shared password (`requirepass`), held so that it cannot
//! leak by accident and compared in constant time.
//!
//! Clients prove they know it with `AUTH` or `HELLO ... AUTH`; the peers of
//! the replicated node prove it in their handshake by an HMAC keyed by it
//! ([`Secret::mac`], [`Secret::verify_mac`]), so the bytes never leave this type. The type has no `Display`, no `Serialize` and a
//! `Debug` that prints `<redacted>`, so no log line, error message or
//! `{:?}` of a settings struct holding it can show the password. Its memory
//! is not wiped on drop: the server holds it for its whole life, and a wipe
//! that the optimiser must keep needs `unsafe` volatile writes.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest password accepted, in bytes. Redis has no limit (it stores a
/// SHA-256 of each password); this one bounds what the settings hold and the
/// work of one comparison, and is far above any generated password
/// (`openssl rand -hex 32` gives 64 bytes).
pub const SECRET_BYTES_MAX: usize = 512;

/// Why a password cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("must not be empty (leave the setting out to run without a password)")]
    Empty,
    #[error("is {len} bytes long; the most is {SECRET_BYTES_MAX}")]
    TooLong { len: usize },
}

/// A password. Whatever the flag or file held is kept as it is; [`Secret::check`]
/// says whether it is usable, so that parsing a flag never fails with an
/// error message that quotes the value.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret {
            bytes: bytes.into(),
        }
    }

    /// Whether the password may be used: not empty, at most
    /// [`SECRET_BYTES_MAX`] bytes.
    pub fn check(&self) -> Result<(), SecretError> {
        match self.bytes.len() {
            0 => Err(SecretError::Empty),
            len if len > SECRET_BYTES_MAX => Err(SecretError::TooLong { len }),
            _ => Ok(()),
        }
    }

    /// Whether `candidate` is the password. The loop runs once per byte of
    /// the password whatever the candidate, and its time depends on no
    /// byte of either nor on where they first differ, so timing a wrong
    /// guess tells nothing about the right one (CWE-208). (Which positions
    /// lie past the candidate's end depends on the candidate's length,
    /// which its sender knows already.)
    ///
    /// Every byte of the password is compared with the candidate's byte at
    /// the same place (0 past its end), the differences OR-ed together with
    /// no early exit; a length difference is OR-ed in last.
    pub fn verify(&self, candidate: &[u8]) -> bool {
        let mut difference = 0u8;
        for (index, byte) in self.bytes.iter().enumerate() {
            let offered = candidate.get(index).copied().unwrap_or(0);
            difference |= byte ^ offered;
        }
        difference |= u8::from(candidate.len() != self.bytes.len());
        // Keeps the optimiser from turning the loop into an early exit.
        std::hint::black_box(difference) == 0
    }

    /// HMAC-SHA256 keyed by the password over `parts`, one after another:
    /// how a peer proves in its handshake that it knows the password
    /// without sending it (`peer::handshake`).
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        self.keyed_mac(parts).finalize().into_bytes().into()
    }

    /// Whether `tag` is [`Secret::mac`] of `parts`, compared in constant time.
    pub fn verify_mac(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        self.keyed_mac(parts).verify_slice(tag).is_ok()
    }

    fn keyed_mac(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(part);
        }
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Equal when they hold the same password, compared in constant time.
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.verify(&other.bytes)
    }
}

impl Eq for Secret {}

/// Never fails: see [`Secret::check`].
impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Secret, Infallible> {
        Ok(Secret::new(text))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_the_password_only() {
        let secret = Secret::new("secret");
        assert!(secret.verify(b"secret"));
        for wrong in [
            &b""[..],
            b"s",
            b"secre",
            b"secreT",
            b"Secret",
            b"secret\0",
            b"secrets",
            b"xsecret",
            b"tercse",
        ] {
            assert!(
                !secret.verify(wrong),
                "{:?}",
                String::from_utf8_lossy(wrong)
            );
        }
    }

    /// A candidate that equals the password followed by zero bytes is the one
    /// that padding with zeros could confuse; the length check must catch it.
    #[test]
    fn zero_padding_does_not_make_a_longer_or_shorter_candidate_match() {
        let secret = Secret::new(b"ab\0\0".to_vec());
        assert!(secret.verify(b"ab\0\0"));
        assert!(!secret.verify(b"ab"));
        assert!(!secret.verify(b"ab\0"));
        assert!(!secret.verify(b"ab\0\0\0"));
    }

    #[test]
    fn every_single_byte_change_is_detected() {
        let password: Vec<u8> = (0..=255u8).collect();
        let secret = Secret::new(password.clone());
        for index in 0..password.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut wrong = password.clone();
                wrong[index] ^= flip;
                assert!(!secret.verify(&wrong), "byte {index} ^ {flip:#x}");
            }
        }
    }

    /// RFC 4231's test case 2: HMAC-SHA256 with the key "Jefe".
    #[test]
    fn mac_is_hmac_sha256_and_verify_mac_needs_the_same_key_and_parts() {
        let secret = Secret::new("Jefe");
        let tag = secret.mac(&[b"what do ya want ", b"for nothing?"]);
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(hex, expected);
        assert!(secret.verify_mac(&[b"what do ya want for nothing?"], &tag));
        assert!(!secret.verify_mac(&[b"what do ya want for nothing!"], &tag));
        assert!(!Secret::new("jefe").verify_mac(&[b"what do ya want for nothing?"], &tag));
        assert!(!secret.verify_mac(&[b"what do ya want for nothing?"], &tag[..31]));
    }

    #[test]
    fn debug_never_shows_the_password() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret)), "Some(<redacted>)");
    }

    #[test]
    fn check_refuses_empty_and_overlong_passwords_without_quoting_them() {
        assert_eq!(Secret::new("").check(), Err(SecretError::Empty));
        assert!(Secret::new(vec![b'x'; SECRET_BYTES_MAX]).check().is_ok());
        let long = Secret::new(vec![b'x'; SECRET_BYTES_MAX + 1]);
        assert_eq!(
            long.check(),
            Err(SecretError::TooLong {
                len: SECRET_BYTES_MAX + 1
            })
        );
        assert!(!long.check().unwrap_err().to_string().contains("xx"));
    }
}
