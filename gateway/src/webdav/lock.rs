//! WebDAV locks kept in the cluster (`ObjectStore::put_lock` and friends),
//! so every gateway process sees every lock. The conflict rules are
//! dav-server's in-memory lock system's (RFC 4918 §6-7), applied to the
//! lock records listed from a read quorum; a lock is taken by writing it
//! and then listing again (see `cluster::locks` for why at most one of
//! two racing gateways keeps its lock).
//!
//! The lock system cannot report an error to dav-server, so when the
//! cluster cannot be read it answers as if the resource were locked by
//! someone else (423): refusing a write is safe, ignoring a lock is not.

use cluster::locks::Lock;
use cluster::ObjectStore;
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures_util::FutureExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use xmltree::Element;

/// Longest lock granted (also for "Infinite"): a client that vanished
/// holds a resource at most this long. Clients refresh well within it.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone)]
pub struct GridLs {
    store: ObjectStore,
}

impl std::fmt::Debug for GridLs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GridLs")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `/seg/seg` (no trailing slash; "" for the root): what lock records are
/// keyed by, so `/a/b` and `/a/b/` are one resource.
fn norm(path: &DavPath) -> String {
    let text = String::from_utf8_lossy(path.as_bytes());
    let mut out = String::new();
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(seg);
    }
    out
}

/// The part of the key space a check on `path` must read: the path's
/// bucket (locks never span buckets, except on the root).
fn scope(p: &str) -> String {
    match p[1.min(p.len())..].find('/') {
        Some(i) => p[..i + 1].to_string(),
        None => p.to_string(),
    }
}

/// Is `a` the same as or an ancestor of `b` (segment-wise)?
fn covers(a: &str, b: &str) -> bool {
    a.is_empty() || b == a || (b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'/'))
}

/// The lock as dav-server shows it (lockdiscovery). `at` stands in for a
/// record whose path cannot be a URL path (never written by this code).
fn to_dav(l: &Lock, at: &DavPath) -> DavLock {
    let encoded: String = if l.path.is_empty() {
        "/".into()
    } else {
        l.path
            .split('/')
            .map(|seg| urlencoding::encode(seg).into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    let path = DavPath::new(&encoded).unwrap_or_else(|_| at.clone());
    let owner = if l.owner_xml.is_empty() {
        None
    } else {
        Element::parse(l.owner_xml.as_slice()).ok().map(Box::new)
    };
    DavLock {
        token: l.token.clone(),
        path: Box::new(path),
        principal: (!l.principal.is_empty()).then(|| l.principal.clone()),
        owner,
        timeout_at: Some(UNIX_EPOCH + Duration::from_millis(l.expires_ms)),
        timeout: Some(Duration::from_secs(l.timeout_secs)),
        shared: l.shared,
        deep: l.deep,
    }
}

/// Stand-in for "a lock we could not read": the answer when the cluster
/// does not answer (the request is then refused with 423).
fn unknown_lock(path: &str) -> Lock {
    Lock {
        path: path.to_string(),
        token: "opaquelocktoken:unavailable".into(),
        expires_ms: now_ms() + 1000,
        ..Lock::default()
    }
}

/// Give every prefixed element its namespace declaration: dav-server
/// hands over elements as parsed, with prefixes but no declarations, and
/// xmltree refuses to write an undeclared prefix.
fn declare(e: &mut Element) {
    if let (Some(p), Some(ns)) = (&e.prefix, &e.namespace) {
        let mut n = e
            .namespaces
            .clone()
            .unwrap_or_else(xmltree::Namespace::empty);
        n.put(p.clone(), ns.clone());
        e.namespaces = Some(n);
    }
    for c in &mut e.children {
        if let xmltree::XMLNode::Element(c) = c {
            declare(c);
        }
    }
}

/// The owner element as stored (empty when it cannot be written: the
/// lock is still taken, lockdiscovery then shows no owner).
fn owner_bytes(mut owner: Element) -> Vec<u8> {
    declare(&mut owner);
    let mut out = Vec::new();
    if owner.write(&mut out).is_err() {
        out.clear();
    }
    out
}

fn new_token() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    // RFC 4918 §6.5 / RFC 4122 form, random (v4).
    format!(
        "opaquelocktoken:{}-{}-4{}-{:x}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        (b[8] & 0x3) | 0x8,
        &h[17..20],
        &h[20..32]
    )
}

/// Is `l` in the way of an operation on `path` by someone holding
/// `tokens` as `principal`? The rule of dav-server's MemLs: locks on the
/// path and deep locks above it always count; locks below count when the
/// operation is deep. A lock counts as held when its token was submitted
/// by its principal (or principals are ignored).
struct Check<'a> {
    path: &'a str,
    principal: Option<&'a str>,
    ignore_principal: bool,
    deep: bool,
    tokens: &'a [String],
    /// Shared locks do not block (taking another shared lock).
    shared_ok: bool,
}

impl Check<'_> {
    fn run(&self, locks: &[Lock]) -> Result<(), Box<Lock>> {
        let held = |l: &Lock| {
            self.tokens.contains(&l.token)
                && (self.ignore_principal || self.principal == Some(l.principal.as_str()))
        };
        let mut holds_one = false;
        let mut first_shared: Option<&Lock> = None;
        // Above and at the path.
        for l in locks {
            let applies = l.path == self.path || (l.deep && covers(&l.path, self.path));
            if !applies {
                continue;
            }
            if held(l) {
                holds_one = true;
            } else if !l.shared {
                return Err(Box::new(l.clone()));
            } else if !self.shared_ok {
                first_shared.get_or_insert(l);
            }
        }
        if let (false, Some(l)) = (holds_one, first_shared) {
            return Err(Box::new(l.clone()));
        }
        // Below the path.
        if self.deep {
            for l in locks {
                let below = l.path != self.path && covers(self.path, &l.path);
                if below && (!l.shared || !self.shared_ok) && !held(l) {
                    return Err(Box::new(l.clone()));
                }
            }
        }
        Ok(())
    }
}

impl GridLs {
    pub fn new(store: ObjectStore) -> Self {
        Self { store }
    }

    async fn live(&self, p: &str) -> Result<Vec<Lock>, Box<Lock>> {
        self.store
            .list_locks(&scope(p), now_ms())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "WebDAV locks unreadable; refusing");
                Box::new(unknown_lock(p))
            })
    }

    /// The lock `token` on `p` or a deep lock above it.
    async fn find(&self, p: &str, token: &str) -> Option<Lock> {
        let locks = self.live(p).await.ok()?;
        locks
            .into_iter()
            .find(|l| l.token == token && covers(&l.path, p))
    }

    async fn take(
        &self,
        at: DavPath,
        principal: Option<String>,
        owner: Option<Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<DavLock, DavLock> {
        let p = norm(&at);
        let refuse = |l: &Lock| to_dav(l, &at);
        let check = Check {
            path: &p,
            principal: None,
            ignore_principal: true,
            deep,
            tokens: &[],
            shared_ok: shared,
        };
        let locks = self.live(&p).await.map_err(|l| refuse(&l))?;
        check.run(&locks).map_err(|l| refuse(&l))?;
        let timeout = timeout.unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
        let owner_xml = owner.map(owner_bytes).unwrap_or_default();
        let mine = Lock {
            path: p.clone(),
            token: new_token(),
            principal: principal.unwrap_or_default(),
            owner_xml,
            expires_ms: now_ms() + timeout.as_millis() as u64,
            timeout_secs: timeout.as_secs(),
            shared,
            deep,
            revision: 0,
            deleted: false,
        };
        if let Err(e) = self.store.put_lock(&mine).await {
            tracing::warn!(error = %e, "WebDAV lock not stored");
            return Err(refuse(&unknown_lock(&p)));
        }
        // Listed again: a racing lock written meanwhile is seen here by
        // at least the later of the two writers, which withdraws.
        let conflict = match self.live(&p).await {
            Ok(all) => {
                let others: Vec<Lock> = all.into_iter().filter(|l| l.token != mine.token).collect();
                check.run(&others).err()
            }
            Err(l) => Some(l),
        };
        if let Some(c) = conflict {
            if let Err(e) = self.store.remove_lock(&mine).await {
                tracing::warn!(error = %e, "losing WebDAV lock not withdrawn; it lapses");
            }
            return Err(refuse(&c));
        }
        Ok(refuse(&mine))
    }
}

impl DavLockSystem for GridLs {
    fn lock(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let principal = principal.map(str::to_string);
        let owner = owner.cloned();
        self.take(path.clone(), principal, owner, timeout, shared, deep)
            .boxed()
    }

    fn unlock(&self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let (p, token) = (norm(path), token.to_string());
        async move {
            let l = self.find(&p, &token).await.ok_or(())?;
            self.store.remove_lock(&l).await.map_err(|e| {
                tracing::warn!(error = %e, "WebDAV unlock not stored");
            })
        }
        .boxed()
    }

    fn refresh(
        &self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let (p, token, at) = (norm(path), token.to_string(), path.clone());
        async move {
            let mut l = self.find(&p, &token).await.ok_or(())?;
            let timeout = timeout.unwrap_or(MAX_TIMEOUT).min(MAX_TIMEOUT);
            l.expires_ms = now_ms() + timeout.as_millis() as u64;
            l.timeout_secs = timeout.as_secs();
            self.store.put_lock(&l).await.map_err(|e| {
                tracing::warn!(error = %e, "WebDAV lock refresh not stored");
            })?;
            Ok(to_dav(&l, &at))
        }
        .boxed()
    }

    fn check(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let (p, at) = (norm(path), path.clone());
        let principal = principal.map(str::to_string);
        let tokens = submitted_tokens.to_vec();
        async move {
            let check = Check {
                path: &p,
                principal: principal.as_deref(),
                ignore_principal,
                deep,
                tokens: &tokens,
                shared_ok: false,
            };
            let conflict = match self.live(&p).await {
                Ok(locks) => check.run(&locks).err(),
                Err(l) => Some(l),
            };
            match conflict {
                None => Ok(()),
                Some(l) => Err(to_dav(&l, &at)),
            }
        }
        .boxed()
    }

    fn discover(&self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let (p, at) = (norm(path), path.clone());
        async move {
            let Ok(locks) = self.live(&p).await else {
                return Vec::new();
            };
            locks
                .iter()
                .filter(|l| l.path == p || (l.deep && covers(&l.path, &p)))
                .map(|l| to_dav(l, &at))
                .collect()
        }
        .boxed()
    }

    fn delete(&self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let p = norm(path);
        async move {
            let locks = self.live(&p).await.map_err(|_| ())?;
            let mut ok = true;
            for l in locks.iter().filter(|l| covers(&p, &l.path)) {
                if let Err(e) = self.store.remove_lock(l).await {
                    tracing::warn!(error = %e, "WebDAV lock not removed after a delete or move");
                    ok = false;
                }
            }
            ok.then_some(()).ok_or(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(path: &str, shared: bool, deep: bool, token: &str) -> Lock {
        Lock {
            path: path.into(),
            token: token.into(),
            principal: "AK".into(),
            shared,
            deep,
            expires_ms: u64::MAX,
            ..Lock::default()
        }
    }

    #[test]
    fn paths_scopes_and_tokens() {
        assert_eq!(norm(&DavPath::new("/b/x/").unwrap()), "/b/x");
        assert_eq!(norm(&DavPath::new("/").unwrap()), "");
        assert_eq!(scope("/b/x/y"), "/b");
        assert_eq!(scope("/b"), "/b");
        assert_eq!(scope(""), "");
        assert!(covers("/b/x", "/b/x/y"));
        assert!(!covers("/b/x", "/b/xy"));
        assert!(covers("", "/b"));
        let t = new_token();
        assert!(
            t.starts_with("opaquelocktoken:") && t.len() == 16 + 36,
            "{t}"
        );
    }

    #[test]
    fn owner_survives_the_record() {
        let mut owner = Element::new("owner");
        owner.prefix = Some("D".into());
        owner.namespace = Some("DAV:".into());
        owner
            .children
            .push(xmltree::XMLNode::Text("litmus test suite".into()));
        let mut l = lock("/b/x", false, false, "t");
        l.owner_xml = owner_bytes(owner);
        assert!(!l.owner_xml.is_empty());
        let at = DavPath::new("/b/x").unwrap();
        let d = to_dav(&l, &at);
        let o = d.owner.expect("owner kept");
        assert_eq!(o.name, "owner");
        assert_eq!(o.get_text().as_deref(), Some("litmus test suite"));
        assert_eq!(d.path.as_url_string(), "/b/x");
    }

    #[test]
    fn conflicts_follow_depth_sharing_and_tokens() {
        let locks = vec![
            lock("/b/dir", false, true, "deep"),
            lock("/b/f", true, false, "s"),
        ];
        let check = |path: &str, deep: bool, tokens: &[String], shared_ok: bool| {
            Check {
                path,
                principal: Some("AK"),
                ignore_principal: false,
                deep,
                tokens,
                shared_ok,
            }
            .run(&locks)
            .map_err(|l| l.token)
        };
        assert_eq!(check("/b/dir/x", false, &[], false), Err("deep".into()));
        assert_eq!(check("/b/dir/x", false, &["deep".into()], false), Ok(()));
        assert_eq!(check("/b", true, &[], false), Err("deep".into()));
        assert_eq!(check("/b", false, &[], false), Ok(()));
        assert_eq!(check("/b/f", false, &[], false), Err("s".into()));
        assert_eq!(check("/b/f", false, &[], true), Ok(()));
        assert_eq!(check("/b/other", false, &[], false), Ok(()));
    }
}
