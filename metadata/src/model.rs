//! The data model. Every struct here is a stored record (see [`Record`]);
//! field numbers are part of the on-disk format and never change meaning.

use crate::record::{Record, RecordError};
use std::collections::BTreeMap;

/// Length of chunk ids (keyed BLAKE3, see the codec).
pub const CHUNK_ID_LEN: usize = 32;
/// Length of version ids: 8 bytes hybrid-logical-clock time, 8 bytes that
/// make ids from different gateways distinct. Byte order sorts by time.
pub const VERSION_ID_LEN: usize = 16;
/// Length of bucket ids (random, so a deleted and re-created bucket is a
/// different bucket for placement and key domains).
pub const BUCKET_ID_LEN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum VersioningState {
    /// Never enabled: a PUT replaces the single "null" version.
    Unversioned = 0,
    Enabled = 1,
    /// Was enabled: old versions stay, new writes replace the "null" one.
    Suspended = 2,
}

/// Reed-Solomon shape: `data` + `parity` shards per chunk.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct ErasureSpec {
    #[prost(uint32, tag = "1")]
    pub data: u32,
    #[prost(uint32, tag = "2")]
    pub parity: u32,
}

impl ErasureSpec {
    pub fn new(data: u32, parity: u32) -> Self {
        Self { data, parity }
    }

    pub fn total(&self) -> usize {
        (self.data + self.parity) as usize
    }

    fn validate(&self) -> Result<(), RecordError> {
        if self.data == 0 || self.data as usize + self.parity as usize > codec::MAX_SHARDS {
            return Err(RecordError::Invalid("erasure shape out of range"));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bucket {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// Access key id of the owner.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, tag = "4")]
    pub created_ms: u64,
    #[prost(enumeration = "VersioningState", tag = "5")]
    pub versioning: i32,
    /// None: follow the cluster default.
    #[prost(message, optional, tag = "6")]
    pub erasure: Option<ErasureSpec>,
    /// Replicas keep the record with the highest revision (a hybrid
    /// logical clock reading), so a replica that missed a change cannot
    /// bring back an old state in a quorum read.
    #[prost(uint64, tag = "7")]
    pub revision: u64,
    /// A deleted bucket's tombstone: replicas must remember the delete for
    /// the same reason.
    #[prost(bool, tag = "8")]
    pub deleted: bool,
    /// Anonymous reads allowed (set explicitly by the owner).
    #[prost(bool, tag = "9")]
    pub public: bool,
}

impl Record for Bucket {
    fn validate(&self) -> Result<(), RecordError> {
        if self.name.is_empty() {
            return Err(RecordError::Invalid("bucket without a name"));
        }
        if self.id.len() != BUCKET_ID_LEN {
            return Err(RecordError::Invalid("bucket id length"));
        }
        if VersioningState::try_from(self.versioning).is_err() {
            return Err(RecordError::Invalid("unknown versioning state"));
        }
        self.erasure.as_ref().map_or(Ok(()), ErasureSpec::validate)
    }
}

/// One chunk of an object: which bytes of the object it holds and which
/// sealed chunk they are.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChunkRef {
    #[prost(bytes = "vec", tag = "1")]
    pub id: Vec<u8>,
    /// Offset of the chunk's first byte in the object.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    /// Plaintext length.
    #[prost(uint64, tag = "3")]
    pub len: u64,
    /// Erasure shape the chunk was sealed with (a bucket's shape can change;
    /// its old chunks keep theirs).
    #[prost(message, optional, tag = "4")]
    pub erasure: Option<ErasureSpec>,
    /// Length of each shard body, for capacity accounting and ranged reads.
    #[prost(uint32, tag = "5")]
    pub shard_len: u32,
}

impl ChunkRef {
    fn validate(&self) -> Result<(), RecordError> {
        if self.id.len() != CHUNK_ID_LEN {
            return Err(RecordError::Invalid("chunk id length"));
        }
        match &self.erasure {
            Some(e) => e.validate(),
            None => Err(RecordError::Invalid("chunk without erasure shape")),
        }
    }
}

fn validate_chunks(chunks: &[ChunkRef], size: u64) -> Result<(), RecordError> {
    let mut next = 0u64;
    for c in chunks {
        c.validate()?;
        if c.offset != next {
            return Err(RecordError::Invalid("chunks not contiguous"));
        }
        next = c
            .offset
            .checked_add(c.len)
            .ok_or(RecordError::Invalid("chunk offset overflow"))?;
    }
    if !chunks.is_empty() && next != size {
        return Err(RecordError::Invalid("chunks do not cover the object"));
    }
    Ok(())
}

/// One version of an object: its manifest, or a delete marker.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ObjectVersion {
    #[prost(string, tag = "1")]
    pub bucket: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(bytes = "vec", tag = "3")]
    pub version_id: Vec<u8>,
    /// S3's "null" version (unversioned and suspended buckets).
    #[prost(bool, tag = "4")]
    pub null_version: bool,
    #[prost(bool, tag = "5")]
    pub delete_marker: bool,
    #[prost(uint64, tag = "6")]
    pub size: u64,
    #[prost(string, tag = "7")]
    pub etag: String,
    #[prost(string, tag = "8")]
    pub content_type: String,
    #[prost(btree_map = "string, string", tag = "9")]
    pub user_metadata: BTreeMap<String, String>,
    /// Ordered, contiguous, covering `size` bytes; empty when inline.
    #[prost(message, repeated, tag = "10")]
    pub chunks: Vec<ChunkRef>,
    /// Small objects live here instead of in chunks, sealed by the gateway
    /// (nodes see ciphertext only).
    #[prost(bytes = "vec", tag = "11")]
    pub inline_data: Vec<u8>,
    #[prost(uint64, tag = "12")]
    pub created_ms: u64,
    #[prost(string, tag = "13")]
    pub storage_class: String,
    /// Checksums the client asked for, by algorithm ("CRC32C" → base64).
    #[prost(btree_map = "string, string", tag = "14")]
    pub checksums: BTreeMap<String, String>,
    /// 0 for a live version; a purged version's tombstone carries the
    /// clock reading of the purge, so replicas that missed it lose to it.
    #[prost(uint64, tag = "15")]
    pub revision: u64,
    /// This version was deleted: the record is a tombstone (no content).
    #[prost(bool, tag = "16")]
    pub purged: bool,
    /// Sizes of the parts of a multipart object, in order (empty for a
    /// single-part object): reads by part number need the boundaries.
    #[prost(uint64, repeated, tag = "17")]
    pub part_sizes: Vec<u64>,
    /// Set when the chunks are sealed with a customer key (SSE-C): the
    /// base64 MD5 of that key, to refuse a read with a different one.
    #[prost(string, tag = "18")]
    pub sse_customer_key_md5: String,
    /// Object tags (S3 tagging).
    #[prost(btree_map = "string, string", tag = "19")]
    pub tags: BTreeMap<String, String>,
}

impl Record for ObjectVersion {
    fn validate(&self) -> Result<(), RecordError> {
        if self.version_id.len() != VERSION_ID_LEN {
            return Err(RecordError::Invalid("version id length"));
        }
        if self.purged && (!self.chunks.is_empty() || !self.inline_data.is_empty()) {
            return Err(RecordError::Invalid("tombstone with content"));
        }
        if self.delete_marker && (self.size != 0 || !self.chunks.is_empty()) {
            return Err(RecordError::Invalid("delete marker with content"));
        }
        if !self.chunks.is_empty() && !self.inline_data.is_empty() {
            return Err(RecordError::Invalid("both chunks and inline data"));
        }
        validate_chunks(&self.chunks, self.size)
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MultipartUpload {
    #[prost(string, tag = "1")]
    pub bucket: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub upload_id: String,
    #[prost(string, tag = "4")]
    pub owner: String,
    #[prost(uint64, tag = "5")]
    pub initiated_ms: u64,
    #[prost(string, tag = "6")]
    pub content_type: String,
    #[prost(btree_map = "string, string", tag = "7")]
    pub user_metadata: BTreeMap<String, String>,
    #[prost(string, tag = "8")]
    pub storage_class: String,
    /// As `Bucket::revision`.
    #[prost(uint64, tag = "9")]
    pub revision: u64,
    /// Completed or aborted: a tombstone.
    #[prost(bool, tag = "10")]
    pub closed: bool,
    /// As `ObjectVersion::sse_customer_key_md5`, for every part.
    #[prost(string, tag = "11")]
    pub sse_customer_key_md5: String,
    /// The checksum algorithm the client chose at initiation ("" if none).
    #[prost(string, tag = "12")]
    pub checksum_algorithm: String,
    /// Erasure shape the parts are sealed with.
    #[prost(message, optional, tag = "13")]
    pub erasure: Option<ErasureSpec>,
    /// Set when completed: the object's ETag, version id and size, so a
    /// repeated CompleteMultipartUpload gets the same answer.
    #[prost(string, tag = "14")]
    pub completed_etag: String,
    #[prost(bytes = "vec", tag = "15")]
    pub completed_version: Vec<u8>,
    #[prost(uint64, tag = "16")]
    pub completed_size: u64,
    #[prost(btree_map = "string, string", tag = "17")]
    pub completed_checksums: BTreeMap<String, String>,
}

impl Record for MultipartUpload {
    fn validate(&self) -> Result<(), RecordError> {
        if self.upload_id.is_empty() {
            return Err(RecordError::Invalid("upload without id"));
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Part {
    #[prost(string, tag = "1")]
    pub upload_id: String,
    /// 1..=10000, as S3.
    #[prost(uint32, tag = "2")]
    pub part_number: u32,
    #[prost(uint64, tag = "3")]
    pub size: u64,
    #[prost(string, tag = "4")]
    pub etag: String,
    #[prost(message, repeated, tag = "5")]
    pub chunks: Vec<ChunkRef>,
    #[prost(uint64, tag = "6")]
    pub last_modified_ms: u64,
    #[prost(btree_map = "string, string", tag = "7")]
    pub checksums: BTreeMap<String, String>,
    /// As `Bucket::revision` (a part number uploaded again replaces it).
    #[prost(uint64, tag = "8")]
    pub revision: u64,
}

impl Record for Part {
    fn validate(&self) -> Result<(), RecordError> {
        if !(1..=10_000).contains(&self.part_number) {
            return Err(RecordError::Invalid("part number out of range"));
        }
        validate_chunks(&self.chunks, self.size)
    }
}

/// Who refers to a chunk: one object version, or one multipart part.
/// Every node holding a shard of the chunk holds this, so it names the
/// object only by its keyed hash (the same one its version records are
/// keyed by), never by its key. Field 2 (the key in clear) is retired.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Referrer {
    #[prost(bytes = "vec", tag = "1")]
    pub bucket_id: Vec<u8>,
    /// Version id, or the upload id's bytes for a part.
    #[prost(bytes = "vec", tag = "3")]
    pub version: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub part_number: u32,
    /// The object key's keyed hash (`sealed::RecordKeys::name_hash`).
    #[prost(bytes = "vec", tag = "5")]
    pub key_hash: Vec<u8>,
}

/// Kept on each of a chunk's placement nodes, one per referrer, so adding
/// and removing references is idempotent and needs no read-modify-write;
/// it is also how a node knows which shards it should hold.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkReference {
    #[prost(bytes = "vec", tag = "1")]
    pub chunk_id: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub erasure: Option<ErasureSpec>,
    #[prost(uint32, tag = "3")]
    pub shard_len: u32,
    #[prost(message, optional, tag = "4")]
    pub referrer: Option<Referrer>,
    #[prost(uint64, tag = "5")]
    pub created_ms: u64,
    /// Each shard's checksum (the BLAKE3 its header carries), by index, as
    /// the writer sealed it. Shard checksums are unkeyed so nodes can verify
    /// without keys; these let a node doing a keyless rebuild also refuse a
    /// self-consistent shard a dishonest peer forged. Empty when unknown.
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub shard_hashes: Vec<Vec<u8>>,
    /// The owner's signature over the chunk id, erasure, referrer and
    /// creation time (`crate::signing`): a node takes a reference from a
    /// peer only with it, so no farm can make one up.
    #[prost(bytes = "vec", tag = "7")]
    pub signature: Vec<u8>,
    /// The owner's signature over the chunk id, erasure, shard length and
    /// shard hashes; travels with the hashes when a node copies them to
    /// another reference of the chunk.
    #[prost(bytes = "vec", tag = "8")]
    pub hashes_signature: Vec<u8>,
}

impl ChunkReference {
    /// The record's key in the chunk reference table: the chunk id first,
    /// so one chunk's references are one contiguous range, then the
    /// referrer, length-prefixed so no two referrers share a key.
    pub fn table_key(chunk_id: &[u8], referrer: &Referrer) -> Vec<u8> {
        let mut k = Vec::with_capacity(
            chunk_id.len()
                + 10
                + referrer.bucket_id.len()
                + referrer.version.len()
                + referrer.key_hash.len(),
        );
        k.extend_from_slice(chunk_id);
        for part in [&referrer.bucket_id, &referrer.version] {
            k.push(part.len().min(255) as u8);
            k.extend_from_slice(part);
        }
        k.extend_from_slice(&referrer.part_number.to_be_bytes());
        k.extend_from_slice(&referrer.key_hash);
        k
    }

    /// This record's key; `None` if it has no referrer.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.referrer
            .as_ref()
            .map(|r| Self::table_key(&self.chunk_id, r))
    }
}

impl Record for ChunkReference {
    fn validate(&self) -> Result<(), RecordError> {
        if self.chunk_id.len() != CHUNK_ID_LEN {
            return Err(RecordError::Invalid("chunk id length"));
        }
        let Some(referrer) = &self.referrer else {
            return Err(RecordError::Invalid("reference without referrer"));
        };
        referrer.validate()?;
        let erasure = self
            .erasure
            .as_ref()
            .ok_or(RecordError::Invalid("chunk without erasure shape"))?;
        erasure.validate()?;
        if !self.shard_hashes.is_empty()
            && (self.shard_hashes.len() != erasure.total()
                || self.shard_hashes.iter().any(|h| h.len() != 32))
        {
            return Err(RecordError::Invalid("shard hashes do not match the shape"));
        }
        Ok(())
    }
}

impl Referrer {
    fn validate(&self) -> Result<(), RecordError> {
        // Ids are fixed-size; bounding them keeps table keys unambiguous.
        if self.bucket_id.len() > 255 || self.version.len() > 255 {
            return Err(RecordError::Invalid("referrer id too long"));
        }
        if self.key_hash.len() != crate::sealed::NAME_HASH_LEN {
            return Err(RecordError::Invalid("referrer key hash length"));
        }
        Ok(())
    }
}

/// A gateway user's access key. The secret is sealed by gateways with a
/// key derived from the master key: nodes never see it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct User {
    #[prost(string, tag = "1")]
    pub access_key: String,
    /// AEAD-sealed secret key (nonce ‖ ciphertext ‖ tag).
    #[prost(bytes = "vec", tag = "2")]
    pub sealed_secret: Vec<u8>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint64, tag = "4")]
    pub created_ms: u64,
    /// As `Bucket::revision`.
    #[prost(uint64, tag = "5")]
    pub revision: u64,
    #[prost(bool, tag = "6")]
    pub deleted: bool,
    /// May manage users and every bucket.
    #[prost(bool, tag = "7")]
    pub admin: bool,
}

impl Record for User {
    fn validate(&self) -> Result<(), RecordError> {
        if self.access_key.is_empty() {
            return Err(RecordError::Invalid("user without an access key"));
        }
        Ok(())
    }
}

/// A WebDAV lock (RFC 4918), kept on the root replicas so that every
/// gateway honours it. Keyed by `path ‖ 0 ‖ token`; an unlock is a
/// tombstone (as users and buckets) so a lagging replica cannot bring the
/// lock back through read repair.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lock {
    /// The locked resource: `/bucket/key/...` without a trailing slash.
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub token: String,
    /// The access key that took it.
    #[prost(string, tag = "3")]
    pub principal: String,
    /// The client's `<D:owner>` element, serialised XML (may be empty).
    #[prost(bytes = "vec", tag = "4")]
    pub owner_xml: Vec<u8>,
    /// When it lapses (ms since the epoch).
    #[prost(uint64, tag = "5")]
    pub expires_ms: u64,
    /// The timeout the client was granted, in seconds.
    #[prost(uint64, tag = "6")]
    pub timeout_secs: u64,
    #[prost(bool, tag = "7")]
    pub shared: bool,
    /// Depth infinity (covers everything below `path`).
    #[prost(bool, tag = "8")]
    pub deep: bool,
    /// As `Bucket::revision`.
    #[prost(uint64, tag = "9")]
    pub revision: u64,
    #[prost(bool, tag = "10")]
    pub deleted: bool,
}

impl Record for Lock {
    fn validate(&self) -> Result<(), RecordError> {
        if self.token.is_empty() {
            return Err(RecordError::Invalid("lock without a token"));
        }
        Ok(())
    }
}

/// A program of a job: its argv and the objects fetched beside it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobProgram {
    #[prost(string, repeated, tag = "1")]
    pub argv: Vec<String>,
    /// (bucket, key) of each program file, flattened in pairs.
    #[prost(string, repeated, tag = "2")]
    pub files: Vec<String>,
}

/// A data-mining job, on the root replicas so that every gateway can
/// report it and take it over when the gateway driving it is lost. Only
/// the driver writes it (its lease is a duty lock record); a cancel from
/// elsewhere is a [`JobTaskRecord`] of its own.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobRecord {
    #[prost(string, tag = "1")]
    pub id: String,
    /// The access key that submitted it.
    #[prost(string, tag = "2")]
    pub owner: String,
    #[prost(bool, tag = "3")]
    pub admin: bool,
    #[prost(string, tag = "4")]
    pub bucket: String,
    #[prost(string, tag = "5")]
    pub prefix: String,
    #[prost(string, tag = "6")]
    pub out_bucket: String,
    #[prost(string, tag = "7")]
    pub out_prefix: String,
    #[prost(message, optional, tag = "8")]
    pub map: Option<JobProgram>,
    #[prost(message, optional, tag = "9")]
    pub reduce: Option<JobProgram>,
    #[prost(uint64, tag = "10")]
    pub timeout_secs: u64,
    #[prost(uint64, tag = "11")]
    pub cpu_secs: u64,
    #[prost(uint64, tag = "12")]
    pub memory_mb: u64,
    #[prost(string, tag = "13")]
    pub placement: String,
    #[prost(uint32, tag = "14")]
    pub max_attempts: u32,
    #[prost(uint32, tag = "15")]
    pub per_node: u32,
    #[prost(uint64, tag = "16")]
    pub created_ms: u64,
    #[prost(string, tag = "17")]
    pub phase: String,
    #[prost(string, tag = "18")]
    pub error: String,
    #[prost(uint64, tag = "19")]
    pub finished_ms: u64,
    /// Every input listed and its task recorded.
    #[prost(bool, tag = "20")]
    pub listed: bool,
    /// The last input key whose task is recorded: listing resumes after it.
    #[prost(string, tag = "21")]
    pub listed_after: String,
    #[prost(uint64, tag = "22")]
    pub retries: u64,
    /// Task counts as of the driver's last write (for listings; a job's
    /// status counts its task records).
    #[prost(uint64, repeated, tag = "23")]
    pub counts: Vec<u64>,
    /// As `Bucket::revision`.
    #[prost(uint64, tag = "24")]
    pub revision: u64,
    #[prost(bool, tag = "25")]
    pub deleted: bool,
}

impl Record for JobRecord {
    fn validate(&self) -> Result<(), RecordError> {
        if self.id.is_empty() {
            return Err(RecordError::Invalid("job without an id"));
        }
        Ok(())
    }
}

/// One task of a job (a map task, the reduce, or a cancel request),
/// keyed under its job's key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JobTaskRecord {
    /// The input object's key; the reduce's output key for the reduce.
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    #[prost(string, tag = "3")]
    pub phase: String,
    #[prost(string, tag = "4")]
    pub node: String,
    #[prost(uint32, tag = "5")]
    pub attempts: u32,
    #[prost(string, tag = "6")]
    pub outcome: String,
    /// The start of its stderr.
    #[prost(string, tag = "7")]
    pub stderr: String,
    /// Bytes read: own disk, own site, other sites, inline; then what the
    /// shard map planned: total, own-disk and own-site ceilings.
    #[prost(uint64, repeated, tag = "8")]
    pub bytes: Vec<u64>,
    /// A random node's expected own-disk and own-site bytes.
    #[prost(double, repeated, tag = "9")]
    pub random: Vec<f64>,
    #[prost(bool, tag = "10")]
    pub reduce: bool,
    #[prost(uint64, tag = "11")]
    pub revision: u64,
    #[prost(bool, tag = "12")]
    pub deleted: bool,
}

impl Record for JobTaskRecord {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NodeState {
    /// Serving and taking new shards.
    Up = 0,
    /// Serving reads; its shards are being moved elsewhere.
    Draining = 1,
    /// Unreachable past the down timeout: reads and new writes route
    /// around it, but its shards are not rebuilt elsewhere (it may be
    /// rebooting) except those of chunks left with no spare shard; they
    /// wait for it to come back or to be marked [`NodeState::Lost`].
    Down = 2,
    /// Gone for good; kept in the map so its id is never reused.
    Removed = 3,
    /// Failed storage audits: it could not prove holding shards placement
    /// gave it. Never placed on; its shards are rebuilt elsewhere as for a
    /// lost node, and liveness never marks it up again (only an operator
    /// acts on it: remove it, or re-add it under a new id once its farm is
    /// trusted again). Why is in [`Node::untrusted_reason`].
    Untrusted = 4,
    /// Unreachable past the lost delay: its shards are rebuilt elsewhere.
    /// Marked up again, like a down node, once it answers steadily.
    Lost = 5,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Node {
    /// Stable, unique, chosen at first start.
    #[prost(string, tag = "1")]
    pub id: String,
    /// host:port of its RPC listener.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// The farm it runs on: the failure domain placement spreads over.
    #[prost(string, tag = "3")]
    pub site: String,
    #[prost(uint64, tag = "4")]
    pub capacity_bytes: u64,
    #[prost(enumeration = "NodeState", tag = "5")]
    pub state: i32,
    /// Its identity: SHA-256 of its TLS certificate's SubjectPublicKeyInfo.
    /// Clients accept the node only with this key; empty means none is
    /// known, and no call is made to it.
    #[prost(bytes = "vec", tag = "6")]
    pub key: Vec<u8>,
    /// Why the node is [`NodeState::Untrusted`] (audit figures, never a
    /// farm's or owner's name); empty otherwise.
    #[prost(string, tag = "7")]
    pub untrusted_reason: String,
}

impl Node {
    /// Whether placement may name this node for new data.
    pub fn placeable(&self) -> bool {
        // An unknown state (a newer peer's) is not Up: never place on it.
        self.state == NodeState::Up as i32 && self.capacity_bytes > 0
    }
}

/// The cluster map: every node and its state, under an epoch that grows
/// with every change.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterMap {
    #[prost(uint64, tag = "1")]
    pub epoch: u64,
    #[prost(message, repeated, tag = "2")]
    pub nodes: Vec<Node>,
    /// The clients nodes accept besides each other (gateways, admin
    /// tools), by identity key.
    #[prost(message, repeated, tag = "3")]
    pub clients: Vec<ClientIdentity>,
    /// The owner's map-signing public key (Ed25519, 32 bytes): the first
    /// map a node takes pins it, and every later map must be signed by it
    /// or, for a liveness change only, by a majority of the nodes.
    #[prost(bytes = "vec", tag = "4")]
    pub owner_key: Vec<u8>,
    /// The owner's signature over this whole map (`grid::signed_map`).
    #[prost(bytes = "vec", tag = "5")]
    pub owner_signature: Vec<u8>,
    /// The owner's signature over the map's membership: the map with its
    /// epoch and every node's up/down state left out, so nodes can mark
    /// each other down and up without the owner, and nothing else.
    #[prost(bytes = "vec", tag = "6")]
    pub membership_signature: Vec<u8>,
    /// Nodes' signatures over this whole map, for a liveness change.
    #[prost(message, repeated, tag = "7")]
    pub votes: Vec<LivenessVote>,
}

/// One node's signature over a map that changes only who is up or down.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LivenessVote {
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The node's Ed25519 public key; its SubjectPublicKeyInfo hashes to
    /// the node's identity key in the map.
    #[prost(bytes = "vec", tag = "2")]
    pub public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

impl Record for LivenessVote {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ClientRole {
    Gateway = 0,
    Admin = 1,
}

/// A client the nodes of a map accept.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClientIdentity {
    /// For people: which gateway or tool this is.
    #[prost(string, tag = "1")]
    pub name: String,
    /// As [`Node::key`].
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(enumeration = "ClientRole", tag = "3")]
    pub role: i32,
}

/// Length of an identity key (a SHA-256).
pub const IDENTITY_KEY_LEN: usize = 32;

impl Record for ClusterMap {
    fn validate(&self) -> Result<(), RecordError> {
        let mut ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        ids.sort_unstable();
        if ids.iter().any(|id| id.is_empty()) {
            return Err(RecordError::Invalid("node without id"));
        }
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(RecordError::Invalid("duplicate node id"));
        }
        if self
            .nodes
            .iter()
            .any(|n| NodeState::try_from(n.state).is_err())
        {
            return Err(RecordError::Invalid("unknown node state"));
        }
        if self
            .nodes
            .iter()
            .any(|n| !n.key.is_empty() && n.key.len() != IDENTITY_KEY_LEN)
            || self.clients.iter().any(|c| c.key.len() != IDENTITY_KEY_LEN)
        {
            return Err(RecordError::Invalid("identity key length"));
        }
        Ok(())
    }
}
