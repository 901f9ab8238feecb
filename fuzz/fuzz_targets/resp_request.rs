//! Arbitrary bytes as a client's request stream, the first byte choosing how
//! it is cut into reads; the checks live in `keel_engine::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_engine::fuzzing::resp_request(data);
});
