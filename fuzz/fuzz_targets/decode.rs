//! Any bytes, decoded as an announce, a request and a reply: no panic, and
//! whatever decodes survives a round trip through `encode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keyman::harness::fuzz::decode_bytes(data);
});
