//! The WebDAV namespace over the object layer: `/` lists the caller's
//! buckets, `/bucket/a/b/` is the key prefix `a/b/` (an empty folder is the
//! marker object `a/b/`, as S3 tools make them), `/bucket/a/b/c` is the
//! object `a/b/c`. Every call maps to `cluster::ObjectStore`, so what one
//! protocol writes the other sees at once.

use super::meta::{fs_error, Meta};
use super::props;
use super::writer::{StagedWriter, StreamWriter};
use bytes::Bytes;
use cluster::{
    BucketInfo, ByteRange, CopyOptions, Error, GetOptions, ListObjectsParams, ObjectBody,
    ObjectInfo, ObjectStore, PutOptions,
};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, DavProp, FsError, FsFuture, FsResult, FsStream,
    GuardedFileSystem, OpenOptions, ReadDirMeta,
};
use futures_util::{FutureExt, StreamExt};
use http::StatusCode;
use std::collections::VecDeque;
use std::io::SeekFrom;

/// Who is asking: the access key that passed Basic authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub access_key: String,
    pub admin: bool,
}

/// The content type folder markers get (what rclone and the S3 console
/// use for them).
pub(crate) const FOLDER_TYPE: &str = "application/x-directory";

/// Listing page size: one page of entries is what a PROPFIND holds.
const PAGE: usize = 1000;

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Root,
    Bucket(String),
    /// `key` has no trailing slash; a folder's prefix is `key/`.
    Entry {
        bucket: String,
        key: String,
    },
}

impl Target {
    pub(crate) fn of(path: &DavPath) -> FsResult<Target> {
        let text = std::str::from_utf8(path.as_bytes()).map_err(|_| FsError::NotFound)?;
        let mut parts = text.trim_matches('/').splitn(2, '/');
        let bucket = parts.next().unwrap_or_default();
        if bucket.is_empty() {
            return Ok(Target::Root);
        }
        match parts.next().map(|k| k.trim_end_matches('/')) {
            None | Some("") => Ok(Target::Bucket(bucket.to_string())),
            Some(key) => Ok(Target::Entry {
                bucket: bucket.to_string(),
                key: key.to_string(),
            }),
        }
    }
}

struct Entry {
    name: Vec<u8>,
    meta: Meta,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(self.meta.clone());
        async move { Ok(m) }.boxed()
    }

    fn is_dir(&self) -> FsFuture<'_, bool> {
        let d = self.meta.dir;
        async move { Ok(d) }.boxed()
    }
}

/// The filesystem: one per gateway, the caller comes with each call.
#[derive(Clone)]
pub struct GridFs {
    store: ObjectStore,
}

/// What sits at a bucket/key.
pub(crate) enum Found {
    File(ObjectInfo),
    /// A folder, with its marker object if it has one.
    Folder(Option<ObjectInfo>),
    Nothing,
}

impl GridFs {
    pub fn new(store: ObjectStore) -> Self {
        Self { store }
    }

    /// The bucket, if the caller may use it. Someone else's bucket is
    /// reported as missing, as it is absent from the caller's root.
    async fn bucket(&self, name: &str, caller: &Caller) -> FsResult<BucketInfo> {
        let b = self.store.head_bucket(name).await.map_err(fs_error)?;
        if caller.admin || b.owner == caller.access_key {
            Ok(b)
        } else {
            Err(FsError::NotFound)
        }
    }

    async fn head(&self, bucket: &str, key: &str) -> FsResult<Option<ObjectInfo>> {
        match self
            .store
            .head_object(bucket, key, &GetOptions::default())
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(Error::NoSuchKey { .. }) | Err(Error::InvalidName(_)) => Ok(None),
            Err(e) => Err(fs_error(e)),
        }
    }

    /// Whether anything is stored under `prefix`.
    async fn has_children(&self, bucket: &str, prefix: &str) -> FsResult<bool> {
        let page = self
            .store
            .list_objects(
                bucket,
                &ListObjectsParams {
                    prefix: prefix.to_string(),
                    delimiter: None,
                    start_after: None,
                    max_keys: 1,
                },
            )
            .await
            .map_err(fs_error)?;
        Ok(!page.objects.is_empty() || !page.common_prefixes.is_empty())
    }

    pub(crate) async fn find(&self, bucket: &str, key: &str) -> FsResult<Found> {
        if let Some(i) = self.head(bucket, key).await? {
            return Ok(Found::File(i));
        }
        let prefix = format!("{key}/");
        if let Some(m) = self.head(bucket, &prefix).await? {
            return Ok(Found::Folder(Some(m)));
        }
        if self.has_children(bucket, &prefix).await? {
            return Ok(Found::Folder(None));
        }
        Ok(Found::Nothing)
    }

    /// The parent of `key` must be a folder (or the bucket) for anything
    /// to be created at `key` (WebDAV has no implicit parents: 409).
    async fn parent_is_folder(&self, bucket: &str, key: &str) -> FsResult<bool> {
        match key.rsplit_once('/') {
            None => Ok(true),
            Some((parent, _)) => Ok(matches!(self.find(bucket, parent).await?, Found::Folder(_))),
        }
    }

    async fn metadata_of(&self, path: &DavPath, caller: &Caller) -> FsResult<Meta> {
        match Target::of(path)? {
            Target::Root => Ok(Meta::dir(0)),
            Target::Bucket(b) => Ok(Meta::dir(self.bucket(&b, caller).await?.created_ms)),
            Target::Entry { bucket, key } => {
                let b = self.bucket(&bucket, caller).await?;
                match self.find(&bucket, &key).await? {
                    Found::File(i) => Ok(Meta::file(&i)),
                    Found::Folder(Some(m)) => Ok(Meta::dir(m.last_modified_ms)),
                    Found::Folder(None) => Ok(Meta::dir(b.created_ms)),
                    Found::Nothing => Err(FsError::NotFound),
                }
            }
        }
    }

    async fn list_root(&self, caller: &Caller) -> FsResult<FsStream<Box<dyn DavDirEntry>>> {
        let buckets = self.store.list_buckets().await.map_err(fs_error)?;
        let entries: Vec<FsResult<Box<dyn DavDirEntry>>> = buckets
            .into_iter()
            .filter(|b| caller.admin || b.owner == caller.access_key)
            .map(|b| {
                let e: Box<dyn DavDirEntry> = Box::new(Entry {
                    name: b.name.into_bytes(),
                    meta: Meta::dir(b.created_ms),
                });
                Ok(e)
            })
            .collect();
        Ok(futures_util::stream::iter(entries).boxed())
    }

    /// A folder's entries, listed one page at a time as the stream is
    /// read (memory does not grow with the folder).
    fn list_folder(
        &self,
        bucket: String,
        prefix: String,
        folder_ms: u64,
    ) -> FsStream<Box<dyn DavDirEntry>> {
        struct State {
            store: ObjectStore,
            bucket: String,
            prefix: String,
            folder_ms: u64,
            next: Option<String>,
            buf: VecDeque<Entry>,
            done: bool,
        }
        let state = State {
            store: self.store.clone(),
            bucket,
            prefix,
            folder_ms,
            next: None,
            buf: VecDeque::new(),
            done: false,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(e) = s.buf.pop_front() {
                    let e: Box<dyn DavDirEntry> = Box::new(e);
                    return Some((Ok(e), s));
                }
                if s.done {
                    return None;
                }
                let params = ListObjectsParams {
                    prefix: s.prefix.clone(),
                    delimiter: Some("/".into()),
                    start_after: s.next.take(),
                    max_keys: PAGE,
                };
                let page = match s.store.list_objects(&s.bucket, &params).await {
                    Ok(p) => p,
                    Err(e) => {
                        s.done = true;
                        return Some((Err(fs_error(e)), s));
                    }
                };
                for o in &page.objects {
                    let name = &o.key[s.prefix.len()..];
                    // The folder's own marker is the folder, not an entry.
                    if !name.is_empty() {
                        s.buf.push_back(Entry {
                            name: name.as_bytes().to_vec(),
                            meta: Meta::file(o),
                        });
                    }
                }
                for cp in &page.common_prefixes {
                    let name = cp[s.prefix.len()..].trim_end_matches('/');
                    // "a//b" makes a folder with no name: not addressable.
                    if !name.is_empty() {
                        s.buf.push_back(Entry {
                            name: name.as_bytes().to_vec(),
                            meta: Meta::dir(s.folder_ms),
                        });
                    }
                }
                s.next = page.next_start_after;
                s.done = !page.is_truncated || s.next.is_none();
            }
        })
        .boxed()
    }

    async fn open_file(
        &self,
        path: &DavPath,
        oo: OpenOptions,
        caller: &Caller,
    ) -> FsResult<Box<dyn DavFile>> {
        let Target::Entry { bucket, key } = Target::of(path)? else {
            return Err(FsError::Forbidden);
        };
        self.bucket(&bucket, caller).await?;
        if path.is_collection() {
            return Err(FsError::Forbidden);
        }
        let existing = match self.find(&bucket, &key).await? {
            Found::File(i) => Some(i),
            Found::Folder(_) => return Err(FsError::Forbidden),
            Found::Nothing => None,
        };
        if !oo.write && !oo.append {
            let info = existing.ok_or(FsError::NotFound)?;
            return Ok(Box::new(ReadFile::new(self.store.clone(), bucket, info)));
        }
        match &existing {
            Some(_) if oo.create_new => return Err(FsError::Exists),
            None if !oo.create && !oo.create_new => return Err(FsError::NotFound),
            None if !self.parent_is_folder(&bucket, &key).await? => return Err(FsError::NotFound),
            _ => {}
        }
        // Dead properties belong to the resource, not to one body of it.
        let mut user_metadata = std::collections::BTreeMap::new();
        if let Some(p) = existing
            .as_ref()
            .and_then(|i| i.user_metadata.get(props::META_KEY))
        {
            user_metadata.insert(props::META_KEY.to_string(), p.clone());
        }
        let opts = PutOptions {
            content_type: Some(
                mime_guess::from_path(&key)
                    .first_or_octet_stream()
                    .to_string(),
            ),
            user_metadata,
            ..PutOptions::default()
        };
        // Only a truncating open (a plain PUT) writes front to back; any
        // other may seek, so it is staged.
        if oo.truncate {
            Ok(Box::new(StreamWriter::start(
                self.store.clone(),
                bucket,
                key,
                opts,
                oo.size,
            )))
        } else {
            let mut w = StagedWriter::new(self.store.clone(), bucket, key, opts, existing)
                .map_err(|_| FsError::GeneralFailure)?;
            if oo.append {
                w.seek(SeekFrom::End(0)).await?;
            }
            Ok(Box::new(w))
        }
    }

    async fn mkdir(&self, path: &DavPath, caller: &Caller) -> FsResult<()> {
        match Target::of(path)? {
            Target::Root => Err(FsError::Exists),
            Target::Bucket(b) => {
                self.store
                    .create_bucket(&b, &caller.access_key, None)
                    .await
                    .map_err(fs_error)?;
                Ok(())
            }
            Target::Entry { bucket, key } => {
                self.bucket(&bucket, caller).await?;
                if !matches!(self.find(&bucket, &key).await?, Found::Nothing) {
                    return Err(FsError::Exists);
                }
                if !self.parent_is_folder(&bucket, &key).await? {
                    return Err(FsError::NotFound);
                }
                self.put_marker(&bucket, &key, Default::default()).await
            }
        }
    }

    pub(crate) async fn put_marker(
        &self,
        bucket: &str,
        key: &str,
        user_metadata: std::collections::BTreeMap<String, String>,
    ) -> FsResult<()> {
        let empty = futures_util::stream::empty::<Result<Bytes, std::io::Error>>();
        self.store
            .put_object(
                bucket,
                &format!("{key}/"),
                empty,
                PutOptions {
                    content_type: Some(FOLDER_TYPE.into()),
                    user_metadata,
                    ..PutOptions::default()
                },
            )
            .await
            .map_err(fs_error)?;
        Ok(())
    }

    async fn rmdir(&self, path: &DavPath, caller: &Caller) -> FsResult<()> {
        match Target::of(path)? {
            Target::Root => Err(FsError::Forbidden),
            Target::Bucket(b) => {
                self.bucket(&b, caller).await?;
                match self.store.delete_bucket(&b).await {
                    Err(Error::BucketNotEmpty(_)) => Err(FsError::Exists),
                    r => r.map_err(fs_error),
                }
            }
            Target::Entry { bucket, key } => {
                self.bucket(&bucket, caller).await?;
                match self.find(&bucket, &key).await? {
                    Found::Folder(Some(_)) => {
                        let prefix = format!("{key}/");
                        self.store
                            .delete_object(&bucket, &prefix, None)
                            .await
                            .map_err(fs_error)?;
                        Ok(())
                    }
                    // A folder without a marker exists only through what is
                    // under it: once that is deleted, so is the folder.
                    Found::Folder(None) | Found::Nothing => Ok(()),
                    Found::File(_) => Err(FsError::Forbidden),
                }
            }
        }
    }

    async fn rmfile(&self, path: &DavPath, caller: &Caller) -> FsResult<()> {
        let Target::Entry { bucket, key } = Target::of(path)? else {
            return Err(FsError::Forbidden);
        };
        self.bucket(&bucket, caller).await?;
        match self.find(&bucket, &key).await? {
            Found::File(_) => {
                self.store
                    .delete_object(&bucket, &key, None)
                    .await
                    .map_err(fs_error)?;
                Ok(())
            }
            Found::Folder(_) => Err(FsError::Forbidden),
            Found::Nothing => Err(FsError::NotFound),
        }
    }

    /// Two entries a copy or move goes between, both the caller's.
    async fn pair(
        &self,
        from: &DavPath,
        to: &DavPath,
        caller: &Caller,
    ) -> FsResult<((String, String), (String, String))> {
        let (
            Target::Entry {
                bucket: fb,
                key: fk,
            },
            Target::Entry {
                bucket: tb,
                key: tk,
            },
        ) = (Target::of(from)?, Target::of(to)?)
        else {
            // Buckets are created and removed, not renamed or copied whole.
            return Err(FsError::Forbidden);
        };
        self.bucket(&fb, caller).await?;
        if tb != fb {
            self.bucket(&tb, caller).await?;
        }
        if !self.parent_is_folder(&tb, &tk).await? {
            return Err(FsError::NotFound);
        }
        Ok(((fb, fk), (tb, tk)))
    }

    /// Server-side copy: a new manifest naming the same chunks (inside one
    /// bucket no data moves; across buckets the data is re-sealed under the
    /// destination's key as it streams through the gateway).
    async fn copy_key(&self, fb: &str, fk: &str, tb: &str, tk: &str) -> FsResult<()> {
        self.store
            .copy_object(fb, fk, tb, tk, CopyOptions::default())
            .await
            .map_err(fs_error)?;
        Ok(())
    }

    async fn rename_entry(&self, from: &DavPath, to: &DavPath, caller: &Caller) -> FsResult<()> {
        let ((fb, fk), (tb, tk)) = self.pair(from, to, caller).await?;
        match self.find(&fb, &fk).await? {
            Found::Nothing => Err(FsError::NotFound),
            Found::File(_) => {
                self.copy_key(&fb, &fk, &tb, &tk).await?;
                self.store
                    .delete_object(&fb, &fk, None)
                    .await
                    .map_err(fs_error)?;
                Ok(())
            }
            Found::Folder(_) => {
                let (src, dst) = (format!("{fk}/"), format!("{tk}/"));
                if fb == tb && dst.starts_with(&src) {
                    return Err(FsError::Forbidden);
                }
                self.move_prefix(&fb, &src, &tb, &dst).await
            }
        }
    }

    /// Move every key under `src` to `dst`, a page at a time: each page is
    /// copied (manifests) before its sources are deleted, so a failure
    /// leaves every object in at least one place.
    async fn move_prefix(&self, fb: &str, src: &str, tb: &str, dst: &str) -> FsResult<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_objects(
                    fb,
                    &ListObjectsParams {
                        prefix: src.to_string(),
                        delimiter: None,
                        start_after: after.take(),
                        max_keys: PAGE,
                    },
                )
                .await
                .map_err(fs_error)?;
            for o in &page.objects {
                let rest = &o.key[src.len()..];
                self.copy_key(fb, &o.key, tb, &format!("{dst}{rest}"))
                    .await?;
            }
            for o in &page.objects {
                self.store
                    .delete_object(fb, &o.key, None)
                    .await
                    .map_err(fs_error)?;
            }
            // Deleted keys no longer list: the next page starts afresh,
            // after the last key only when nothing was deleted.
            if !page.is_truncated {
                return Ok(());
            }
            if page.objects.is_empty() {
                after = page.next_start_after;
            }
        }
    }

    async fn copy_entry(&self, from: &DavPath, to: &DavPath, caller: &Caller) -> FsResult<()> {
        let ((fb, fk), (tb, tk)) = self.pair(from, to, caller).await?;
        match self.find(&fb, &fk).await? {
            Found::File(_) => self.copy_key(&fb, &fk, &tb, &tk).await,
            Found::Folder(_) => Err(FsError::Forbidden),
            Found::Nothing => Err(FsError::NotFound),
        }
    }

    async fn props_of(&self, path: &DavPath, caller: &Caller) -> FsResult<Vec<DavProp>> {
        match Target::of(path)? {
            Target::Entry { bucket, key } => {
                self.bucket(&bucket, caller).await?;
                match self.find(&bucket, &key).await? {
                    Found::File(i) | Found::Folder(Some(i)) => props::decode(&i.user_metadata),
                    Found::Folder(None) => Ok(Vec::new()),
                    Found::Nothing => Err(FsError::NotFound),
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn patch(
        &self,
        path: &DavPath,
        patch: Vec<(bool, DavProp)>,
        caller: &Caller,
    ) -> FsResult<Vec<(StatusCode, DavProp)>> {
        let Target::Entry { bucket, key } = Target::of(path)? else {
            return Err(FsError::Forbidden);
        };
        self.bucket(&bucket, caller).await?;
        let found = self.find(&bucket, &key).await?;
        let current = match &found {
            Found::File(i) | Found::Folder(Some(i)) => props::decode(&i.user_metadata)?,
            Found::Folder(None) => Vec::new(),
            Found::Nothing => return Err(FsError::NotFound),
        };
        let (next, statuses) = props::apply(current, patch);
        let encoded = props::encode(&next)?;
        match found {
            Found::File(i) | Found::Folder(Some(i)) => {
                let mut md = i.user_metadata.clone();
                match encoded {
                    Some(v) => md.insert(props::META_KEY.to_string(), v),
                    None => md.remove(props::META_KEY),
                };
                // A copy onto itself with new metadata: a new manifest over
                // the same chunks (what S3's metadata REPLACE does).
                self.store
                    .copy_object(
                        &bucket,
                        &i.key,
                        &bucket,
                        &i.key,
                        CopyOptions {
                            replace_metadata: Some((Some(i.content_type.clone()), md)),
                            ..CopyOptions::default()
                        },
                    )
                    .await
                    .map_err(fs_error)?;
            }
            Found::Folder(None) => {
                let mut md = std::collections::BTreeMap::new();
                if let Some(v) = encoded {
                    md.insert(props::META_KEY.to_string(), v);
                }
                self.put_marker(&bucket, &key, md).await?;
            }
            Found::Nothing => return Err(FsError::NotFound),
        }
        Ok(statuses)
    }
}

impl GuardedFileSystem<Caller> for GridFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
        caller: &'a Caller,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        self.open_file(path, options, caller).boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
        caller: &'a Caller,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            match Target::of(path)? {
                Target::Root => self.list_root(caller).await,
                Target::Bucket(b) => {
                    let info = self.bucket(&b, caller).await?;
                    Ok(self.list_folder(b, String::new(), info.created_ms))
                }
                Target::Entry { bucket, key } => {
                    let meta = self.metadata_of(path, caller).await?;
                    if !meta.dir {
                        return Err(FsError::Forbidden);
                    }
                    Ok(self.list_folder(bucket, format!("{key}/"), meta.modified_ms))
                }
            }
        }
        .boxed()
    }

    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        caller: &'a Caller,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let m: Box<dyn DavMetaData> = Box::new(self.metadata_of(path, caller).await?);
            Ok(m)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath, caller: &'a Caller) -> FsFuture<'a, ()> {
        self.mkdir(path, caller).boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath, caller: &'a Caller) -> FsFuture<'a, ()> {
        self.rmdir(path, caller).boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath, caller: &'a Caller) -> FsFuture<'a, ()> {
        self.rmfile(path, caller).boxed()
    }

    fn rename<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        caller: &'a Caller,
    ) -> FsFuture<'a, ()> {
        self.rename_entry(from, to, caller).boxed()
    }

    fn copy<'a>(
        &'a self,
        from: &'a DavPath,
        to: &'a DavPath,
        caller: &'a Caller,
    ) -> FsFuture<'a, ()> {
        self.copy_entry(from, to, caller).boxed()
    }

    fn have_props<'a>(
        &'a self,
        path: &'a DavPath,
        _caller: &'a Caller,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        let entry = matches!(Target::of(path), Ok(Target::Entry { .. }));
        async move { entry }.boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
        caller: &'a Caller,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        self.patch(path, patch, caller).boxed()
    }

    fn get_props<'a>(
        &'a self,
        path: &'a DavPath,
        do_content: bool,
        caller: &'a Caller,
    ) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let mut all = self.props_of(path, caller).await?;
            if !do_content {
                for p in &mut all {
                    p.xml = None;
                }
            }
            Ok(all)
        }
        .boxed()
    }

    fn get_prop<'a>(
        &'a self,
        path: &'a DavPath,
        prop: DavProp,
        caller: &'a Caller,
    ) -> FsFuture<'a, Vec<u8>> {
        async move {
            self.props_of(path, caller)
                .await?
                .into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }
}

/// A file open for reading: the object's body streamed from the current
/// position, reopened (as a ranged read of the same version) after a seek.
pub(crate) struct ReadFile {
    store: ObjectStore,
    bucket: String,
    info: ObjectInfo,
    pos: u64,
    /// In a mutex only because dav-server's files must be `Sync`; it is
    /// reached through `get_mut`, never locked.
    body: Option<std::sync::Mutex<ObjectBody>>,
    pending: Bytes,
}

impl std::fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFile")
            .field("bucket", &self.bucket)
            .field("key", &self.info.key)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ReadFile {
    fn new(store: ObjectStore, bucket: String, info: ObjectInfo) -> Self {
        Self {
            store,
            bucket,
            info,
            pos: 0,
            body: None,
            pending: Bytes::new(),
        }
    }

    async fn read(&mut self, count: usize) -> FsResult<Bytes> {
        if self.pos >= self.info.size || count == 0 {
            return Ok(Bytes::new());
        }
        if self.pending.is_empty() {
            if self.body.is_none() {
                let opts = GetOptions {
                    // The version stat'ed is the one read, even after a seek.
                    version: Some(self.info.version_id.clone()),
                    range: Some(ByteRange::From(self.pos)),
                    ..GetOptions::default()
                };
                let r = self
                    .store
                    .get_object(&self.bucket, &self.info.key, opts)
                    .await
                    .map_err(fs_error)?;
                self.body = Some(std::sync::Mutex::new(r.body));
            }
            let Some(Ok(body)) = self.body.as_mut().map(|m| m.get_mut()) else {
                return Err(FsError::GeneralFailure);
            };
            match body.next().await {
                Some(Ok(b)) => self.pending = b,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, key = %self.info.key, "WebDAV read failed");
                    self.body = None;
                    return Err(FsError::GeneralFailure);
                }
                None => return Ok(Bytes::new()),
            }
        }
        let n = count.min(self.pending.len());
        let out = self.pending.split_to(n);
        self.pos += n as u64;
        Ok(out)
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta::file(&self.info));
        async move { Ok(m) }.boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn bytes::Buf + Send>) -> FsFuture<'_, ()> {
        async move { Err(FsError::Forbidden) }.boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        async move { Err(FsError::Forbidden) }.boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        self.read(count).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            let size = self.info.size as i128;
            let target = match pos {
                SeekFrom::Start(n) => n as i128,
                SeekFrom::End(d) => size + d as i128,
                SeekFrom::Current(d) => self.pos as i128 + d as i128,
            };
            let target = u64::try_from(target).map_err(|_| FsError::GeneralFailure)?;
            if target != self.pos {
                self.pos = target;
                self.body = None;
                self.pending = Bytes::new();
            }
            Ok(target)
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> Target {
        Target::of(&DavPath::new(p).unwrap()).unwrap()
    }

    #[test]
    fn paths_name_buckets_and_keys() {
        assert_eq!(t("/"), Target::Root);
        assert_eq!(t("/b"), Target::Bucket("b".into()));
        assert_eq!(t("/b/"), Target::Bucket("b".into()));
        assert_eq!(
            t("/b/dir/"),
            Target::Entry {
                bucket: "b".into(),
                key: "dir".into()
            }
        );
        assert_eq!(
            t("/b/a%20b/%C3%A9t%C3%A9.txt"),
            Target::Entry {
                bucket: "b".into(),
                key: "a b/été.txt".into()
            }
        );
    }
}
