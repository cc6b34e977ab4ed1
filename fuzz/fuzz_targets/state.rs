//! Saved-state decoding on arbitrary bytes: never panics, and whatever
//! decodes re-encodes to records that decode to the same state. The same
//! body runs in the test suite on a fixed corpus (`src/pool/records/`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keyman::pool::check_state_decoding(data);
});
