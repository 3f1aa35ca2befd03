//! Names users choose: bucket names (the S3 rules) and object keys.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("invalid bucket name: {0}")]
    Bucket(&'static str),
    #[error("invalid object key: {0}")]
    Key(&'static str),
}

/// Longest object key, in bytes of UTF-8 (as S3).
pub const MAX_KEY_LEN: usize = 1024;

/// S3's bucket naming rules for new buckets: 3-63 characters of lowercase
/// letters, digits, `.` and `-`, starting and ending with a letter or
/// digit, no `..`, not an IPv4 address, none of the reserved prefixes and
/// suffixes.
pub fn check_bucket_name(name: &str) -> Result<(), NameError> {
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return Err(NameError::Bucket("must be 3 to 63 characters"));
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
    {
        return Err(NameError::Bucket(
            "only lowercase letters, digits, '.' and '-'",
        ));
    }
    let edge_ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !edge_ok(b[0]) || !edge_ok(b[b.len() - 1]) {
        return Err(NameError::Bucket(
            "must start and end with a letter or digit",
        ));
    }
    if name.contains("..") {
        return Err(NameError::Bucket("must not contain '..'"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(NameError::Bucket("must not look like an IP address"));
    }
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 3] = ["-s3alias", "--ol-s3", "--x-s3"];
    if PREFIXES.iter().any(|p| name.starts_with(p)) || SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Err(NameError::Bucket("reserved prefix or suffix"));
    }
    Ok(())
}

/// Object keys: 1 to 1024 bytes of UTF-8 (Rust strings are UTF-8), no
/// NUL (it would end keys early in the C libraries some clients use).
/// Keys are data, never paths: nothing here or below turns one into a
/// file name.
pub fn check_object_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::Key("empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(NameError::Key("longer than 1024 bytes"));
    }
    if key.contains('\0') {
        return Err(NameError::Key("contains NUL"));
    }
    Ok(())
}
