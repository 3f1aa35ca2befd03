//! Opening a chunk from arbitrary shard bytes. The input is split into
//! shards; the first few are real shards of a known chunk with bytes of the
//! input XORed over them, so the fuzzer explores damaged real shards as well
//! as garbage. Opening must never panic and never return wrong plaintext.
#![no_main]

use codec::{DomainKey, ErasureParams, Opener, SealConfig, Sealer};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    domain: DomainKey,
    plain: Vec<u8>,
    id: codec::ChunkId,
    shards: Vec<Vec<u8>>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let domain = DomainKey::new([7; 32]);
        let plain: Vec<u8> = (0..5000u32).flat_map(|i| (i * 2654435761).to_le_bytes()).collect();
        let mut sealer = Sealer::new(SealConfig::new(ErasureParams::new(3, 2).unwrap())).unwrap();
        let sealed = sealer.seal(&domain, &plain).unwrap();
        Fixture { id: sealed.id(), shards: sealed.shards(), domain, plain }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if data.is_empty() {
        return;
    }
    // First byte: which real shards to include (bit i = shard i).
    let mask = data[0];
    let rest = &data[1..];
    let mut shards: Vec<Vec<u8>> = Vec::new();
    let mut pieces = rest.split(|&b| b == 0xff).peekable();
    for (i, real) in f.shards.iter().enumerate() {
        if mask >> i & 1 == 0 {
            continue;
        }
        let mut s = real.clone();
        if let Some(noise) = pieces.next() {
            // XOR noise at an offset given by its first two bytes.
            if noise.len() > 2 {
                let at = u16::from_le_bytes([noise[0], noise[1]]) as usize % s.len();
                for (j, b) in noise[2..].iter().enumerate() {
                    if let Some(x) = s.get_mut(at + j) {
                        *x ^= b;
                    }
                }
            }
        }
        shards.push(s);
    }
    // Whatever is left is raw garbage shards.
    shards.extend(pieces.map(|p| p.to_vec()));

    let mut opener = Opener::new().unwrap();
    if let Ok((plain, _)) = opener.open(&f.domain, &f.id, &shards) {
        assert_eq!(plain, f.plain, "open returned wrong plaintext");
    }
});
