//! Any bytes, read as a sequence of timed messages to one Engine: the pool's
//! invariants and the engine's promises hold after every one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keyman::fuzzing::drive_engine(data);
});
