//! Changing who is in the grid: add a node, drain one (its shards move to
//! the nodes placement names without it, in the background, by the nodes'
//! own reconciliation), remove a drained one. Each change is a new map
//! epoch handed to every node; gateways follow within seconds.
//!
//! Liveness may publish its own epoch at the same moment (a node marked
//! down); equal epochs resolve by hash on the nodes, so a change can lose
//! that race. [`apply`] therefore reads the map back and tries again until
//! its change is in the map the nodes hold.

use crate::chunk_io::Grid;
use crate::node_client::RpcError;
use crate::signed_map::{self, OwnerKey};
use metadata::model::{ClientIdentity, ClusterMap, Node, NodeState};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    #[error("no node answered with a cluster map")]
    NoMap,
    #[error("no node {0:?} in the cluster map")]
    UnknownNode(String),
    #[error("node {0:?} is already in the cluster map")]
    AlreadyThere(String),
    #[error("node {node:?} still holds {shards} shards: drain it and wait (`admin repair status`), or force")]
    NotDrained { node: String, shards: u64 },
    #[error("node {node:?} must be drained before it is removed (it is {state})")]
    NotDraining { node: String, state: String },
    #[error("node {node:?} did not answer ({source}); only a forced removal takes an unreachable node out")]
    Unreachable { node: String, source: RpcError },
    #[error("the change did not stick after {0} tries (map changing under it)")]
    Raced(usize),
    #[error("{0:?}: an identity key is 32 bytes")]
    BadKey(String),
}

/// One membership change.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new node, up and placeable at once.
    Add(Node),
    /// Stop placing data on this node; its shards move away.
    Drain(String),
    /// Take a drained (or, forced, a dead) node out for good. Its id stays
    /// in the map as removed, so it is never reused.
    Remove { node: String, force: bool },
    /// Pin a new identity key for a node that lost its old one with its
    /// data directory: until then nobody talks to it, by design (no trust
    /// on first use).
    Rekey { node: String, key: Vec<u8> },
    /// Let a gateway or admin tool with this identity connect to the nodes.
    Trust(ClientIdentity),
    /// Stop letting the client with this identity key connect.
    Distrust(Vec<u8>),
    /// A node that failed storage audits: never placed on again, its
    /// shards rebuilt elsewhere as for a lost node. `reason` (audit
    /// figures) goes into the map for operators.
    Untrust { node: String, reason: String },
}

fn state_name(s: i32) -> String {
    NodeState::try_from(s).map_or_else(
        |_| format!("state {s}"),
        |s| format!("{s:?}").to_lowercase(),
    )
}

/// The newest map any node of `grid` holds that the owner (`owner`) or,
/// for liveness, a majority of nodes signed. A map a node made up is
/// never the base of a change the owner then signs.
pub async fn current_map(grid: &Grid, owner: &OwnerKey) -> Result<ClusterMap, MembershipError> {
    let mut best: Option<ClusterMap> = None;
    let public = owner.public();
    for n in &grid.map().nodes {
        let Some(c) = grid.client(&n.id) else {
            continue;
        };
        if let Ok(Ok(Some(m))) = tokio::time::timeout(Duration::from_secs(3), c.get_map()).await {
            if let Err(e) = signed_map::verify(&m, Some(&public)) {
                tracing::warn!(node = %n.id, epoch = m.epoch, error = %e, "node holds a map not signed as it must be; ignored");
                continue;
            }
            if best.as_ref().is_none_or(|b| m.epoch > b.epoch) {
                best = Some(m);
            }
        }
    }
    best.ok_or(MembershipError::NoMap)
}

/// Hand the grid's own map to every node of it that holds no map yet: a
/// grid's first map, written by the operator into the gateways' config
/// (or a node whose data directory was wiped). Nodes that hold any map are
/// left alone: they follow membership changes and liveness, which only
/// ever move the epoch forward, and a seed must never roll them back.
/// Returns the nodes seeded; nodes that did not answer are skipped (the
/// next round reaches them).
pub async fn seed(grid: &Grid, owner: &OwnerKey) -> Vec<String> {
    let signed = owner.signed(grid.map().clone());
    let map = &signed;
    let mut seeded = Vec::new();
    for n in &map.nodes {
        if n.state == NodeState::Removed as i32 {
            continue;
        }
        let Some(c) = grid.client(&n.id) else {
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(3), c.get_map()).await {
            Ok(Ok(None)) => match c.put_map(map).await {
                Ok(_) => seeded.push(n.id.clone()),
                Err(e) => {
                    tracing::warn!(node = %n.id, error = %e, "cannot hand the first cluster map to a node")
                }
            },
            Ok(Ok(Some(_))) => {}
            Ok(Err(e)) => {
                tracing::debug!(node = %n.id, error = %e, "node unreachable while seeding the map")
            }
            Err(_) => tracing::debug!(node = %n.id, "node slow to answer while seeding the map"),
        }
    }
    seeded
}

/// Whether `change` is already true of `map`.
fn holds(map: &ClusterMap, change: &Change) -> bool {
    let state = |id: &str| map.nodes.iter().find(|n| n.id == id).map(|n| n.state);
    match change {
        Change::Add(n) => state(&n.id).is_some(),
        Change::Drain(id) => state(id) == Some(NodeState::Draining as i32),
        Change::Remove { node, .. } => state(node) == Some(NodeState::Removed as i32),
        Change::Rekey { node, key } => map.nodes.iter().any(|n| &n.id == node && &n.key == key),
        Change::Trust(c) => map.clients.contains(c),
        Change::Distrust(key) => !map.clients.iter().any(|c| &c.key == key),
        // A removed node holds nothing to distrust.
        Change::Untrust { node, .. } => matches!(
            state(node),
            Some(s) if s == NodeState::Untrusted as i32 || s == NodeState::Removed as i32
        ),
    }
}

/// `map` with `change` made, after the checks it needs.
async fn changed(
    grid: &Grid,
    map: &ClusterMap,
    change: &Change,
) -> Result<ClusterMap, MembershipError> {
    let mut next = map.clone();
    next.epoch = map.epoch + 1;
    match change {
        Change::Add(node) => {
            if map.nodes.iter().any(|n| n.id == node.id) {
                return Err(MembershipError::AlreadyThere(node.id.clone()));
            }
            if crate::tls::IdentityKey::from_bytes(&node.key).is_none() {
                return Err(MembershipError::BadKey(node.id.clone()));
            }
            let mut node = node.clone();
            node.state = NodeState::Up as i32;
            next.nodes.push(node);
        }
        Change::Drain(id) => {
            let n = next
                .nodes
                .iter_mut()
                .find(|n| &n.id == id)
                .ok_or_else(|| MembershipError::UnknownNode(id.clone()))?;
            n.state = NodeState::Draining as i32;
        }
        Change::Remove { node: id, force } => {
            let current = map
                .nodes
                .iter()
                .find(|n| &n.id == id)
                .ok_or_else(|| MembershipError::UnknownNode(id.clone()))?;
            if !force {
                if current.state != NodeState::Draining as i32 {
                    return Err(MembershipError::NotDraining {
                        node: id.clone(),
                        state: state_name(current.state),
                    });
                }
                let client = grid
                    .client(id)
                    .ok_or_else(|| MembershipError::UnknownNode(id.clone()))?;
                let status =
                    client
                        .status()
                        .await
                        .map_err(|source| MembershipError::Unreachable {
                            node: id.clone(),
                            source,
                        })?;
                if status.shard_count > 0 {
                    return Err(MembershipError::NotDrained {
                        node: id.clone(),
                        shards: status.shard_count,
                    });
                }
            }
            if let Some(n) = next.nodes.iter_mut().find(|n| &n.id == id) {
                n.state = NodeState::Removed as i32;
            }
        }
        Change::Rekey { node: id, key } => {
            if crate::tls::IdentityKey::from_bytes(key).is_none() {
                return Err(MembershipError::BadKey(id.clone()));
            }
            let n = next
                .nodes
                .iter_mut()
                .find(|n| &n.id == id)
                .ok_or_else(|| MembershipError::UnknownNode(id.clone()))?;
            n.key = key.clone();
        }
        Change::Trust(client) => {
            if crate::tls::IdentityKey::from_bytes(&client.key).is_none() {
                return Err(MembershipError::BadKey(client.name.clone()));
            }
            // One entry per key: trusting it again renames it or changes
            // its role.
            next.clients.retain(|c| c.key != client.key);
            next.clients.push(client.clone());
        }
        Change::Distrust(key) => next.clients.retain(|c| &c.key != key),
        Change::Untrust { node: id, reason } => {
            let n = next
                .nodes
                .iter_mut()
                .find(|n| &n.id == id)
                .ok_or_else(|| MembershipError::UnknownNode(id.clone()))?;
            n.state = NodeState::Untrusted as i32;
            n.untrusted_reason = reason.clone();
        }
    }
    Ok(next)
}

/// Make `change` and hand the new map to every node of it; returns the map
/// the nodes hold once the change is in it.
pub async fn apply(
    grid: &Grid,
    owner: &OwnerKey,
    change: Change,
) -> Result<ClusterMap, MembershipError> {
    const TRIES: usize = 5;
    for _ in 0..TRIES {
        let map = current_map(grid, owner).await?;
        if holds(&map, &change) {
            return Ok(map);
        }
        let mut next = changed(&grid.with_map(map.clone()), &map, &change).await?;
        owner.sign(&mut next);
        let target = grid.with_map(next.clone());
        for n in &next.nodes {
            if let Some(c) = target.client(&n.id) {
                if let Err(e) = c.put_map(&next).await {
                    tracing::debug!(node = %n.id, error = %e, "map push failed; it will pull");
                }
            }
        }
        // Let a racing proposal, if any, settle before reading back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = current_map(&target, owner).await?;
        if holds(&now, &change) {
            return Ok(now);
        }
    }
    Err(MembershipError::Raced(TRIES))
}
