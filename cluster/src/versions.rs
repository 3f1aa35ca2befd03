//! Versions: finding one, writing one, deleting one, and S3's rules for
//! the "null" version of unversioned and suspended buckets.
//!
//! Every version, null or not, is its own record under its own clock-
//! ordered id, so concurrent writers never overwrite each other's
//! manifest: the newest id is the object. A null version replaces the
//! previous null version by purging it after the new one is written
//! (`settle_null`); two writers racing both run that step after their own
//! write, so whichever looks last sees both and keeps only the newest.

use crate::chunk_stream;
use crate::error::{Error, Result};
use crate::layout;
use crate::naming;
use crate::objects::version_text;
use crate::store::BucketRef;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use grid::table::Scan;
use metadata::model::{ObjectVersion, Referrer, VersioningState};

/// What a delete did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteResult {
    /// The version deleted or the delete marker created ("null" or hex);
    /// None when an unversioned object was simply removed.
    pub version_id: Option<String>,
    /// A delete marker was created, or the version deleted was one.
    pub delete_marker: bool,
}

pub(crate) fn referrer_of(b: &BucketHandle, v: &ObjectVersion) -> Referrer {
    Referrer {
        bucket_id: b.id().to_vec(),
        key_hash: b.key_hash(&v.key).to_vec(),
        version: v.version_id.clone(),
        part_number: 0,
    }
}

impl ObjectStore {
    pub(crate) async fn write_version(&self, b: &BucketHandle, v: &ObjectVersion) -> Result<()> {
        let vid = VersionId::from_slice(&v.version_id)
            .ok_or_else(|| Error::Internal("version id length".into()))?;
        let key = layout::version_key(b.id(), &b.key_hash(&v.key), &vid);
        Ok(self.bucket_table(b).put(&key, v).await?)
    }

    /// The versions of one object, newest first, from a read quorum.
    fn key_scan(&self, b: &BucketHandle, key: &str, page: u32) -> Scan<ObjectVersion> {
        let h = b.key_hash(key);
        self.bucket_table(b)
            .scan(
                layout::object_prefix(b.id(), &h),
                layout::after_object(b.id(), &h),
            )
            .with_page(page)
    }

    /// Every version of `key` that is not purged, newest first. Objects
    /// have few versions; the scan pages anyway.
    pub(crate) async fn versions_of(
        &self,
        b: &BucketHandle,
        key: &str,
    ) -> Result<Vec<ObjectVersion>> {
        let mut scan = self.key_scan(b, key, 64);
        let mut out = Vec::new();
        while let Some((_, v)) = scan.next().await? {
            if !v.purged {
                out.push(v);
            }
        }
        scan.repair_stale();
        if let Some(newest) = out
            .first()
            .and_then(|v| VersionId::from_slice(&v.version_id))
        {
            self.inner.hlc.observe(&newest);
        }
        Ok(out)
    }

    /// The newest version of `key` that is not purged (maybe a marker).
    pub(crate) async fn latest_version(
        &self,
        b: &BucketHandle,
        key: &str,
    ) -> Result<Option<ObjectVersion>> {
        let mut scan = self.key_scan(b, key, 8);
        while let Some((_, v)) = scan.next().await? {
            if !v.purged {
                scan.repair_stale();
                if let Some(id) = VersionId::from_slice(&v.version_id) {
                    self.inner.hlc.observe(&id);
                }
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// One version by id from a read quorum.
    async fn version_by_id(
        &self,
        b: &BucketHandle,
        key: &str,
        vid: &VersionId,
    ) -> Result<Option<ObjectVersion>> {
        let table_key = layout::version_key(b.id(), &b.key_hash(key), vid);
        let v = self
            .bucket_table::<ObjectVersion>(b)
            .get(&table_key)
            .await?;
        Ok(v.filter(|v| !v.purged))
    }

    /// The version a read names (None: the latest) and whether it is the
    /// latest. A delete marker is an error here, as in S3.
    pub(crate) async fn find_version(
        &self,
        b: &BucketHandle,
        key: &str,
        version: Option<&str>,
    ) -> Result<(ObjectVersion, bool)> {
        naming::check_object_key(key)?;
        let no_version = |version: &str| Error::NoSuchVersion {
            key: key.to_string(),
            version: version.to_string(),
        };
        let (v, latest) = match version {
            None => {
                let v = self
                    .latest_version(b, key)
                    .await?
                    .ok_or_else(|| Error::NoSuchKey {
                        bucket: b.name().to_string(),
                        key: key.to_string(),
                        delete_marker: None,
                    })?;
                if v.delete_marker {
                    return Err(Error::NoSuchKey {
                        bucket: b.name().to_string(),
                        key: key.to_string(),
                        delete_marker: Some(version_text(&v)),
                    });
                }
                (v, true)
            }
            Some("null") => {
                let all = self.versions_of(b, key).await?;
                let pos = all
                    .iter()
                    .position(|v| v.null_version)
                    .ok_or_else(|| no_version("null"))?;
                (all[pos].clone(), pos == 0)
            }
            Some(text) => {
                let vid = VersionId::from_text(text).ok_or_else(|| {
                    Error::InvalidArgument(format!("invalid version id {text:?}"))
                })?;
                let v = self
                    .version_by_id(b, key, &vid)
                    .await?
                    .ok_or_else(|| no_version(text))?;
                let latest = self
                    .latest_version(b, key)
                    .await?
                    .is_some_and(|l| l.version_id == v.version_id);
                (v, latest)
            }
        };
        if v.delete_marker {
            return Err(Error::DeleteMarker {
                key: key.to_string(),
                version: version_text(&v),
            });
        }
        Ok((v, latest))
    }

    /// Replace `v` by a tombstone, then drop its chunk references.
    pub(crate) async fn purge(&self, b: &BucketHandle, v: &ObjectVersion) -> Result<()> {
        let tomb = ObjectVersion {
            bucket: v.bucket.clone(),
            key: v.key.clone(),
            version_id: v.version_id.clone(),
            null_version: v.null_version,
            delete_marker: v.delete_marker,
            created_ms: v.created_ms,
            revision: self.revision(),
            purged: true,
            ..Default::default()
        };
        self.write_version(b, &tomb).await?;
        chunk_stream::remove_refs(&self.chunk_io(), &referrer_of(b, v), &v.chunks).await;
        Ok(())
    }

    /// Keep only the newest null version of `key`.
    pub(crate) async fn settle_null(&self, b: &BucketHandle, key: &str) -> Result<()> {
        let all = self.versions_of(b, key).await?;
        for old in all.iter().filter(|v| v.null_version).skip(1) {
            self.purge(b, old).await?;
        }
        Ok(())
    }

    async fn write_marker(&self, b: &BucketHandle, key: &str, null: bool) -> Result<ObjectVersion> {
        let vid = self.inner.hlc.next();
        let marker = ObjectVersion {
            bucket: b.name().to_string(),
            key: key.to_string(),
            version_id: vid.0.to_vec(),
            null_version: null,
            delete_marker: true,
            created_ms: vid.time_ms(),
            ..Default::default()
        };
        self.write_version(b, &marker).await?;
        if null {
            self.settle_null(b, key).await?;
        }
        Ok(marker)
    }

    /// S3 DeleteObject: with a version, remove that version; without one,
    /// remove the object (unversioned) or add a delete marker.
    pub async fn delete_object(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        version: Option<&str>,
    ) -> Result<DeleteResult> {
        naming::check_object_key(key)?;
        let b = self.bucket(bucket).await?;
        match version {
            Some(text) => {
                let targets: Vec<ObjectVersion> = if text == "null" {
                    self.versions_of(&b, key)
                        .await?
                        .into_iter()
                        .filter(|v| v.null_version)
                        .collect()
                } else {
                    let vid = VersionId::from_text(text).ok_or_else(|| {
                        Error::InvalidArgument(format!("invalid version id {text:?}"))
                    })?;
                    self.version_by_id(&b, key, &vid)
                        .await?
                        .into_iter()
                        .collect()
                };
                let mut marker = false;
                for v in &targets {
                    marker |= v.delete_marker;
                    self.purge(&b, v).await?;
                }
                Ok(DeleteResult {
                    version_id: Some(text.to_string()),
                    delete_marker: marker,
                })
            }
            None => match b.versioning() {
                VersioningState::Unversioned => {
                    for v in self.versions_of(&b, key).await? {
                        self.purge(&b, &v).await?;
                    }
                    Ok(DeleteResult::default())
                }
                VersioningState::Enabled => {
                    let m = self.write_marker(&b, key, false).await?;
                    Ok(DeleteResult {
                        version_id: Some(version_text(&m)),
                        delete_marker: true,
                    })
                }
                VersioningState::Suspended => {
                    self.write_marker(&b, key, true).await?;
                    Ok(DeleteResult {
                        version_id: Some("null".into()),
                        delete_marker: true,
                    })
                }
            },
        }
    }

    /// Replace the tags of a version (S3 PutObjectTagging): the manifest is
    /// rewritten in place under the same version id.
    pub async fn set_object_tags(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        key: &str,
        version: Option<&str>,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<String> {
        let b = self.bucket(bucket).await?;
        let (mut v, _) = self.find_version(&b, key, version).await?;
        v.tags = tags;
        // A rewrite outranks the record it replaces on every replica.
        v.revision = self.revision();
        self.write_version(&b, &v).await?;
        Ok(version_text(&v))
    }
}
