//! Payload encoding: serde + bincode 2.
//!
//! Entries are encoded with bincode's standard configuration (variable-length
//! integers, little-endian) and decoded with a limit, so a damaged or hostile
//! length prefix cannot make the decoder allocate more than a frame can hold.
//! That bound is the largest frame's payload, not the payload at hand, and
//! bincode allocates a `Vec<u8>`'s claimed length before it reads the bytes: a
//! payload type should decode its byte strings borrowed from the input and
//! copied (as `keel_engine::operation` does), which checks the length first.
//! Decoding rejects trailing bytes: a payload is exactly one value.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::frame::FRAME_PAYLOAD_BYTES_MAX;

/// Why a payload did not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("payload does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("payload does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{trailing} bytes left after the value")]
    Trailing { trailing: usize },
    #[error("payload has {actual} bytes, expected {expected}")]
    Length { expected: usize, actual: usize },
}

/// The configuration entries use.
pub fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ FRAME_PAYLOAD_BYTES_MAX as usize }>()
}

/// The configuration of the WAL's own fixed-layout records.
pub fn fixed_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<{ FRAME_PAYLOAD_BYTES_MAX as usize }>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_with(bytes, config())
}

pub(crate) fn decode_with<T: DeserializeOwned>(
    bytes: &[u8],
    config: impl bincode::config::Config,
) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing {
            trailing: bytes.len() - used,
        });
    }
    Ok(value)
}
