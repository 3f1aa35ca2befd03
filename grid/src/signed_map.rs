//! Who may change the cluster map: the owner, or a majority of the nodes
//! for liveness alone.
//!
//! A farm is someone else's machine, and the map decides where every
//! shard lives: a map a farm could write on its own would let it mark
//! everyone else removed and receive every shard. So a node takes a map
//! only when it is
//!
//! * signed by the owner's map key (derived from the master key, so
//!   gateways and `gridstore admin` hold it and no farm does) over the
//!   whole map: adding, draining, removing, distrusting nodes, clients,
//!   anything; or
//! * a liveness change: the owner's signature over the map's
//!   *membership* (the map without its epoch and with every down node
//!   counted as up) still verifies, so only up/down states and the epoch
//!   moved, and a strict majority of the map's nodes signed the whole map
//!   with their identity keys. Each voter signs only what it sees itself
//!   (see `storage-node`'s liveness), so one farm alone marks no one down.
//!
//! The first map a node takes pins the owner key; every later map must
//! carry the same one.

use crate::tls::{Identity, IdentityKey};
use metadata::model::{ClusterMap, LivenessVote, NodeState};
pub use metadata::signing::{full_digest, membership_digest, OwnerKey};
use metadata::signing::{verifies, MAP_CONTEXT as FULL_CONTEXT, MEMBERSHIP_CONTEXT};
use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapAuthError {
    #[error("the map carries no owner key")]
    NoOwnerKey,
    #[error("the map is signed for another owner than the one this node follows")]
    OtherOwner,
    #[error("neither signed by the owner nor a liveness change signed by a majority of nodes ({votes} of {nodes} valid votes)")]
    Unsigned { votes: usize, nodes: usize },
}

/// This node's vote for `map` (a liveness change it agrees with).
pub fn vote(identity: &Identity, node_id: &str, map: &ClusterMap) -> LivenessVote {
    LivenessVote {
        node_id: node_id.to_string(),
        public_key: identity.public_key(),
        signature: identity
            .sign(&metadata::signing::message(FULL_CONTEXT, &full_digest(map)))
            .to_vec(),
    }
}

/// How a map is authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    Owner,
    /// A liveness change with this many valid votes.
    Nodes(usize),
}

/// Check `map` against the owner key `pinned` (`None`: the node follows
/// no owner yet and takes the map's own key, trust on first use).
pub fn verify(map: &ClusterMap, pinned: Option<&[u8]>) -> Result<Authority, MapAuthError> {
    if map.owner_key.is_empty() {
        return Err(MapAuthError::NoOwnerKey);
    }
    if pinned.is_some_and(|p| p != map.owner_key.as_slice()) {
        return Err(MapAuthError::OtherOwner);
    }
    let owner = map.owner_key.as_slice();
    let full = full_digest(map);
    if verifies(owner, FULL_CONTEXT, &full, &map.owner_signature) {
        return Ok(Authority::Owner);
    }
    let voters: Vec<_> = map
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Removed as i32)
        .collect();
    let nodes = voters.len();
    if !verifies(
        owner,
        MEMBERSHIP_CONTEXT,
        &membership_digest(map),
        &map.membership_signature,
    ) {
        return Err(MapAuthError::Unsigned { votes: 0, nodes });
    }
    let mut counted = HashSet::new();
    for v in &map.votes {
        let Some(n) = voters.iter().find(|n| n.id == v.node_id) else {
            continue;
        };
        if IdentityKey::from_bytes(&n.key) != Some(IdentityKey::of_ed25519(&v.public_key)) {
            continue;
        }
        if verifies(&v.public_key, FULL_CONTEXT, &full, &v.signature) {
            counted.insert(n.id.as_str());
        }
    }
    let votes = counted.len();
    if votes * 2 > nodes {
        Ok(Authority::Nodes(votes))
    } else {
        Err(MapAuthError::Unsigned { votes, nodes })
    }
}

/// Whether `next` differs from `current` only in its epoch and who is up
/// or down (what nodes may change without the owner).
pub fn liveness_only(current: &ClusterMap, next: &ClusterMap) -> bool {
    membership_digest(current) == membership_digest(next)
        && current.owner_key == next.owner_key
        && current.membership_signature == next.membership_signature
}
