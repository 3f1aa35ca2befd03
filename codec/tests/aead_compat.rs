//! The shard format promises IETF ChaCha20-Poly1305 (RFC 8439), whichever
//! library computes it. Check the `ring` output against RustCrypto's
//! independent implementation, so swapping libraries can never orphan data.

mod common;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use codec::shard::ShardHeader;
use codec::{ChunkKey, DomainKey, Opener};
use common::*;

#[test]
fn ring_sealed_payload_opens_with_rustcrypto() {
    let domain = DomainKey::new([21; 32]);
    let data = random_bytes(300_000, 21);
    let id = domain.chunk_id(&data);
    let key = [33u8; 32];
    // k = 1, m = 0: the single shard body is the sealed payload plus padding.
    let mut out = codec::SealedChunk::default();
    sealer(1, 0)
        .seal_with_key(id, &ChunkKey::from_bytes(key), [5; 12], &data, &mut out)
        .unwrap();
    assert!(!out.compressed());
    let shard = out.shard(0);
    let h = ShardHeader::parse(&shard).unwrap();
    let ct = &shard[h.header_len..h.header_len + h.payload_len as usize + 16];

    // The associated data, as documented in the aead module.
    let mut ad = Vec::new();
    ad.extend_from_slice(b"GSHDv1\0\0");
    ad.extend_from_slice(&id.0);
    ad.extend_from_slice(&h.plaintext_len.to_le_bytes());
    ad.extend_from_slice(&h.payload_len.to_le_bytes());
    ad.push(h.flags);

    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    let plain = cipher
        .decrypt(&[5u8; 12].into(), Payload { msg: ct, aad: &ad })
        .expect("RustCrypto opens what ring sealed");
    assert_eq!(plain, data);

    // And the codec opens it back under the same explicit key.
    let mut back = Vec::new();
    Opener::new()
        .unwrap()
        .open_with_key(&id, &ChunkKey::from_bytes(key), &out.shards(), &mut back)
        .unwrap();
    assert_eq!(back, data);
}
