//! Property tests of the RESP request parser: no input makes it panic, and
//! whatever a client encodes parses back to exactly its arguments, never
//! early: every proper prefix is "incomplete".

use keel_engine::resp::{parse_request, Parsed, Protocol, Reply};
use proptest::prelude::*;

const BULK_BYTES_MAX: usize = 4096;

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_request(&bytes, BULK_BYTES_MAX);
        let mut multibulk = b"*3\r\n".to_vec();
        multibulk.extend_from_slice(&bytes);
        let _ = parse_request(&multibulk, BULK_BYTES_MAX);
    }

    #[test]
    fn encoded_requests_parse_back_and_no_prefix_parses(
        words in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..8),
        trailing in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut wire = Vec::new();
        Reply::Array(words.iter().cloned().map(Reply::Bulk).collect()).encode(Protocol::Resp2, &mut wire);
        let length = wire.len();
        for end in 0..length {
            prop_assert_eq!(parse_request(&wire[..end], BULK_BYTES_MAX), Ok(Parsed::Incomplete));
        }
        wire.extend_from_slice(&trailing);
        prop_assert_eq!(parse_request(&wire, BULK_BYTES_MAX), Ok(Parsed::Request(words, length)));
    }
}
