//! [`ObjectStore`]: the object layer's entry point, and buckets.
//!
//! One `ObjectStore` per gateway process; it is cheap to clone and every
//! method is safe to call concurrently. Gateways keep no state of their
//! own: every bucket, version and upload lives on metadata replicas on the
//! nodes (see [`crate::replicas`]), so any number of gateways can serve the
//! same grid.

use crate::chunk_io::Grid;
use crate::error::{Error, Result};
use crate::layout;
use crate::naming;
use crate::node_api::MetaOp;
use crate::replicas::{self, MergedScan, ReplicaSet};
use crate::secrets::{CustomerKey, MasterKey, Sealing};
use crate::version_id::Hlc;
use codec::{ChunkId, ChunkerConfig, DomainKey};
use metadata::db::Table;
use metadata::model::{Bucket, ErasureSpec, ObjectVersion, VersioningState, BUCKET_ID_LEN};
use metadata::Record;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Tunables of the object layer.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Copies of each bucket's metadata (and of the bucket directory).
    pub metadata_replicas: usize,
    /// Objects up to this size live inside their manifest.
    pub inline_threshold: usize,
    /// Content-defined chunk sizes (the seed is set per bucket).
    pub chunker: ChunkerConfig,
    /// Chunks of one upload being hashed, sealed or sent at once: the
    /// memory bound of an upload is about this many chunks.
    pub chunks_in_flight: usize,
    /// S3's minimum size of every part but the last.
    pub min_part_size: u64,
    pub max_object_size: u64,
    /// The gateway's site: reads prefer shards held there.
    pub local_site: Option<String>,
    /// Erasure shape for buckets that do not choose one (None: from the
    /// cluster's size, see [`crate::erasure_default`]).
    pub default_erasure: Option<ErasureSpec>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            metadata_replicas: 3,
            inline_threshold: 16 * 1024,
            chunker: ChunkerConfig::default(),
            chunks_in_flight: 4,
            min_part_size: 5 << 20,
            max_object_size: 5 << 40,
            local_site: None,
            default_erasure: None,
        }
    }
}

/// A chunk a read found damaged or short of shards: work for the repair
/// daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairHint {
    pub chunk: ChunkId,
    pub erasure: ErasureSpec,
    /// Shard indexes no node asked had.
    pub missing: Vec<usize>,
    /// (shard index, node) pairs whose shard failed verification.
    pub corrupt: Vec<(usize, String)>,
}

pub(crate) struct Inner {
    /// Swapped whole when the nodes agree on a newer cluster map
    /// ([`ObjectStore::set_map`]); a request keeps the grid it started with.
    pub grid: std::sync::RwLock<Arc<Grid>>,
    pub master: MasterKey,
    pub cfg: StoreConfig,
    pub hlc: Hlc,
    pub repair: Option<mpsc::Sender<RepairHint>>,
}

#[derive(Clone)]
pub struct ObjectStore {
    pub(crate) inner: Arc<Inner>,
}

/// What callers see of a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketInfo {
    pub name: String,
    pub owner: String,
    pub created_ms: u64,
    pub versioning: VersioningState,
    pub erasure: ErasureSpec,
    pub public: bool,
}

/// A bucket resolved for one request: its record, replicas and key.
#[derive(Clone)]
pub(crate) struct BucketCtx {
    pub record: Bucket,
    pub replicas: ReplicaSet,
    pub domain: DomainKey,
}

impl BucketCtx {
    pub fn id(&self) -> &[u8] {
        &self.record.id
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn versioning(&self) -> VersioningState {
        VersioningState::try_from(self.record.versioning).unwrap_or(VersioningState::Unversioned)
    }

    pub fn sealing(&self, customer: Option<&CustomerKey>) -> Sealing {
        match customer {
            Some(c) => Sealing::Customer(self.domain.clone(), c.clone()),
            None => Sealing::Domain(self.domain.clone()),
        }
    }
}

pub(crate) fn bucket_revision(b: &[u8]) -> Option<u64> {
    Bucket::decode_record(b).ok().map(|b| b.revision)
}

pub(crate) fn version_revision(b: &[u8]) -> Option<u64> {
    ObjectVersion::decode_record(b).ok().map(|v| v.revision)
}

pub(crate) fn decode<R: Record>(what: &str, bytes: &[u8]) -> Result<R> {
    R::decode_record(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

impl ObjectStore {
    pub fn new(grid: Grid, master: MasterKey, cfg: StoreConfig) -> Self {
        let grid = match &cfg.local_site {
            Some(site) => grid.with_local_site(Some(site.clone())),
            None => grid,
        };
        Self {
            inner: Arc::new(Inner {
                grid: std::sync::RwLock::new(Arc::new(grid)),
                master,
                cfg,
                hlc: Hlc::new(),
                repair: None,
            }),
        }
    }

    /// Send every damaged or short chunk a read meets to `tx` (the repair
    /// daemon's queue). Hints are dropped, with a warning, when it is full:
    /// scrubbing finds what a dropped hint would have named.
    pub fn with_repair_queue(self, tx: mpsc::Sender<RepairHint>) -> Self {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.repair = Some(tx);
                inner
            }
            Err(shared) => Inner {
                grid: std::sync::RwLock::new(shared.grid()),
                master: shared.master.clone(),
                cfg: shared.cfg.clone(),
                hlc: Hlc::new(),
                repair: Some(tx),
            },
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The grid as of now (a later map change does not alter it).
    pub fn grid(&self) -> Arc<Grid> {
        self.inner.grid()
    }

    /// Adopt `map` if it is newer than the one in use; returns whether it
    /// was. Clients of nodes whose address did not change are kept.
    pub fn set_map(&self, map: metadata::model::ClusterMap) -> bool {
        let mut g = self.inner.grid.write().unwrap_or_else(|p| p.into_inner());
        if map.epoch <= g.map().epoch {
            return false;
        }
        *g = Arc::new(g.with_map(map));
        true
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    pub(crate) fn revision(&self) -> u64 {
        self.inner.hlc.next().hlc()
    }

    pub(crate) fn root_replicas(&self) -> Result<ReplicaSet> {
        Ok(ReplicaSet::place(
            &self.grid(),
            layout::ROOT_PLACEMENT,
            self.inner.cfg.metadata_replicas,
        )?)
    }

    pub(crate) fn bucket_replicas(&self, bucket_id: &[u8]) -> Result<ReplicaSet> {
        Ok(ReplicaSet::place(
            &self.grid(),
            bucket_id,
            self.inner.cfg.metadata_replicas,
        )?)
    }

    /// The erasure shape of new data in `bucket` for a storage class.
    pub(crate) fn erasure_for(&self, bucket: &Bucket, class: Option<&str>) -> Result<ErasureSpec> {
        let base = bucket
            .erasure
            .or(self.inner.cfg.default_erasure)
            .unwrap_or_else(|| crate::erasure_default::default_erasure(self.grid().map()));
        match class.unwrap_or("STANDARD") {
            ""
            | "STANDARD"
            | "STANDARD_IA"
            | "ONEZONE_IA"
            | "INTELLIGENT_TIERING"
            | "GLACIER"
            | "GLACIER_IR"
            | "DEEP_ARCHIVE"
            | "OUTPOSTS"
            | "EXPRESS_ONEZONE" => Ok(base),
            // One parity shard fewer, but never none if the bucket had any.
            "REDUCED_REDUNDANCY" => Ok(ErasureSpec::new(
                base.data,
                base.parity.saturating_sub(1).max(base.parity.min(1)),
            )),
            other => Err(Error::InvalidArgument(format!(
                "unknown storage class {other:?}"
            ))),
        }
    }

    /// The current bucket record from a read quorum of the directory
    /// (tombstones included).
    async fn bucket_record(&self, name: &str) -> Result<Option<Bucket>> {
        let set = self.root_replicas()?;
        let answers = replicas::read(&self.grid(), &set, Table::Buckets, name.as_bytes()).await?;
        let (winner, stale) = replicas::pick_latest(answers, bucket_revision);
        let Some(bytes) = winner else {
            return Ok(None);
        };
        if !stale.is_empty() {
            replicas::repair(
                &self.grid(),
                stale,
                Table::Buckets,
                name.as_bytes().to_vec(),
                bytes.clone(),
            );
        }
        decode("bucket", &bytes).map(Some)
    }

    pub(crate) async fn bucket(&self, name: &str) -> Result<BucketCtx> {
        match self.bucket_record(name).await? {
            Some(record) if !record.deleted => {
                let replicas = self.bucket_replicas(&record.id)?;
                let domain = self.inner.master.bucket_domain(&record.id);
                Ok(BucketCtx {
                    record,
                    replicas,
                    domain,
                })
            }
            _ => Err(Error::NoSuchBucket(name.to_string())),
        }
    }

    fn info(&self, b: &Bucket) -> BucketInfo {
        BucketInfo {
            name: b.name.clone(),
            owner: b.owner.clone(),
            created_ms: b.created_ms,
            versioning: VersioningState::try_from(b.versioning)
                .unwrap_or(VersioningState::Unversioned),
            erasure: self.erasure_for(b, None).unwrap_or(ErasureSpec::new(1, 0)),
            public: b.public,
        }
    }

    async fn write_bucket(&self, b: &Bucket) -> Result<()> {
        let set = self.root_replicas()?;
        let op = MetaOp::put(Table::Buckets, b.name.as_bytes(), b.encode_record());
        replicas::write(&self.grid(), &set, vec![op]).await?;
        Ok(())
    }

    /// Create `name` for `owner` (S3 naming rules). `erasure` overrides the
    /// cluster default for this bucket's data.
    pub async fn create_bucket(
        &self,
        name: &str,
        owner: &str,
        erasure: Option<ErasureSpec>,
    ) -> Result<BucketInfo> {
        naming::check_bucket_name(name)?;
        if let Some(e) = erasure {
            let placeable = self
                .grid()
                .map()
                .nodes
                .iter()
                .filter(|n| n.placeable())
                .count();
            if e.data == 0 || e.total() > metadata::MAX_SHARDS || e.total() > placeable.max(1) * 2 {
                return Err(Error::InvalidArgument(format!(
                    "erasure {}+{} does not fit this cluster",
                    e.data, e.parity
                )));
            }
        }
        if let Some(existing) = self.bucket_record(name).await? {
            if !existing.deleted {
                return Err(if existing.owner == owner {
                    Error::BucketAlreadyOwnedByYou(name.to_string())
                } else {
                    Error::BucketAlreadyExists(name.to_string())
                });
            }
        }
        let now = crate::rpc_auth::now_ms();
        let record = Bucket {
            name: name.to_string(),
            id: rand::random::<[u8; BUCKET_ID_LEN]>().to_vec(),
            owner: owner.to_string(),
            created_ms: now,
            versioning: VersioningState::Unversioned as i32,
            erasure,
            revision: self.revision(),
            deleted: false,
            public: false,
        };
        self.write_bucket(&record).await?;
        // Two gateways creating one name at once: the highest revision
        // wins on every replica, so both learn the same winner here.
        match self.bucket_record(name).await? {
            Some(winner) if winner.id == record.id => Ok(self.info(&record)),
            Some(winner) if winner.owner == owner => {
                Err(Error::BucketAlreadyOwnedByYou(name.to_string()))
            }
            _ => Err(Error::BucketAlreadyExists(name.to_string())),
        }
    }

    pub async fn head_bucket(&self, name: &str) -> Result<BucketInfo> {
        let b = self.bucket(name).await?;
        Ok(self.info(&b.record))
    }

    /// Every live bucket, by name.
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let set = self.root_replicas()?;
        let grid = self.grid();
        let mut scan = MergedScan::new(
            grid,
            &set,
            Table::Buckets,
            Vec::new(),
            None,
            bucket_revision,
        );
        let mut out = Vec::new();
        while let Some((_, v)) = scan.next().await? {
            let b: Bucket = decode("bucket", &v)?;
            if !b.deleted {
                out.push(self.info(&b));
            }
        }
        scan.repair_stale();
        Ok(out)
    }

    /// Delete an empty bucket (refused while any version or delete marker
    /// is in it); unfinished multipart uploads in it are aborted.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let b = self.bucket(name).await?;
        let (start, end) = layout::bucket_range(b.id(), "");
        let grid = self.grid();
        let mut scan = MergedScan::new(
            grid,
            &b.replicas,
            Table::Versions,
            start,
            end,
            version_revision,
        )
        .with_page(100);
        while let Some((_, v)) = scan.next().await? {
            let v: ObjectVersion = decode("version", &v)?;
            if !v.purged {
                return Err(Error::BucketNotEmpty(name.to_string()));
            }
        }
        self.abort_all_uploads(&b).await?;
        let mut tomb = b.record.clone();
        tomb.deleted = true;
        tomb.revision = self.revision();
        self.write_bucket(&tomb).await
    }

    async fn update_bucket(&self, name: &str, change: impl FnOnce(&mut Bucket)) -> Result<()> {
        let b = self.bucket(name).await?;
        let mut record = b.record;
        change(&mut record);
        record.revision = self.revision();
        self.write_bucket(&record).await
    }

    /// S3 allows Enabled and Suspended; a bucket never returns to
    /// unversioned.
    pub async fn set_versioning(&self, name: &str, state: VersioningState) -> Result<()> {
        if state == VersioningState::Unversioned {
            return Err(Error::InvalidArgument(
                "versioning can only be enabled or suspended".into(),
            ));
        }
        self.update_bucket(name, |b| b.versioning = state as i32)
            .await
    }

    pub async fn set_public(&self, name: &str, public: bool) -> Result<()> {
        self.update_bucket(name, |b| b.public = public).await
    }

    /// Queue a repair hint (or log it when no queue is attached).
    pub(crate) fn report_repair(&self, hint: RepairHint) {
        if let Some(tx) = &self.inner.repair {
            if tx.try_send(hint).is_err() {
                tracing::warn!("repair queue full or closed; dropping a hint");
            }
        } else if !hint.missing.is_empty() || !hint.corrupt.is_empty() {
            tracing::info!(chunk = %hint.chunk, missing = ?hint.missing, corrupt = ?hint.corrupt,
                "damaged chunk read (no repair queue attached)");
        }
    }
}

impl Inner {
    pub(crate) fn grid(&self) -> Arc<Grid> {
        self.grid.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
