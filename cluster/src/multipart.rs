//! Multipart uploads: parts are stored as chunks as they arrive (any
//! order, any part uploaded again replaces the earlier one), completion
//! writes one manifest over the chosen parts' chunks, with S3's rules for
//! order, ETags and minimum part sizes. Abandoned uploads are aborted
//! after a configurable age.

use crate::checksum::{self, ChecksumAlgorithm};
use crate::chunk_stream::{self, WriteCtx};
use crate::error::{Error, Result};
use crate::layout;
use crate::listing::FirstItems;
use crate::naming;
use crate::objects::{verify_digests, Conditions, PutResult};
use crate::secrets::CustomerKey;
use crate::store::BucketRef;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use grid::table::Table;
use md5::{Digest, Md5};
use metadata::model::{ChunkRef, MultipartUpload, ObjectVersion, Part, Referrer, VersioningState};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most parts in one upload (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct MultipartOptions {
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub storage_class: Option<String>,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    pub customer_key: Option<CustomerKey>,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    pub key: String,
    pub upload_id: String,
    pub owner: String,
    pub initiated_ms: u64,
    pub storage_class: String,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_number: u32,
    pub size: u64,
    /// Hex MD5 of the part, without quotes.
    pub etag: String,
    pub last_modified_ms: u64,
    pub checksums: BTreeMap<String, String>,
}

/// A part as CompleteMultipartUpload names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    /// With or without quotes.
    pub etag: String,
}

#[derive(Debug, Clone, Default)]
pub struct ListPartsPage {
    pub parts: Vec<PartInfo>,
    pub is_truncated: bool,
    pub next_part_number_marker: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct ListUploadsPage {
    pub uploads: Vec<UploadInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_upload_id_marker: Option<String>,
}

/// Options of one UploadPart.
#[derive(Debug, Clone, Default)]
pub struct PartOptions {
    pub content_md5: Option<[u8; 16]>,
    pub expected_checksums: BTreeMap<String, String>,
    pub customer_key: Option<CustomerKey>,
    /// Extra checksums to compute (trailer algorithms).
    pub checksums: Vec<ChecksumAlgorithm>,
    /// As `PutOptions::trailer`.
    pub trailer: Option<crate::objects::Trailer>,
}

fn upload_id_bytes(text: &str) -> Option<Vec<u8>> {
    VersionId::from_text(text).map(|v| v.0.to_vec())
}

fn info_of(u: &MultipartUpload) -> UploadInfo {
    UploadInfo {
        key: u.key.clone(),
        upload_id: u.upload_id.clone(),
        owner: u.owner.clone(),
        initiated_ms: u.initiated_ms,
        storage_class: if u.storage_class.is_empty() {
            "STANDARD".into()
        } else {
            u.storage_class.clone()
        },
        checksum_algorithm: ChecksumAlgorithm::from_name(&u.checksum_algorithm),
    }
}

fn part_info(p: &Part) -> PartInfo {
    PartInfo {
        part_number: p.part_number,
        size: p.size,
        etag: p.etag.clone(),
        last_modified_ms: p.last_modified_ms,
        checksums: p.checksums.clone(),
    }
}

fn part_referrer(b: &BucketHandle, key: &str, upload: &[u8], part_number: u32) -> Referrer {
    Referrer {
        bucket_id: b.id().to_vec(),
        key_hash: b.key_hash(key).to_vec(),
        version: upload.to_vec(),
        part_number,
    }
}

impl ObjectStore {
    pub async fn create_multipart_upload(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        owner: &str,
        opts: MultipartOptions,
    ) -> Result<UploadInfo> {
        naming::check_object_key(key)?;
        let b = self.bucket(bucket).await?;
        let erasure = self.erasure_for(&b.record, opts.storage_class.as_deref())?;
        let id = self.inner.hlc.next();
        let mut user_metadata = opts.user_metadata;
        // Tags given at initiation apply to the completed object; they ride
        // in the metadata map under a reserved prefix until then.
        for (k, v) in opts.tags {
            user_metadata.insert(format!("{TAG_PREFIX}{k}"), v);
        }
        let u = MultipartUpload {
            bucket: b.name().to_string(),
            key: key.to_string(),
            upload_id: id.to_text(),
            owner: owner.to_string(),
            initiated_ms: id.time_ms(),
            content_type: opts.content_type.unwrap_or_default(),
            user_metadata,
            storage_class: opts.storage_class.unwrap_or_default(),
            revision: id.hlc(),
            closed: false,
            sse_customer_key_md5: opts
                .customer_key
                .map(|k| k.md5_b64().to_string())
                .unwrap_or_default(),
            checksum_algorithm: opts
                .checksum_algorithm
                .map(|a| a.name().to_string())
                .unwrap_or_default(),
            erasure: Some(erasure),
            ..Default::default()
        };
        self.bucket_table(&b)
            .put(&layout::upload_key(b.id(), &b.key_hash(key), &id.0), &u)
            .await?;
        Ok(info_of(&u))
    }

    /// The upload record, closed or not.
    async fn upload_record(
        &self,
        b: &BucketHandle,
        key: &str,
        upload_id: &str,
    ) -> Result<(MultipartUpload, Vec<u8>)> {
        let no_upload = || Error::NoSuchUpload(upload_id.to_string());
        let id = upload_id_bytes(upload_id).ok_or_else(no_upload)?;
        let table_key = layout::upload_key(b.id(), &b.key_hash(key), &id);
        match self.bucket_table(b).get(&table_key).await? {
            Some(u) => Ok((u, id)),
            None => Err(no_upload()),
        }
    }

    async fn open_upload(
        &self,
        b: &BucketHandle,
        key: &str,
        upload_id: &str,
    ) -> Result<(MultipartUpload, Vec<u8>)> {
        let (u, id) = self.upload_record(b, key, upload_id).await?;
        if u.closed {
            return Err(Error::NoSuchUpload(upload_id.to_string()));
        }
        Ok((u, id))
    }

    /// Every part record of an upload, by part number.
    async fn parts_of(&self, b: &BucketHandle, upload: &[u8]) -> Result<BTreeMap<u32, Part>> {
        let start = layout::parts_prefix(b.id(), upload);
        let end = metadata::db::prefix_end(&start);
        let mut scan = self.bucket_table::<Part>(b).scan(start, end);
        let mut parts = BTreeMap::new();
        while let Some((_, p)) = scan.next().await? {
            parts.insert(p.part_number, p);
        }
        scan.repair_stale();
        Ok(parts)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part<S, E>(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: S,
        opts: PartOptions,
    ) -> Result<PartInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=MAX_PARTS).contains(&part_number) {
            return Err(Error::InvalidArgument(format!(
                "part number must be 1 to {MAX_PARTS}"
            )));
        }
        let b = self.bucket(bucket).await?;
        let (u, id) = self.open_upload(&b, key, upload_id).await?;
        let given = opts.customer_key.as_ref().map(|k| k.md5_b64().to_string());
        if given.as_deref().unwrap_or("") != u.sse_customer_key_md5 {
            return Err(if u.sse_customer_key_md5.is_empty() || given.is_some() {
                Error::CustomerKeyMismatch
            } else {
                Error::CustomerKeyRequired
            });
        }
        let referrer = part_referrer(&b, key, &id, part_number);
        let mut algorithms: Vec<ChecksumAlgorithm> =
            ChecksumAlgorithm::from_name(&u.checksum_algorithm)
                .into_iter()
                .collect();
        algorithms.extend(opts.checksums.iter().copied());
        for name in opts.expected_checksums.keys() {
            algorithms.push(ChecksumAlgorithm::from_name(name).ok_or_else(|| {
                Error::InvalidArgument(format!("unknown checksum algorithm {name}"))
            })?);
        }
        let erasure = match u.erasure {
            Some(e) => e,
            None => self.erasure_for(&b.record, Some(&u.storage_class))?,
        };
        let ctx = WriteCtx {
            io: self.chunk_io(),
            sealing: b.sealing(opts.customer_key.as_ref()),
            erasure,
            referrer: referrer.clone(),
            algorithms,
            inline_threshold: 0,
        };
        let written = chunk_stream::write_stream(ctx, body).await?;
        let refs = written.refs;
        let stored: Result<_> = async {
            let mut expected = opts.expected_checksums.clone();
            if let Some(t) = &opts.trailer {
                expected.extend((t.0)());
            }
            verify_digests(&written.digests, opts.content_md5.as_ref(), &expected)?;
            let table_key = layout::part_key(b.id(), &id, part_number);
            let parts = self.bucket_table::<Part>(&b);
            let previous = parts.get(&table_key).await?;
            let p = Part {
                upload_id: u.upload_id.clone(),
                part_number,
                size: written.size,
                etag: hex::encode(written.digests.md5),
                chunks: refs.chunks().to_vec(),
                last_modified_ms: grid::clock::now_ms(),
                checksums: written.digests.checksums,
                revision: self.revision(),
            };
            parts.put(&table_key, &p).await?;
            Ok((p, previous))
        }
        .await;
        // The part record now names its chunks, or the part failed.
        let (p, previous) = refs.settle(stored).await?;
        if let Some(old) = previous {
            // Same referrer: only chunks the new part does not use go.
            let gone: Vec<ChunkRef> = old
                .chunks
                .into_iter()
                .filter(|c| !p.chunks.iter().any(|n| n.id == c.id))
                .collect();
            chunk_stream::remove_refs(&self.chunk_io(), &referrer, &gone).await;
        }
        Ok(part_info(&p))
    }

    pub async fn complete_multipart_upload(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<PutResult> {
        self.complete_multipart_upload_if(bucket, key, upload_id, parts, &Conditions::default())
            .await
    }

    /// Complete an upload if the current object meets `conditions`
    /// (If-Match / If-None-Match, as a conditional PUT).
    pub async fn complete_multipart_upload_if(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
        conditions: &Conditions,
    ) -> Result<PutResult> {
        let b = self.bucket(bucket).await?;
        let (u, id) = self.upload_record(&b, key, upload_id).await?;
        if u.closed {
            // Completing again (a client retry) gets the first answer.
            if u.completed_etag.is_empty() {
                return Err(Error::NoSuchUpload(upload_id.to_string()));
            }
            let vid = VersionId::from_slice(&u.completed_version);
            return Ok(PutResult {
                version_id: vid
                    .filter(|_| b.versioning() == VersioningState::Enabled)
                    .map(|v| v.to_text()),
                etag: u.completed_etag.clone(),
                size: u.completed_size,
                checksums: u.completed_checksums.clone(),
                last_modified_ms: vid.map_or(0, |v| v.time_ms()),
            });
        }
        if parts.is_empty() {
            return Err(Error::InvalidArgument(
                "a multipart upload needs at least one part".into(),
            ));
        }
        // A part listed twice in a row (a resent part) counts once: its
        // last mention, as the last upload of a part number is the part.
        let mut listed: Vec<&CompletedPart> = Vec::with_capacity(parts.len());
        for p in parts {
            match listed.last_mut() {
                Some(last) if last.part_number == p.part_number => *last = p,
                _ => listed.push(p),
            }
        }
        if listed
            .windows(2)
            .any(|w| w[0].part_number >= w[1].part_number)
        {
            return Err(Error::InvalidPartOrder);
        }
        self.check_write_conditions(&b, key, conditions).await?;
        let stored = self.parts_of(&b, &id).await?;
        let mut chosen: Vec<&Part> = Vec::with_capacity(listed.len());
        for want in listed {
            let p = stored
                .get(&want.part_number)
                .filter(|p| p.etag == want.etag.trim().trim_matches('"'))
                .ok_or(Error::InvalidPart {
                    part: want.part_number,
                })?;
            chosen.push(p);
        }
        let min = self.inner.cfg.min_part_size;
        for p in &chosen[..chosen.len() - 1] {
            if p.size < min {
                return Err(Error::EntityTooSmall {
                    part: p.part_number,
                    size: p.size,
                    min,
                });
            }
        }

        // S3's multipart ETag: MD5 of the parts' binary MD5s, "-<count>".
        let mut md5 = Md5::new();
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for p in &chosen {
            md5.update(hex::decode(&p.etag).map_err(|_| Error::Corrupt("part etag".into()))?);
            for c in &p.chunks {
                let mut c = c.clone();
                c.offset += size;
                chunks.push(c);
            }
            size += p.size;
        }
        let etag = format!("{}-{}", hex::encode(md5.finalize()), chosen.len());
        let mut checksums = BTreeMap::new();
        if let Some(a) = ChecksumAlgorithm::from_name(&u.checksum_algorithm) {
            // Composite checksum: the digest of the parts' digests.
            let mut joined = Vec::new();
            for p in &chosen {
                let d = p
                    .checksums
                    .get(a.name())
                    .and_then(|s| checksum::unb64(s))
                    .ok_or(Error::InvalidPart {
                        part: p.part_number,
                    })?;
                joined.extend_from_slice(&d);
            }
            checksums.insert(
                a.name().to_string(),
                format!("{}-{}", checksum::b64(&a.digest(&joined)), chosen.len()),
            );
        }

        let vid = self.inner.hlc.next();
        let referrer = Referrer {
            bucket_id: b.id().to_vec(),
            key_hash: b.key_hash(key).to_vec(),
            version: vid.0.to_vec(),
            part_number: 0,
        };
        let refs = chunk_stream::add_refs(&self.chunk_io(), &referrer, &chunks).await?;
        let mut user_metadata = u.user_metadata.clone();
        let mut tags = BTreeMap::new();
        user_metadata.retain(|k, v| match k.strip_prefix(TAG_PREFIX) {
            Some(t) => {
                tags.insert(t.to_string(), v.clone());
                false
            }
            None => true,
        });
        let null = b.versioning() != VersioningState::Enabled;
        let v = ObjectVersion {
            bucket: b.name().to_string(),
            key: key.to_string(),
            version_id: vid.0.to_vec(),
            null_version: null,
            delete_marker: false,
            size,
            etag: etag.clone(),
            content_type: u.content_type.clone(),
            user_metadata,
            chunks,
            inline_data: Vec::new(),
            created_ms: vid.time_ms(),
            storage_class: u.storage_class.clone(),
            checksums: checksums.clone(),
            revision: 0,
            purged: false,
            part_sizes: chosen.iter().map(|p| p.size).collect(),
            sse_customer_key_md5: u.sse_customer_key_md5.clone(),
            tags,
        };
        self.commit_version(&b, &v, Some(refs)).await?;
        let mut done = u.clone();
        done.completed_etag = etag.clone();
        done.completed_version = vid.0.to_vec();
        done.completed_size = size;
        done.completed_checksums = checksums.clone();
        self.close_upload(&b, &done, &id, &stored).await?;
        // Chunks as chunking the whole stream would cut them, so versions
        // dedup whatever the part size: re-cut after the answer, so that
        // completion takes the same time whatever the part count. Chunks
        // under a customer key have random ids and never dedup.
        if chosen.len() > 1 && u.sse_customer_key_md5.is_empty() && b.sealing(None).dedup() {
            self.stitch_later(b.into_owned(), key.to_string(), vid);
        }
        Ok(PutResult {
            version_id: (!null).then(|| vid.to_text()),
            etag,
            size,
            checksums,
            last_modified_ms: v.created_ms,
        })
    }

    /// Tombstone the upload, drop its part records and their references.
    async fn close_upload(
        &self,
        b: &BucketHandle,
        u: &MultipartUpload,
        id: &[u8],
        parts: &BTreeMap<u32, Part>,
    ) -> Result<()> {
        let mut tomb = u.clone();
        tomb.closed = true;
        tomb.revision = self.revision();
        tomb.user_metadata.clear();
        let uploads = self.bucket_table::<MultipartUpload>(b);
        let mut ops =
            vec![uploads.put_op(&layout::upload_key(b.id(), &b.key_hash(&u.key), id), &tomb)];
        for n in parts.keys() {
            ops.push(Table::<Part>::delete_op(&layout::part_key(b.id(), id, *n)));
        }
        for batch in ops.chunks(grid::node_api::MAX_ITEMS) {
            uploads.apply(batch.to_vec()).await?;
        }
        // One round trip per part: at once, or 10,000 parts take seconds.
        let io = self.chunk_io();
        futures_util::stream::iter(parts.values())
            .for_each_concurrent(16, |p| {
                let r = part_referrer(b, &u.key, id, p.part_number);
                let io = &io;
                async move { chunk_stream::remove_refs(io, &r, &p.chunks).await }
            })
            .await;
        Ok(())
    }

    pub async fn abort_multipart_upload(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        upload_id: &str,
    ) -> Result<()> {
        let b = self.bucket(bucket).await?;
        let (u, id) = self.open_upload(&b, key, upload_id).await?;
        let parts = self.parts_of(&b, &id).await?;
        self.close_upload(&b, &u, &id, &parts).await
    }

    pub async fn list_parts(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        upload_id: &str,
        part_number_marker: Option<u32>,
        max_parts: usize,
    ) -> Result<ListPartsPage> {
        let b = self.bucket(bucket).await?;
        let (_, id) = self.open_upload(&b, key, upload_id).await?;
        let parts = self.parts_of(&b, &id).await?;
        let max = max_parts.min(1000);
        let mut page = ListPartsPage::default();
        let after = part_number_marker.unwrap_or(0);
        for p in parts.values().filter(|p| p.part_number > after) {
            if page.parts.len() == max {
                page.is_truncated = true;
                break;
            }
            page.parts.push(part_info(p));
        }
        if page.is_truncated {
            page.next_part_number_marker = page.parts.last().map(|p| p.part_number);
        }
        Ok(page)
    }

    /// Unfinished uploads in key order (then by initiation).
    pub async fn list_multipart_uploads(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max_uploads: usize,
    ) -> Result<ListUploadsPage> {
        let b = self.bucket(bucket).await?;
        self.uploads_page(
            &b,
            prefix,
            delimiter,
            key_marker,
            upload_id_marker,
            max_uploads.min(1000),
        )
        .await
    }

    async fn uploads_page(
        &self,
        b: &BucketHandle,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max: usize,
    ) -> Result<ListUploadsPage> {
        let mut page = ListUploadsPage::default();
        if max == 0 {
            return Ok(page);
        }
        let marker = key_marker.map(|km| (km, upload_id_marker.and_then(upload_id_bytes)));
        let (start, end) = layout::bucket_range(b.id());
        let mut first = FirstItems::new(max);
        let mut scan = self.bucket_table::<MultipartUpload>(b).scan(start, end);
        while let Some((raw, u)) = scan.next().await? {
            if u.closed || !u.key.starts_with(prefix) {
                continue;
            }
            let Some(id) = layout::upload_id_of(b.id(), &raw) else {
                continue;
            };
            if let Some((km, id_marker)) = &marker {
                let key = u.key.as_str();
                let passed = match id_marker {
                    Some(im) => key < *km || (key == *km && id <= *im),
                    None => key <= *km,
                };
                if passed {
                    continue;
                }
            }
            match crate::listing::common_prefix(prefix, delimiter, &u.key) {
                Some(cp) => first.offer((cp, Vec::new()), || None),
                None => first.offer((u.key.clone(), id), || Some(info_of(&u))),
            }
        }
        scan.repair_stale();
        let (items, truncated) = first.finish();
        page.is_truncated = truncated;
        for ((name, _), item) in items {
            match item {
                None => {
                    page.next_key_marker = Some(name.clone());
                    page.next_upload_id_marker = None;
                    page.common_prefixes.push(name);
                }
                Some(info) => {
                    page.next_key_marker = Some(name);
                    page.next_upload_id_marker = Some(info.upload_id.clone());
                    page.uploads.push(info);
                }
            }
        }
        if !page.is_truncated {
            page.next_key_marker = None;
            page.next_upload_id_marker = None;
        }
        Ok(page)
    }

    /// Abort every unfinished upload of a bucket (bucket deletion).
    pub(crate) async fn abort_all_uploads(&self, b: &BucketHandle) -> Result<()> {
        self.abort_uploads_where(b, |_| true).await.map(drop)
    }

    async fn abort_uploads_where(
        &self,
        b: &BucketHandle,
        pred: impl Fn(&MultipartUpload) -> bool,
    ) -> Result<usize> {
        let (start, end) = layout::bucket_range(b.id());
        let mut doomed = Vec::new();
        {
            let mut scan = self.bucket_table::<MultipartUpload>(b).scan(start, end);
            while let Some((raw, u)) = scan.next().await? {
                if !u.closed && pred(&u) {
                    if let Some(id) = layout::upload_id_of(b.id(), &raw) {
                        doomed.push((u, id));
                    }
                }
                // Bounded: the rest go in the next sweep.
                if doomed.len() >= 1000 {
                    break;
                }
            }
        }
        for (u, id) in &doomed {
            let parts = self.parts_of(b, id).await?;
            self.close_upload(b, u, id, &parts).await?;
        }
        Ok(doomed.len())
    }

    /// Abort uploads initiated more than `max_age` ago, in every bucket.
    /// Returns how many were aborted.
    pub async fn abort_stale_uploads(&self, max_age: Duration) -> Result<usize> {
        let cutoff = grid::clock::now_ms().saturating_sub(max_age.as_millis() as u64);
        let mut total = 0;
        for info in self.list_buckets().await? {
            let b = match self.bucket(&info.name).await {
                Ok(b) => b,
                Err(Error::NoSuchBucket(_)) => continue,
                Err(e) => return Err(e),
            };
            total += self
                .abort_uploads_where(&b, |u| u.initiated_ms < cutoff)
                .await?;
        }
        Ok(total)
    }
}

/// User-metadata prefix that carries tags from initiation to completion.
const TAG_PREFIX: &str = "\u{1}tag:";
