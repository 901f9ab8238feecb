//! Arbitrary bytes as what a peer sends: a handshake message and a stream of
//! transport frames; the checks live in `keel_engine::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_engine::fuzzing::peer_transport(data);
});
