//! Users and their access keys, kept on the root replicas beside the bucket
//! directory. Secret keys are sealed under a key derived from the master
//! key, so the nodes that store them cannot use them.

use crate::error::{Error, Result};
use crate::store::ObjectStore;
use codec::{ChunkId, ChunkKey, ErasureParams, SealConfig, SealedChunk, Sealer};
use metadata::model::User;
use rand::Rng;

const USER_SECRET_CONTEXT: &str = "gridstore 2026-11 user secret v1";

/// What callers see of a user (never the secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub access_key: String,
    pub name: String,
    pub admin: bool,
    pub created_ms: u64,
}

fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// A new access key id (20 characters, AWS style, "GS" prefix).
pub fn new_access_key() -> String {
    format!("GS{}", random_text(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
}

/// A new secret key (40 characters).
pub fn new_secret_key() -> String {
    random_text(
        40,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    )
}

impl ObjectStore {
    fn secret_key_for(&self, id: &ChunkId) -> ChunkKey {
        ChunkKey::from_bytes(self.inner.master.derive(USER_SECRET_CONTEXT, &id.0))
    }

    fn seal_secret(&self, secret: &str) -> Result<Vec<u8>> {
        let id = ChunkId(rand::random());
        let params = ErasureParams::new(1, 0).map_err(|e| Error::Internal(e.to_string()))?;
        let mut sealer =
            Sealer::new(SealConfig::new(params)).map_err(|e| Error::Internal(e.to_string()))?;
        let mut out = SealedChunk::default();
        // The key is unique per sealing (random id), so a fixed nonce is safe.
        sealer
            .seal_with_key(
                id,
                &self.secret_key_for(&id),
                [0; 12],
                secret.as_bytes(),
                &mut out,
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(out.shard(0))
    }

    fn open_secret(&self, sealed: &[u8]) -> Result<String> {
        let header = codec::shard::ShardHeader::parse(sealed)
            .map_err(|e| Error::Corrupt(format!("user secret: {e}")))?;
        let id = header.chunk_id;
        let mut out = Vec::new();
        codec::with_opener(|o| {
            o.open_with_key(&id, &self.secret_key_for(&id), &[sealed], &mut out)
        })
        .map_err(|e| Error::Corrupt(format!("user secret: {e}")))?;
        String::from_utf8(out).map_err(|_| Error::Corrupt("user secret is not text".into()))
    }

    /// Where the record of `access_key` lives on the root replicas.
    fn user_record_key(&self, access_key: &str) -> [u8; metadata::sealed::NAME_HASH_LEN] {
        self.inner
            .root_keys
            .name_hash(metadata::sealed::NameKind::User, access_key.as_bytes())
    }

    async fn user_record(&self, access_key: &str) -> Result<Option<User>> {
        Ok(self
            .root_table::<User>()?
            .get(&self.user_record_key(access_key))
            .await?)
    }

    /// Create a user. `access_key`/`secret_key` are generated when absent.
    /// Returns the access key and the secret (the only time it is shown).
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        access_key: Option<&str>,
        secret_key: Option<&str>,
    ) -> Result<(String, String)> {
        let ak = access_key.map_or_else(new_access_key, str::to_string);
        let sk = secret_key.map_or_else(new_secret_key, str::to_string);
        if ak.len() < 3 || ak.len() > 128 || !ak.bytes().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::InvalidArgument(
                "access keys are 3 to 128 letters and digits".into(),
            ));
        }
        if sk.len() < 8 {
            return Err(Error::InvalidArgument(
                "secret keys are at least 8 characters".into(),
            ));
        }
        if let Some(existing) = self.user_record(&ak).await? {
            if !existing.deleted {
                return Err(Error::InvalidArgument(format!(
                    "access key {ak} already exists"
                )));
            }
        }
        let user = User {
            access_key: ak.clone(),
            sealed_secret: self.seal_secret(&sk)?,
            name: name.to_string(),
            created_ms: grid::clock::now_ms(),
            revision: self.revision(),
            deleted: false,
            admin,
        };
        self.write_user(&user).await?;
        Ok((ak, sk))
    }

    /// Make sure `access_key` exists with `secret_key` (the root user of
    /// `gridstore server`, whose credentials may come from the
    /// environment): created or its secret replaced.
    pub async fn ensure_user(
        &self,
        name: &str,
        admin: bool,
        access_key: &str,
        secret_key: &str,
    ) -> Result<()> {
        if let Some(u) = self.user_record(access_key).await? {
            if !u.deleted && u.admin == admin && self.open_secret(&u.sealed_secret)? == secret_key {
                return Ok(());
            }
        }
        let user = User {
            access_key: access_key.to_string(),
            sealed_secret: self.seal_secret(secret_key)?,
            name: name.to_string(),
            created_ms: grid::clock::now_ms(),
            revision: self.revision(),
            deleted: false,
            admin,
        };
        self.write_user(&user).await
    }

    async fn write_user(&self, user: &User) -> Result<()> {
        let users = self.root_table::<User>()?;
        Ok(users
            .put(&self.user_record_key(&user.access_key), user)
            .await?)
    }

    /// The secret of a live access key and whether it is an admin.
    pub async fn user_secret(&self, access_key: &str) -> Result<Option<(String, bool)>> {
        match self.user_record(access_key).await? {
            Some(u) if !u.deleted => Ok(Some((self.open_secret(&u.sealed_secret)?, u.admin))),
            _ => Ok(None),
        }
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>> {
        let mut scan = self.root_table::<User>()?.scan(Vec::new(), None);
        let mut out = Vec::new();
        while let Some((_, u)) = scan.next().await? {
            if !u.deleted {
                out.push(UserInfo {
                    access_key: u.access_key,
                    name: u.name,
                    admin: u.admin,
                    created_ms: u.created_ms,
                });
            }
        }
        scan.repair_stale();
        out.sort_by(|a, b| a.access_key.cmp(&b.access_key));
        Ok(out)
    }

    /// Delete an access key (a tombstone, as every replicated delete).
    pub async fn delete_user(&self, access_key: &str) -> Result<bool> {
        match self.user_record(access_key).await? {
            Some(mut u) if !u.deleted => {
                u.deleted = true;
                u.sealed_secret.clear();
                u.revision = self.revision();
                self.write_user(&u).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
