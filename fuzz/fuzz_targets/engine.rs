//! Any bytes, read as a sequence of `Operation`s (timed messages, well-formed or
//! not, and clock moves) replayed on one Engine: the pool's invariants and the
//! engine's promises hold after every one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keyman::harness::fuzz::drive_engine(data);
});
