//! Arbitrary bytes as a message from a peer; the checks live in
//! `keel_replication::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_replication::fuzzing::decode_message(data);
});
