//! Arbitrary bytes as a log entry's operation; the checks live in
//! `keel_engine::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_engine::fuzzing::operation_decode(data);
});
