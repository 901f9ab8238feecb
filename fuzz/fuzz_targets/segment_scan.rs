//! Arbitrary bytes as the body of a segment, scanned and recovered; the checks
//! live in `keel_wal::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keel_wal::fuzzing::segment_scan(data);
});
