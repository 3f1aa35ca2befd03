//! Rebuilding shards (keyless, on nodes) from arbitrary bytes: never panics;
//! whatever it rebuilds from real-but-damaged shards either fails or is
//! byte-identical to the original.
#![no_main]

use codec::{DomainKey, ErasureParams, Rebuilder, SealConfig, Sealer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn fixture() -> &'static (codec::ChunkId, Vec<Vec<u8>>) {
    static F: OnceLock<(codec::ChunkId, Vec<Vec<u8>>)> = OnceLock::new();
    F.get_or_init(|| {
        let domain = DomainKey::new([8; 32]);
        let plain: Vec<u8> = (0..3000u32).flat_map(|i| (i ^ 0x5bd1e995).to_le_bytes()).collect();
        let mut sealer = Sealer::new(SealConfig::new(ErasureParams::new(2, 2).unwrap())).unwrap();
        let sealed = sealer.seal(&domain, &plain).unwrap();
        (sealed.id(), sealed.shards())
    })
}

fuzz_target!(|data: &[u8]| {
    let (id, originals) = fixture();
    if data.len() < 2 {
        return;
    }
    let keep = data[0];
    let flip_at = data[1] as usize;
    let mut shards: Vec<Vec<u8>> = Vec::new();
    for (i, s) in originals.iter().enumerate() {
        if keep >> i & 1 == 1 {
            let mut s = s.clone();
            // Flip a byte in shard i when bit i+4 says so: only the checksum
            // stands between that damage and a rebuild.
            if keep >> (i + 4) & 1 == 1 {
                let at = (flip_at * 131 + i) % s.len();
                s[at] ^= 1;
            }
            shards.push(s);
        }
    }
    shards.push(data[2..].to_vec());
    let wanted: Vec<usize> = (0..originals.len()).collect();
    if let Ok((rebuilt, _)) = Rebuilder::new().rebuild(id, &shards, &wanted) {
        for (i, s) in rebuilt.iter().enumerate() {
            assert_eq!(s, &originals[i], "rebuilt shard {i} differs");
        }
    }
});
