//! Dead properties (PROPPATCH) kept with the object they describe, in one
//! user-metadata entry of its manifest: they travel with server-side
//! copies and moves, and vanish with the object, with no second record
//! to keep in step. The value is base64 of JSON, so it stays a valid HTTP
//! header when S3 returns it as `x-amz-meta-dav-props`.

use base64::Engine;
use dav_server::fs::{DavProp, FsError, FsResult};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub(crate) const META_KEY: &str = "dav-props";

/// Largest encoded value: the manifest carrying it is read on every
/// request for the object, so properties may not grow without bound.
const MAX_ENCODED: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ns: Option<String>,
    /// The property element as the client sent it (XML), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xml: Option<String>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

pub(crate) fn decode(md: &BTreeMap<String, String>) -> FsResult<Vec<DavProp>> {
    let Some(v) = md.get(META_KEY) else {
        return Ok(Vec::new());
    };
    let corrupt = |what: &str| {
        tracing::warn!("{what} in the dav-props metadata of an object");
        FsError::GeneralFailure
    };
    let json = b64().decode(v).map_err(|_| corrupt("bad base64"))?;
    let stored: Vec<Stored> = serde_json::from_slice(&json).map_err(|_| corrupt("bad JSON"))?;
    stored
        .into_iter()
        .map(|s| {
            let xml = match s.xml {
                Some(x) => Some(b64().decode(x).map_err(|_| corrupt("bad base64"))?),
                None => None,
            };
            Ok(DavProp {
                name: s.name,
                prefix: s.prefix,
                namespace: s.ns,
                xml,
            })
        })
        .collect()
}

/// None when there is nothing to keep (the entry is removed).
pub(crate) fn encode(props: &[DavProp]) -> FsResult<Option<String>> {
    if props.is_empty() {
        return Ok(None);
    }
    let stored: Vec<Stored> = props
        .iter()
        .map(|p| Stored {
            name: p.name.clone(),
            prefix: p.prefix.clone(),
            ns: p.namespace.clone(),
            xml: p.xml.as_ref().map(|x| b64().encode(x)),
        })
        .collect();
    let json = serde_json::to_vec(&stored).map_err(|_| FsError::GeneralFailure)?;
    let v = b64().encode(json);
    if v.len() > MAX_ENCODED {
        return Err(FsError::InsufficientStorage);
    }
    Ok(Some(v))
}

fn same(a: &DavProp, b: &DavProp) -> bool {
    a.name == b.name && a.namespace == b.namespace
}

/// Apply a PROPPATCH in order (set replaces, remove of an absent property
/// succeeds, as RFC 4918 §9.2 allows); the statuses echo each property.
pub(crate) fn apply(
    mut props: Vec<DavProp>,
    patch: Vec<(bool, DavProp)>,
) -> (Vec<DavProp>, Vec<(StatusCode, DavProp)>) {
    let mut statuses = Vec::with_capacity(patch.len());
    for (set, p) in patch {
        props.retain(|q| !same(q, &p));
        let echo = DavProp {
            name: p.name.clone(),
            prefix: p.prefix.clone(),
            namespace: p.namespace.clone(),
            xml: None,
        };
        if set {
            props.push(p);
        }
        statuses.push((StatusCode::OK, echo));
    }
    (props, statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, ns: Option<&str>, xml: &str) -> DavProp {
        DavProp {
            name: name.into(),
            prefix: Some("x".into()),
            namespace: ns.map(str::to_string),
            xml: Some(xml.as_bytes().to_vec()),
        }
    }

    #[test]
    fn round_trip_keeps_unicode_and_namespaces() {
        let props = vec![
            prop("a", Some("http://example.com/ns"), "<x:a>𐀀 ü</x:a>"),
            prop("a", None, "<a/>"),
        ];
        let v = encode(&props).unwrap().unwrap();
        assert!(v.is_ascii());
        let mut md = BTreeMap::new();
        md.insert(META_KEY.to_string(), v);
        let back = decode(&md).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].xml.as_deref(), Some("<x:a>𐀀 ü</x:a>".as_bytes()));
        assert_eq!(back[1].namespace, None);
    }

    #[test]
    fn patch_sets_replaces_and_removes_in_order() {
        let (p, st) = apply(
            vec![prop("a", Some("n"), "1")],
            vec![
                (true, prop("a", Some("n"), "2")),
                (true, prop("b", Some("n"), "3")),
                (false, prop("b", Some("n"), "")),
                (false, prop("zz", None, "")),
            ],
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].xml.as_deref(), Some(&b"2"[..]));
        assert_eq!(st.len(), 4);
        assert!(st
            .iter()
            .all(|(s, p)| *s == StatusCode::OK && p.xml.is_none()));
        assert_eq!(encode(&[]).unwrap(), None);
    }
}
