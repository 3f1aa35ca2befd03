//! Listing objects and versions: prefix, delimiter (common prefixes),
//! markers and page sizes as S3 defines them, read from a quorum of the
//! bucket's replicas one page at a time (memory does not grow with the
//! bucket).

use crate::error::{Error, Result};
use crate::layout;
use crate::objects::{info_of, version_text, ObjectInfo};
use crate::store::BucketRef;
use crate::store::{BucketHandle, ObjectStore};
use crate::version_id::VersionId;
use metadata::model::ObjectVersion;

/// Most keys one page may return (S3's limit).
pub const MAX_KEYS: usize = 1000;

#[derive(Debug, Clone, Default)]
pub struct ListObjectsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Start after this key (ListObjects' marker, V2's start-after or the
    /// decoded continuation token).
    pub start_after: Option<String>,
    /// Clamped to 1000.
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListObjectsPage {
    pub objects: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    /// The last key or common prefix returned: where the next page starts.
    pub next_start_after: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: Option<String>,
    pub version_id_marker: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default)]
pub struct ListVersionsPage {
    /// Versions and delete markers, by key, newest first within a key.
    pub versions: Vec<ObjectInfo>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_key_marker: Option<String>,
    pub next_version_id_marker: Option<String>,
}

/// The common prefix `key` rolls up into, if any.
pub(crate) fn common_prefix(prefix: &str, delimiter: Option<&str>, key: &str) -> Option<String> {
    let d = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.get(prefix.len()..)?;
    let i = rest.find(d)?;
    Some(format!("{prefix}{}", &rest[..i + d.len()]))
}

/// Where a listing resumes after `marker`: past every key under it when it
/// is a common prefix (a key ending with the delimiter always rolls up
/// into one), else just past it.
fn resume_after(
    b: &BucketHandle,
    prefix: &str,
    delimiter: Option<&str>,
    marker: &str,
) -> Option<Vec<u8>> {
    if common_prefix(prefix, delimiter, marker).as_deref() == Some(marker) {
        layout::after_prefix(b.id(), marker)
    } else {
        Some(layout::after_object(b.id(), marker))
    }
}

impl ObjectStore {
    pub async fn list_objects(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        params: &ListObjectsParams,
    ) -> Result<ListObjectsPage> {
        let b = self.bucket(bucket).await?;
        let max = params.max_keys.min(MAX_KEYS);
        let mut page = ListObjectsPage::default();
        if max == 0 {
            return Ok(page);
        }
        let prefix = params.prefix.as_str();
        let delimiter = params.delimiter.as_deref();
        let (mut start, end) = layout::bucket_range(b.id(), prefix);
        if let Some(m) = &params.start_after {
            match resume_after(&b, prefix, delimiter, m) {
                Some(after) => start = start.max(after),
                None => return Ok(page),
            }
        }
        let mut scan = self
            .bucket_table::<ObjectVersion>(&b)
            .scan(start, end)
            .with_page((max as u32 + 1).clamp(16, 1000));
        let mut decided: Option<String> = None;
        let mut count = 0;
        while let Some((raw, v)) = scan.next().await? {
            let Some((key, _)) = layout::parse_version_key(b.id(), &raw) else {
                return Err(Error::Corrupt("version key".into()));
            };
            if decided.as_deref() == Some(key.as_str()) {
                continue;
            }
            if v.purged {
                continue;
            }
            decided = Some(key.clone());
            if v.delete_marker {
                continue;
            }
            if count == max {
                page.is_truncated = true;
                break;
            }
            count += 1;
            if let Some(cp) = common_prefix(prefix, delimiter, &key) {
                page.next_start_after = Some(cp.clone());
                match layout::after_prefix(b.id(), &cp) {
                    Some(next) => scan.seek(next),
                    None => {
                        page.common_prefixes.push(cp);
                        break;
                    }
                }
                page.common_prefixes.push(cp);
                decided = None;
            } else {
                page.next_start_after = Some(key);
                page.objects.push(info_of(&v, true));
            }
        }
        scan.repair_stale();
        if !page.is_truncated {
            page.next_start_after = None;
        }
        Ok(page)
    }

    pub async fn list_object_versions(
        &self,
        bucket: impl Into<BucketRef<'_>>,
        params: &ListVersionsParams,
    ) -> Result<ListVersionsPage> {
        let b = self.bucket(bucket).await?;
        let max = params.max_keys.min(MAX_KEYS);
        let mut page = ListVersionsPage::default();
        if max == 0 {
            return Ok(page);
        }
        let prefix = params.prefix.as_str();
        let delimiter = params.delimiter.as_deref();
        let (mut start, end) = layout::bucket_range(b.id(), prefix);
        // The key whose newest version was already listed (is_latest).
        let mut seen_key: Option<String> = None;
        if let Some(km) = &params.key_marker {
            let after = match params
                .version_id_marker
                .as_deref()
                .filter(|v| !v.is_empty())
            {
                Some(vm) => {
                    let vid = if vm == "null" {
                        self.versions_of(&b, km)
                            .await?
                            .iter()
                            .find(|v| v.null_version)
                            .and_then(|v| VersionId::from_slice(&v.version_id))
                    } else {
                        VersionId::from_text(vm)
                    };
                    let vid = vid.ok_or_else(|| {
                        Error::InvalidArgument(format!("invalid version id marker {vm:?}"))
                    })?;
                    seen_key = Some(km.clone());
                    let mut k = layout::version_key(b.id(), km, &vid);
                    // The smallest key greater than that version's.
                    k.push(0);
                    Some(k)
                }
                None => resume_after(&b, prefix, delimiter, km),
            };
            match after {
                Some(after) => start = start.max(after),
                None => return Ok(page),
            }
        }
        let mut scan = self
            .bucket_table::<ObjectVersion>(&b)
            .scan(start, end)
            .with_page((max as u32 + 1).clamp(16, 1000));
        let mut count = 0;
        while let Some((raw, v)) = scan.next().await? {
            let Some((key, _)) = layout::parse_version_key(b.id(), &raw) else {
                return Err(Error::Corrupt("version key".into()));
            };
            if v.purged {
                continue;
            }
            if count == max {
                page.is_truncated = true;
                break;
            }
            count += 1;
            if let Some(cp) = common_prefix(prefix, delimiter, &key) {
                page.next_key_marker = Some(cp.clone());
                page.next_version_id_marker = None;
                let next = layout::after_prefix(b.id(), &cp);
                page.common_prefixes.push(cp);
                match next {
                    Some(next) => scan.seek(next),
                    None => break,
                }
                continue;
            }
            let is_latest = seen_key.as_deref() != Some(key.as_str());
            seen_key = Some(key.clone());
            page.next_key_marker = Some(key);
            page.next_version_id_marker = Some(version_text(&v));
            page.versions.push(info_of(&v, is_latest));
        }
        scan.repair_stale();
        if !page.is_truncated {
            page.next_key_marker = None;
            page.next_version_id_marker = None;
        }
        Ok(page)
    }
}
