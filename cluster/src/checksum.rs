//! Whole-object digests computed while an object streams in: the MD5 that
//! S3 ETags are made of, and the additional checksums S3 clients may ask
//! for (CRC32, CRC32C, CRC64NVME, SHA1, SHA256), in S3's base64 form.

use base64::Engine;
use md5::{Digest, Md5};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [ChecksumAlgorithm; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// S3's name ("CRC32C", ...), also the key in stored checksum maps.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
    }

    /// Digest of `data` in one call (composite checksums of parts).
    pub fn digest(&self, data: &[u8]) -> Vec<u8> {
        let mut s = State::new(*self);
        s.update(data);
        s.finish()
    }
}

enum State {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Crc64(crc64fast_nvme::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl State {
    fn new(a: ChecksumAlgorithm) -> Self {
        match a {
            ChecksumAlgorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Crc32c => State::Crc32c(0),
            ChecksumAlgorithm::Crc64Nvme => State::Crc64(crc64fast_nvme::Digest::new()),
            ChecksumAlgorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            State::Crc32(h) => h.update(data),
            State::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            State::Crc64(h) => h.write(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            State::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            State::Crc32c(c) => c.to_be_bytes().to_vec(),
            State::Crc64(h) => h.sum64().to_be_bytes().to_vec(),
            State::Sha1(h) => h.finalize().to_vec(),
            State::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

/// MD5 plus the requested checksums over one stream.
pub struct Digests {
    md5: Md5,
    states: Vec<(ChecksumAlgorithm, State)>,
}

/// What [`Digests`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestResult {
    pub md5: [u8; 16],
    /// Algorithm name → base64 digest.
    pub checksums: BTreeMap<String, String>,
}

impl Digests {
    pub fn new(algorithms: &[ChecksumAlgorithm]) -> Self {
        let mut algs = algorithms.to_vec();
        algs.sort_unstable();
        algs.dedup();
        Self {
            md5: Md5::new(),
            states: algs.into_iter().map(|a| (a, State::new(a))).collect(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        for (_, s) in &mut self.states {
            s.update(data);
        }
    }

    pub fn finish(self) -> DigestResult {
        DigestResult {
            md5: self.md5.finalize().into(),
            checksums: self
                .states
                .into_iter()
                .map(|(a, s)| (a.name().to_string(), b64(&s.finish())))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // "123456789" check values from the CRC catalogue and FIPS vectors.
        let mut d = Digests::new(&ChecksumAlgorithm::ALL);
        d.update(b"1234");
        d.update(b"56789");
        let r = d.finish();
        let hexed = |name: &str| hex::encode(unb64(&r.checksums[name]).unwrap());
        assert_eq!(hexed("CRC32"), "cbf43926");
        assert_eq!(hexed("CRC32C"), "e3069283");
        assert_eq!(hexed("CRC64NVME"), "ae8b14860a799888");
        assert_eq!(hexed("SHA1"), "f7c3bc1d808e04732adf679965ccc34ca7ae3441");
        assert_eq!(
            hexed("SHA256"),
            "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"
        );
        assert_eq!(hex::encode(r.md5), "25f9e794323b453885f5181f1b624d0b");
        assert_eq!(
            ChecksumAlgorithm::from_name("crc64nvme"),
            Some(ChecksumAlgorithm::Crc64Nvme)
        );
    }
}
