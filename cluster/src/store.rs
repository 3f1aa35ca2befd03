//! [`ObjectStore`]: the object layer's entry point, and buckets.
//!
//! One `ObjectStore` per gateway process; it is cheap to clone and every
//! method is safe to call concurrently. Gateways keep no state of their
//! own: every bucket, version and upload lives on metadata replicas on the
//! nodes (see [`grid::replicas`]), so any number of gateways can serve the
//! same grid.

use crate::chunk_stream::{ChunkIo, RepairHint, RepairSink};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::layout;
use crate::naming;
use crate::secrets::{CustomerKey, MasterKey, Sealing};
use crate::version_id::Hlc;
use codec::DomainKey;
use grid::chunk_io::Grid;
use grid::replicas::ReplicaSet;
use grid::table::Table;
use metadata::model::{Bucket, ErasureSpec, ObjectVersion, VersioningState, BUCKET_ID_LEN};
use metadata::sealed::{NameKind, RecordKeys, NAME_HASH_LEN};
use metadata::Replicated;
use std::borrow::Cow;
use std::sync::Arc;
use tokio::sync::mpsc;

pub(crate) struct Inner {
    /// Swapped whole when the nodes agree on a newer cluster map
    /// ([`ObjectStore::set_map`]); a request keeps the grid it started with.
    pub grid: std::sync::RwLock<Arc<Grid>>,
    pub master: MasterKey,
    /// Seals the root records (buckets, users, locks).
    pub root_keys: RecordKeys,
    pub cfg: Arc<StoreConfig>,
    pub hlc: Hlc,
    pub repair: Option<mpsc::Sender<RepairHint>>,
    /// Ordered listings of the buckets this gateway lists.
    pub list_indexes: crate::list_index::ListIndexes,
    /// Storage audit results, for the gateway's metrics.
    pub audits: Arc<crate::audit_stats::AuditStats>,
    /// Completed multipart objects whose part edges are being re-cut.
    pub stitching: Arc<crate::stitch_queue::StitchQueue>,
    /// Shared by every upload: see [`StoreConfig::write_bytes_in_flight`].
    pub write_budget: Arc<tokio::sync::Semaphore>,
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

/// A bucket resolved once for a request: its record, its metadata
/// replicas and its key domain. A front end gets one from
/// [`ObjectStore::open_bucket`] when it authorises a request and passes it
/// to every call the request makes, so the bucket record is read once.
/// It is a snapshot: a request that started before a change of the bucket
/// (versioning, public) finishes under the state it started with.
#[derive(Clone)]
pub struct BucketHandle {
    pub(crate) record: Bucket,
    pub(crate) replicas: ReplicaSet,
    pub(crate) domain: DomainKey,
    /// Seals the bucket's records and hashes its object keys.
    pub(crate) keys: RecordKeys,
}

impl std::fmt::Debug for BucketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the domain key.
        f.debug_struct("BucketHandle")
            .field("name", &self.record.name)
            .finish_non_exhaustive()
    }
}

/// Which bucket a call is about: a name, looked up by the call, or a
/// handle a front end already holds.
#[derive(Debug, Clone, Copy)]
pub enum BucketRef<'a> {
    Name(&'a str),
    Handle(&'a BucketHandle),
}

impl BucketRef<'_> {
    pub fn name(&self) -> &str {
        match self {
            BucketRef::Name(n) => n,
            BucketRef::Handle(b) => b.name(),
        }
    }
}

impl<'a> From<&'a str> for BucketRef<'a> {
    fn from(name: &'a str) -> Self {
        BucketRef::Name(name)
    }
}

impl<'a> From<&'a String> for BucketRef<'a> {
    fn from(name: &'a String) -> Self {
        BucketRef::Name(name)
    }
}

impl<'a> From<&'a BucketHandle> for BucketRef<'a> {
    fn from(b: &'a BucketHandle) -> Self {
        BucketRef::Handle(b)
    }
}

impl BucketHandle {
    pub(crate) fn id(&self) -> &[u8] {
        &self.record.id
    }

    /// What stands for object `key` in this bucket's record keys and chunk
    /// references.
    pub(crate) fn key_hash(&self, key: &str) -> [u8; NAME_HASH_LEN] {
        self.keys.name_hash(NameKind::Object, key.as_bytes())
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn owner(&self) -> &str {
        &self.record.owner
    }

    pub fn is_public(&self) -> bool {
        self.record.public
    }

    pub fn versioning(&self) -> VersioningState {
        VersioningState::try_from(self.record.versioning).unwrap_or(VersioningState::Unversioned)
    }

    pub(crate) fn sealing(&self, customer: Option<&CustomerKey>) -> Sealing {
        match customer {
            Some(c) => Sealing::Customer(self.domain.clone(), c.clone()),
            None => Sealing::Domain(self.domain.clone()),
        }
    }
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
                root_keys: master.root_record_keys(),
                master,
                hlc: Hlc::new(),
                repair: None,
                list_indexes: Default::default(),
                audits: Arc::default(),
                stitching: Arc::default(),
                write_budget: Arc::new(tokio::sync::Semaphore::new(
                    cfg.write_bytes_in_flight.max(1),
                )),
                cfg: Arc::new(cfg),
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
                root_keys: shared.root_keys.clone(),
                cfg: shared.cfg.clone(),
                hlc: Hlc::new(),
                repair: Some(tx),
                list_indexes: Default::default(),
                audits: shared.audits.clone(),
                stitching: shared.stitching.clone(),
                write_budget: shared.write_budget.clone(),
            },
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Storage audit counters of this gateway (see `crate::audit`).
    pub fn audit_stats(&self) -> Arc<crate::audit_stats::AuditStats> {
        self.inner.audits.clone()
    }

    /// The grid as of now (a later map change does not alter it).
    pub fn grid(&self) -> Arc<Grid> {
        self.inner.grid()
    }

    /// Adopt `map` if it is newer than the one in use; returns whether it
    /// was. Clients of nodes whose address did not change are kept.
    /// The owner's map-signing key, from the master key.
    pub fn owner_key(&self) -> std::sync::Arc<grid::signed_map::OwnerKey> {
        self.inner.master.owner_key()
    }

    /// Follow `map` if it is newer than the one in use and signed as a
    /// map must be (`grid::signed_map`): a node cannot steer a gateway's
    /// writes with a map it made up.
    pub fn set_map(&self, map: metadata::model::ClusterMap) -> bool {
        if let Err(e) =
            grid::signed_map::verify(&map, Some(&self.inner.master.owner_key().public()))
        {
            tracing::warn!(epoch = map.epoch, error = %e, "a node offered a cluster map not signed as it must be; ignored");
            return false;
        }
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
            grid::replicas::ROOT_PLACEMENT,
            self.inner.cfg.metadata_replicas,
        )?)
    }

    /// Records of kind `R` kept with the bucket directory (buckets,
    /// users, locks).
    pub(crate) fn root_table<R: Replicated>(&self) -> Result<Table<R>> {
        Ok(Table::new(
            self.grid(),
            self.root_replicas()?,
            self.inner.root_keys.clone(),
        ))
    }

    /// Records of kind `R` kept on `b`'s replicas (versions, uploads,
    /// parts).
    pub(crate) fn bucket_table<R: Replicated>(&self, b: &BucketHandle) -> Table<R> {
        Table::new(self.grid(), b.replicas.clone(), b.keys.clone())
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
        let key = self.bucket_record_key(name);
        Ok(self.root_table::<Bucket>()?.get(&key).await?)
    }

    /// Where the record of bucket `name` lives on the root replicas.
    fn bucket_record_key(&self, name: &str) -> [u8; NAME_HASH_LEN] {
        self.inner
            .root_keys
            .name_hash(NameKind::Bucket, name.as_bytes())
    }

    /// `bucket` resolved: looked up by a quorum read when named, as is
    /// when a handle.
    pub(crate) async fn bucket<'a>(
        &self,
        bucket: impl Into<BucketRef<'a>>,
    ) -> Result<Cow<'a, BucketHandle>> {
        match bucket.into() {
            BucketRef::Handle(b) => Ok(Cow::Borrowed(b)),
            BucketRef::Name(name) => self.open_bucket(name).await.map(Cow::Owned),
        }
    }

    /// Look `name` up (one quorum read of the bucket directory) for the
    /// calls of one request.
    pub async fn open_bucket(&self, name: &str) -> Result<BucketHandle> {
        match self.bucket_record(name).await? {
            Some(record) if !record.deleted => {
                let replicas = self.bucket_replicas(&record.id)?;
                let domain = self.inner.master.bucket_domain(&record.id);
                let keys = self.inner.master.bucket_record_keys(&record.id);
                Ok(BucketHandle {
                    record,
                    replicas,
                    domain,
                    keys,
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
        let key = self.bucket_record_key(&b.name);
        Ok(self.root_table::<Bucket>()?.put(&key, b).await?)
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
        let now = grid::clock::now_ms();
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
        let b = self.open_bucket(name).await?;
        Ok(self.bucket_info(&b))
    }

    /// What callers see of a bucket they hold a handle to.
    pub fn bucket_info(&self, b: &BucketHandle) -> BucketInfo {
        self.info(&b.record)
    }

    /// Every live bucket, by name. Records are keyed by name hashes, so
    /// they are sorted here (a grid has few buckets).
    pub async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let mut scan = self.root_table::<Bucket>()?.scan(Vec::new(), None);
        let mut out = Vec::new();
        while let Some((_, b)) = scan.next().await? {
            if !b.deleted {
                out.push(self.info(&b));
            }
        }
        scan.repair_stale();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Delete an empty bucket (refused while any version or delete marker
    /// is in it); unfinished multipart uploads in it are aborted.
    pub async fn delete_bucket(&self, name: &str) -> Result<()> {
        let b = self.bucket(name).await?;
        let (start, end) = layout::bucket_range(b.id());
        let mut scan = self
            .bucket_table::<ObjectVersion>(&b)
            .scan(start, end)
            .with_page(100);
        while let Some((_, v)) = scan.next().await? {
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
        let mut record = b.record.clone();
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

    /// What moving one request's chunks needs: the grid as of now, the
    /// tunables and the repair queue.
    pub(crate) fn chunk_io(&self) -> ChunkIo {
        ChunkIo {
            grid: self.grid(),
            cfg: self.inner.cfg.clone(),
            repair: RepairSink(self.inner.repair.clone()),
            owner: self.inner.master.owner_key(),
            write_budget: self.inner.write_budget.clone(),
        }
    }
}

impl Inner {
    pub(crate) fn grid(&self) -> Arc<Grid> {
        self.grid.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
