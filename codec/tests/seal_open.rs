//! Round trips, subsets, corruption, wrong keys and rebuilds across the
//! (k, m) grid, as property tests where the input space is large.

mod common;

use codec::shard::{self, ShardHeader};
use codec::{CodecError, ErasureParams, Opener, Rebuilder, SealConfig, Sealer};
use common::*;
use proptest::prelude::*;

fn open_all(domain: &codec::DomainKey, sealed: &codec::SealedChunk, shards: &[Vec<u8>]) -> Vec<u8> {
    let (plain, report) = Opener::new()
        .unwrap()
        .open(domain, &sealed.id(), shards)
        .unwrap();
    assert!(report.rejected.is_empty(), "{report:?}");
    plain
}

#[test]
fn every_subset_of_k_shards_opens() {
    let d = domain(1);
    for (k, m) in GRID {
        let data = random_bytes(20_000 + k * 1000, (k * 100 + m) as u64);
        let sealed = sealer(k, m).seal(&d, &data).unwrap();
        let shards = sealed.shards();
        let mut opener = Opener::new().unwrap();
        let mut out = Vec::new();
        let subsets = combinations(k + m, k);
        for subset in &subsets {
            let chosen: Vec<&Vec<u8>> = subset.iter().map(|&i| &shards[i]).collect();
            let report = opener
                .open_into(&d, &sealed.id(), &chosen, &mut out)
                .unwrap_or_else(|e| panic!("({k},{m}) subset {subset:?}: {e}"));
            assert_eq!(out, data, "({k},{m}) subset {subset:?}");
            let missing_data = (0..k).filter(|i| !subset.contains(i)).count();
            assert_eq!(report.reconstructed.len(), missing_data);
        }
        eprintln!("({k},{m}): {} subsets opened", subsets.len());
    }
}

#[test]
fn fewer_than_k_shards_names_the_shortage() {
    let d = domain(2);
    for (k, m) in GRID {
        let data = text_bytes(50_000, 3);
        let sealed = sealer(k, m).seal(&d, &data).unwrap();
        let shards = sealed.shards();
        let err = Opener::new()
            .unwrap()
            .open(&d, &sealed.id(), &shards[m + 1..])
            .unwrap_err();
        assert_eq!(
            err,
            CodecError::TooFewShards {
                valid: k - 1,
                needed: k
            }
        );
    }
}

#[test]
fn empty_input_and_no_shards() {
    let d = domain(3);
    let sealed = sealer(4, 2).seal(&d, b"").unwrap();
    assert_eq!(open_all(&d, &sealed, &sealed.shards()), b"");
    let none: Vec<Vec<u8>> = vec![];
    assert_eq!(
        Opener::new()
            .unwrap()
            .open(&d, &sealed.id(), &none)
            .unwrap_err(),
        CodecError::TooFewShards {
            valid: 0,
            needed: 1
        }
    );
}

#[test]
fn compression_is_skipped_when_it_does_not_shrink() {
    let d = domain(4);
    let mut s = sealer(4, 2);
    let random = s.seal(&d, &random_bytes(1 << 20, 5)).unwrap();
    assert!(!random.compressed());
    let text = s.seal(&d, &text_bytes(1 << 20, 5)).unwrap();
    assert!(text.compressed());
    assert!(text.stored_len() < random.stored_len() / 2);
    assert_eq!(open_all(&d, &text, &text.shards()), text_bytes(1 << 20, 5));
}

#[test]
fn identical_content_seals_identically_within_a_domain_only() {
    let data = text_bytes(300_000, 9);
    let a = sealer(4, 2).seal(&domain(5), &data).unwrap();
    let b = sealer(4, 2).seal(&domain(5), &data).unwrap();
    let c = sealer(4, 2).seal(&domain(6), &data).unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(a.shards(), b.shards(), "convergent: dedup relies on it");
    assert_ne!(a.id(), c.id());
    assert_ne!(a.body(0), c.body(0));
}

#[test]
fn wrong_domain_is_an_authentication_error() {
    let data = random_bytes(100_000, 7);
    let sealed = sealer(4, 2).seal(&domain(7), &data).unwrap();
    let err = Opener::new()
        .unwrap()
        .open(&domain(8), &sealed.id(), &sealed.shards())
        .unwrap_err();
    assert_eq!(err, CodecError::AuthenticationFailed);
}

/// Opens do not rehash the plaintext against the id: the AEAD is what ties
/// the bytes to the id. A node that serves one chunk's shards relabelled
/// (and re-checksummed) as another chunk of the same domain gets nothing
/// through.
#[test]
fn shards_relabelled_as_another_chunk_do_not_open() {
    let d = domain(7);
    let a = sealer(4, 2).seal(&d, &random_bytes(100_000, 1)).unwrap();
    let b = sealer(4, 2).seal(&d, &random_bytes(100_000, 2)).unwrap();
    let forged: Vec<Vec<u8>> = a
        .shards()
        .iter()
        .map(|s| {
            let mut h = ShardHeader::parse(s).unwrap();
            h.chunk_id = b.id();
            let body = &s[shard::HEADER_LEN..];
            let mut out = h.encode(body).to_vec();
            out.extend_from_slice(body);
            out
        })
        .collect();
    assert!(
        forged.iter().all(|s| shard::verify(s).is_ok()),
        "checksums fixed up"
    );
    let err = Opener::new()
        .unwrap()
        .open(&d, &b.id(), &forged)
        .unwrap_err();
    assert_eq!(err, CodecError::AuthenticationFailed);
}

#[test]
fn invalid_erasure_parameters_are_rejected() {
    for (k, m) in [(0, 0), (0, 2), (60, 5), (65, 0), (1, 64)] {
        assert!(
            matches!(
                ErasureParams::new(k, m),
                Err(CodecError::InvalidErasure { .. })
            ),
            "({k},{m})"
        );
    }
    for (k, m) in [(1, 0), (32, 0), (16, 16), (1, 63), (40, 24)] {
        ErasureParams::new(k, m).unwrap();
    }
}

#[test]
fn oversize_zstd_level_is_rejected() {
    let cfg = SealConfig {
        erasure: ErasureParams::new(4, 2).unwrap(),
        zstd_level: 99,
    };
    assert!(matches!(
        Sealer::new(cfg),
        Err(CodecError::InvalidCompressionLevel(99))
    ));
}

#[test]
fn header_errors_are_typed() {
    let d = domain(9);
    let sealed = sealer(4, 2).seal(&d, &random_bytes(10_000, 1)).unwrap();
    let good = sealed.shard(0);

    let mut v = good.clone();
    v[4] = 2;
    assert_eq!(
        shard::verify(&v).unwrap_err(),
        CodecError::UnsupportedVersion(2)
    );
    let mut v = good.clone();
    v[0] = b'X';
    assert_eq!(
        shard::verify(&v).unwrap_err(),
        CodecError::BadHeader("bad magic")
    );
    assert!(matches!(
        shard::verify(&good[..50]),
        Err(CodecError::BadHeader(_))
    ));
    assert_eq!(
        shard::verify(&good[..good.len() - 1]).unwrap_err(),
        CodecError::CorruptShard {
            index: 0,
            reason: "truncated"
        }
    );
    let mut v = good.clone();
    let last = v.len() - 1;
    v[last] ^= 1;
    assert_eq!(
        shard::verify(&v).unwrap_err(),
        CodecError::CorruptShard {
            index: 0,
            reason: "checksum mismatch"
        }
    );
    let h = ShardHeader::parse(&good).unwrap();
    assert_eq!(h.index, 0);
    assert_eq!(h.params, ErasureParams::new(4, 2).unwrap());
    assert_eq!(h.chunk_id, sealed.id());
}

#[test]
fn checksum_field_damage_is_harmless_but_visible() {
    // A flipped bit in the stored checksum leaves header fields and body
    // intact: the AEAD authenticates the data, so the chunk opens, and the
    // scrubber's `shard::verify` still flags the shard for rewriting.
    let d = domain(14);
    let data = random_bytes(70_000, 4);
    let sealed = sealer(4, 2).seal(&d, &data).unwrap();
    let mut shards = sealed.shards();
    for s in shards.iter_mut() {
        s[100] ^= 4;
        assert!(shard::verify(s).is_err());
    }
    let (plain, _) = Opener::new()
        .unwrap()
        .open(&d, &sealed.id(), &shards)
        .unwrap();
    assert_eq!(plain, data);
    // A rebuild has no key, so it must not trust such shards.
    let err = Rebuilder::new()
        .rebuild(&sealed.id(), &shards, &[0])
        .unwrap_err();
    assert_eq!(
        err,
        CodecError::TooFewShards {
            valid: 0,
            needed: 1
        }
    );
}

/// Corrupt shard `i` of `shards` in one of the ways a farm can: flip a byte
/// (header or body), truncate, or relabel the index (with or without a
/// recomputed checksum, the latter being what a malicious node would do).
fn damage(shard: &mut Vec<u8>, how: u8, at: usize, k_plus_m: usize) {
    // With a single shard there is no other index to relabel it to.
    let how = if k_plus_m == 1 && matches!(how % 5, 2 | 3) {
        0
    } else {
        how
    };
    match how % 5 {
        0 => {
            // Any byte but the stored checksum itself, whose damage leaves
            // the data intact (see checksum_field_damage_is_harmless).
            let i = at % shard.len();
            let i = if (80..112).contains(&i) { i + 32 } else { i };
            shard[i] ^= 1 << (at % 8);
        }
        1 => {
            let keep = at % shard.len();
            shard.truncate(keep);
        }
        2 => {
            // Swapped index, checksum left as it was.
            shard[11] = ((shard[11] as usize + 1 + at % (k_plus_m - 1).max(1)) % k_plus_m) as u8;
        }
        3 => {
            // Swapped index with a valid checksum: only the AEAD can tell.
            let mut h = ShardHeader::parse(shard).unwrap();
            h.index = ((h.index as usize + 1 + at % (k_plus_m - 1).max(1)) % k_plus_m) as u8;
            let body = shard[h.header_len..].to_vec();
            let header = h.encode(&body);
            shard[..header.len()].copy_from_slice(&header);
        }
        _ => {
            // Flipped body byte with a recomputed checksum.
            let mut h = ShardHeader::parse(shard).unwrap();
            let n = shard.len() - h.header_len;
            shard[h.header_len + at % n] ^= 0x80;
            let body = shard[h.header_len..].to_vec();
            let header = h.encode(&body);
            shard[..header.len()].copy_from_slice(&header);
        }
    }
}

fn grid() -> impl Strategy<Value = (usize, usize)> {
    prop::sample::select(GRID.to_vec())
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    // Sizes from 0 to 6 MiB, weighted towards the edges where bugs live.
    let size = prop_oneof![
        4 => 0usize..200,
        4 => 200usize..70_000,
        2 => 70_000usize..(1 << 20),
        1 => (1usize << 20)..(6 << 20),
    ];
    (size, any::<u64>(), any::<bool>()).prop_map(|(len, seed, text)| {
        if text {
            text_bytes(len, seed)
        } else {
            random_bytes(len, seed)
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_from_any_k(data in payload(), (k, m) in grid(), pick in any::<u64>()) {
        let d = domain(10);
        let sealed = sealer(k, m).seal(&d, &data).unwrap();
        prop_assert_eq!(sealed.shard_count(), k + m);
        let shards = sealed.shards();
        for s in &shards {
            prop_assert_eq!(s.len(), shards[0].len());
            shard::verify(s).unwrap();
        }
        prop_assert_eq!(&open_all(&d, &sealed, &shards), &data);

        // A pseudo-random k-subset, in shuffled order.
        let mut order: Vec<usize> = (0..k + m).collect();
        let mut x = pick;
        for i in (1..order.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        let chosen: Vec<&Vec<u8>> = order[..k].iter().map(|&i| &shards[i]).collect();
        let (plain, _) = Opener::new().unwrap().open(&d, &sealed.id(), &chosen).unwrap();
        prop_assert_eq!(&plain, &data);
    }

    #[test]
    fn up_to_m_damaged_shards_are_detected_and_survived(
        data in payload(),
        (k, m) in grid().prop_filter("needs parity", |(_, m)| *m > 0),
        damaged in 1usize..=4,
        how in any::<u8>(),
        at in any::<usize>(),
    ) {
        let d = domain(11);
        let sealed = sealer(k, m).seal(&d, &data).unwrap();
        let mut shards = sealed.shards();
        let damaged = damaged.min(m);
        // Damage data shards first: the ones the reader would pick.
        for (n, s) in shards.iter_mut().take(damaged).enumerate() {
            damage(s, how.wrapping_add(n as u8), at.wrapping_add(n * 7919), k + m);
        }
        let (plain, report) = Opener::new().unwrap().open(&d, &sealed.id(), &shards).unwrap();
        prop_assert_eq!(&plain, &data);

        // A relabelled shard that is byte-identical to the genuine shard of
        // its new index (all-zero padding shards of a tiny chunk, or the
        // parity copies of k = 1) is not damage at all.
        let originals = sealed.shards();
        let really_damaged: Vec<usize> =
            (0..damaged).filter(|&p| !originals.contains(&shards[p])).collect();
        // The opener only hashes the shards it needs, so it reports a subset
        // of the damaged ones and never an intact one.
        for r in &report.rejected {
            prop_assert!(really_damaged.contains(&r.position), "false alarm: {:?}", report);
        }
        // Every damaged shard is caught when it is read: by its checksum, or,
        // when a dishonest node recomputed the checksum, by the AEAD and the
        // search that follows it.
        for &p in &really_damaged {
            if shard::verify(&shards[p]).is_err() {
                continue;
            }
            let forged = ShardHeader::parse(&shards[p]).unwrap();
            let claimed = forged.index as usize;
            let mut set = vec![shards[p].clone()];
            set.extend((0..k + m).filter(|&i| i != claimed).map(|i| originals[i].clone()));
            let (plain, report) = Opener::new().unwrap().open(&d, &sealed.id(), &set).unwrap();
            prop_assert_eq!(&plain, &data);
            if claimed < k {
                prop_assert_eq!(
                    report.rejected.iter().map(|r| r.position).collect::<Vec<_>>(),
                    vec![0],
                    "forged shard not named: {:?}", report
                );
            }
        }
    }

    #[test]
    fn m_plus_one_damaged_shards_report_the_shortage(
        data in payload(),
        (k, m) in grid(),
        how in 0u8..2,
        at in any::<usize>(),
    ) {
        let d = domain(12);
        let sealed = sealer(k, m).seal(&d, &data).unwrap();
        let mut shards = sealed.shards();
        for (n, s) in shards.iter_mut().take(m + 1).enumerate() {
            // Flip or truncate. (A relabelled shard can be byte-identical in
            // content to the one it claims to be: k = 1 parity is a copy and
            // tiny chunks have all-zero padding shards; such a shard is not
            // lost, and the up-to-m test covers relabelling.)
            damage(s, how, at.wrapping_add(n), k + m);
        }
        let err = Opener::new()
            .unwrap()
            .open(&d, &sealed.id(), &shards)
            .map(|(plain, report)| (plain.len(), report))
            .unwrap_err();
        if k == 1 {
            // Every shard is damaged: `needed` can only come from a damaged
            // header, so only the count of valid shards is knowable.
            prop_assert!(matches!(err, CodecError::TooFewShards { valid: 0, .. }), "{:?}", err);
        } else {
            prop_assert_eq!(err, CodecError::TooFewShards { valid: k - 1, needed: k });
        }
    }

    #[test]
    fn rebuilt_shards_are_byte_identical(
        data in payload(),
        (k, m) in grid(),
        lost_mask in any::<u64>(),
    ) {
        let sealed = sealer(k, m).seal(&domain(13), &data).unwrap();
        let shards = sealed.shards();
        // Lose up to m shards, chosen by the mask.
        let lost: Vec<usize> = (0..k + m).filter(|i| lost_mask >> i & 1 == 1).take(m).collect();
        let kept: Vec<&Vec<u8>> =
            (0..k + m).filter(|i| !lost.contains(i)).map(|i| &shards[i]).collect();
        let (rebuilt, _) = Rebuilder::new().rebuild(&sealed.id(), &kept, &lost).unwrap();
        for (shard, &i) in rebuilt.iter().zip(&lost) {
            prop_assert_eq!(shard, &shards[i], "shard {}", i);
        }
    }

    /// Rebuilding against the checksums the lost shards were written with:
    /// the inputs are not hashed, yet a byte changed anywhere in any input
    /// never yields a wrong shard. A changed body byte is always caught;
    /// a changed header byte either is caught or did not matter (the
    /// rebuilt shards are then byte-identical).
    #[test]
    fn rebuild_expecting_never_returns_a_wrong_shard(
        data in payload(),
        (k, m) in grid(),
        lost_mask in any::<u64>(),
        victim in any::<usize>(),
        at in any::<usize>(),
        flip in 1u8..=255,
        in_body in any::<bool>(),
    ) {
        prop_assume!(m > 0);
        let sealed = sealer(k, m).seal(&domain(17), &data).unwrap();
        let shards = sealed.shards();
        let mut lost: Vec<usize> =
            (0..k + m).filter(|i| lost_mask >> i & 1 == 1).take(m).collect();
        if lost.is_empty() {
            lost.push(lost_mask as usize % (k + m));
        }
        let expected: Vec<(usize, [u8; 32])> = lost
            .iter()
            .map(|&i| (i, ShardHeader::parse(&shards[i]).unwrap().checksum))
            .collect();
        // Exactly k inputs, so every one of them goes into the rebuild.
        let mut kept: Vec<Vec<u8>> = (0..k + m)
            .filter(|i| !lost.contains(i))
            .take(k)
            .map(|i| shards[i].clone())
            .collect();
        let mut rebuilder = Rebuilder::new();
        let mut out = Vec::new();
        rebuilder
            .rebuild_expecting(&sealed.id(), &kept, &expected, |_, h, b| {
                out.push([h, b].concat());
                Ok::<(), CodecError>(())
            })
            .unwrap();
        for (shard, &i) in out.iter().zip(&lost) {
            prop_assert_eq!(shard, &shards[i], "shard {}", i);
        }

        let v = victim % k;
        let len = kept[v].len();
        let pos = if in_body && len > shard::HEADER_LEN {
            shard::HEADER_LEN + at % (len - shard::HEADER_LEN)
        } else {
            at % shard::HEADER_LEN.min(len)
        };
        kept[v][pos] ^= flip;
        let mut out = Vec::new();
        let result = rebuilder.rebuild_expecting(&sealed.id(), &kept, &expected, |_, h, b| {
            out.push([h, b].concat());
            Ok::<(), CodecError>(())
        });
        if pos >= shard::HEADER_LEN {
            prop_assert!(result.is_err(), "body byte {} of input {} changed, rebuild passed", pos, v);
        }
        if result.is_ok() {
            for (shard, &i) in out.iter().zip(&lost) {
                prop_assert_eq!(shard, &shards[i], "shard {} after header byte {} changed", i, pos);
            }
        }
    }

    /// One rebuilder and one opener serve chunk after chunk (the node keeps
    /// one per thread): whatever the last chunk left in their buffers, the
    /// next rebuild of a data or parity shard, alone or with others, is
    /// byte-identical and the next open returns the plaintext.
    #[test]
    fn reused_rebuilder_and_opener_carry_nothing_over(
        sizes in prop::collection::vec(0usize..300_000, 2..5),
        lost_masks in prop::collection::vec(any::<u64>(), 4),
        wanted_pick in any::<u64>(),
    ) {
        let (k, m) = (4, 2);
        let mut rebuilder = Rebuilder::new();
        let mut opener = Opener::new().unwrap();
        for (round, &len) in sizes.iter().enumerate() {
            let data = random_bytes(len, 100 + round as u64);
            let sealed = sealer(k, m).seal(&domain(16), &data).unwrap();
            let shards = sealed.shards();
            let mask = lost_masks[round % lost_masks.len()];
            let lost: Vec<usize> = (0..k + m).filter(|i| mask >> i & 1 == 1).take(m).collect();
            let kept: Vec<&Vec<u8>> =
                (0..k + m).filter(|i| !lost.contains(i)).map(|i| &shards[i]).collect();
            // Rebuild the lost shards one at a time and all together.
            for (j, &i) in lost.iter().enumerate() {
                if wanted_pick >> (round * 8 + j) & 1 == 1 {
                    let (one, _) = rebuilder.rebuild(&sealed.id(), &kept, &[i]).unwrap();
                    prop_assert_eq!(&one[0], &shards[i], "round {} shard {}", round, i);
                }
            }
            let (all, _) = rebuilder.rebuild(&sealed.id(), &kept, &lost).unwrap();
            for (shard, &i) in all.iter().zip(&lost) {
                prop_assert_eq!(shard, &shards[i], "round {} shard {}", round, i);
            }
            let (plain, _) = opener.open(&domain(16), &sealed.id(), &kept).unwrap();
            prop_assert_eq!(plain, data);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The streaming verifier agrees with `shard::verify` on whole, cut and
    /// damaged shards, however the bytes are split.
    #[test]
    fn stream_verifier_matches_verify(
        len in 0usize..100_000,
        cut in prop::collection::vec(1usize..5000, 1..20),
        damage_at in prop::option::of(any::<usize>()),
        truncate in any::<bool>(),
    ) {
        let sealed = sealer(4, 2).seal(&domain(15), &random_bytes(len, len as u64)).unwrap();
        let mut s = sealed.shard(1);
        if let Some(at) = damage_at {
            let i = at % s.len();
            s[i] ^= 0x10;
        }
        if truncate {
            s.pop();
        }
        let mut v = shard::StreamVerifier::new();
        let mut pos = 0;
        let mut sizes = cut.iter().cycle();
        let mut early = None;
        while pos < s.len() {
            let n = (*sizes.next().unwrap()).min(s.len() - pos);
            if let Err(e) = v.update(&s[pos..pos + n]) {
                early = Some(e);
                break;
            }
            pos += n;
        }
        let streamed = match early {
            Some(e) => Err(e),
            None => v.finish(),
        };
        let whole = shard::verify(&s).map(|v| v.header);
        prop_assert_eq!(streamed.is_ok(), whole.is_ok(), "{:?} vs {:?}", streamed, whole);
        if let (Ok(a), Ok(b)) = (streamed, whole) {
            prop_assert_eq!(a, b);
        }
    }
}

#[test]
fn batches_on_two_threads_match_one_at_a_time() {
    use codec::parallel::{open_batch, seal_batch, OpenJob, SealJob};
    let d = domain(16);
    let inputs: Vec<Vec<u8>> = (0..7)
        .map(|i| random_bytes(10_000 + i * 3000, i as u64))
        .collect();
    let jobs: Vec<SealJob<'_>> = inputs
        .iter()
        .enumerate()
        .map(|(i, data)| SealJob {
            id: (i % 2 == 0).then(|| d.chunk_id(data)),
            data,
        })
        .collect();
    let mut sealers = vec![sealer(4, 2), sealer(4, 2)];
    let mut outs = vec![codec::SealedChunk::default(); inputs.len()];
    for r in seal_batch(&mut sealers, &d, &jobs, &mut outs) {
        r.unwrap();
    }
    for (data, sealed) in inputs.iter().zip(&outs) {
        assert_eq!(
            sealed.shards(),
            sealer(4, 2).seal(&d, data).unwrap().shards()
        );
    }
    let shards: Vec<Vec<Vec<u8>>> = outs.iter().map(|s| s.shards()[1..].to_vec()).collect();
    let open_jobs: Vec<OpenJob<'_, Vec<u8>>> = outs
        .iter()
        .zip(&shards)
        .map(|(s, sh)| OpenJob {
            id: s.id(),
            shards: sh,
        })
        .collect();
    let mut openers = vec![Opener::new().unwrap(), Opener::new().unwrap()];
    let mut plains = vec![Vec::new(); inputs.len()];
    for r in open_batch(&mut openers, &d, &open_jobs, &mut plains) {
        assert_eq!(r.unwrap().reconstructed, vec![0]);
    }
    assert_eq!(plains, inputs);
}
