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

use std::sync::Arc;

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
    #[error("payload of {bytes} bytes exceeds the limit of {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
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

/// `value` encoded, in a vector of exactly its size: a pass that only counts
/// the bytes, then one allocation. bincode's own `encode_to_vec` grows an
/// empty vector, which took 6-9 reallocations for a SET of 100 bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = encoded_bytes(value)?;
    let mut encoded = Vec::with_capacity(bytes);
    let written = bincode::serde::encode_into_std_write(value, &mut encoded, config())?;
    assert_eq!(written, bytes, "the counting pass and the encoding agree");
    Ok(encoded)
}

/// `value` encoded, in a shared buffer of exactly its size: what a log entry
/// holds, without `encode`'s vector and its copy into an `Arc`. A value over
/// `bytes_max` is refused from the count, before anything is allocated.
pub fn encode_shared<T: Serialize>(value: &T, bytes_max: usize) -> Result<Arc<[u8]>, CodecError> {
    let bytes = encoded_bytes(value)?;
    if bytes > bytes_max {
        return Err(CodecError::TooLarge { bytes, bytes_max });
    }
    let mut encoded: Arc<[u8]> = std::iter::repeat_n(0, bytes).collect();
    let buffer = Arc::get_mut(&mut encoded).expect("a new Arc has one owner");
    let written = bincode::serde::encode_into_slice(value, buffer, config())?;
    assert_eq!(written, bytes, "the counting pass and the encoding agree");
    Ok(encoded)
}

/// The bytes `value` encodes to.
fn encoded_bytes<T: Serialize>(value: &T) -> Result<usize, CodecError> {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut counter, config())?;
    Ok(counter.bytes_written)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        index: u64,
        key: Vec<u8>,
        value: Vec<u8>,
        names: Vec<String>,
    }

    /// The sized encodings write what bincode's growing vector writes, for
    /// values of every size from empty to past a vector's first doublings.
    #[test]
    fn sized_encodings_match_bincodes_own() {
        for bytes in [0, 1, 7, 127, 128, 300, 70_000] {
            let sample = Sample {
                index: bytes as u64 * 1_000_003,
                key: vec![b'k'; bytes / 3],
                value: vec![0xa5; bytes],
                names: vec!["n".repeat(bytes % 17); bytes % 5],
            };
            let expected = bincode::serde::encode_to_vec(&sample, config()).unwrap();
            let encoded = encode(&sample).unwrap();
            assert_eq!(encoded, expected, "{bytes} bytes");
            assert_eq!(encoded.capacity(), expected.len(), "one exact allocation");
            let shared = encode_shared(&sample, expected.len()).unwrap();
            assert_eq!(&*shared, &expected[..]);
            assert!(matches!(
                encode_shared(&sample, expected.len() - 1),
                Err(CodecError::TooLarge { bytes, bytes_max })
                    if bytes == expected.len() && bytes_max == expected.len() - 1
            ));
        }
    }
}
