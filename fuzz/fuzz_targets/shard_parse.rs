//! Shard header and body parsing from arbitrary bytes: never panics, and a
//! shard that verifies re-encodes to exactly its own header.
#![no_main]

use codec::shard::{self, ShardHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ShardHeader::parse(data);
    if let Ok(v) = shard::verify(data) {
        let mut h = v.header.clone();
        let encoded = h.encode(v.body);
        if v.header.header_len == encoded.len() {
            assert_eq!(&data[..encoded.len()], &encoded[..]);
        }
    }
});
