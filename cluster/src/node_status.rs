//! Every node's answer to a status call, as `gridstore admin status` and
//! `repair status` and a gateway's status page show them: gathered in one
//! place so the three agree on what a node that does not answer looks like.

use crate::ObjectStore;
use grid::node_api::NodeStatus;
use metadata::model::Node;
use std::time::Duration;

/// One node of the map and its status, or why it gave none.
pub type NodeAnswer = (Node, Result<NodeStatus, String>);

/// Ask every node of the store's map for its status, all at once, in map
/// order. `timeout` bounds each call on top of the client's own, so a
/// page refreshing every few seconds is not held up by one hung node.
pub async fn gather(store: &ObjectStore, timeout: Option<Duration>) -> Vec<NodeAnswer> {
    let grid = store.grid();
    let calls = grid.map().nodes.iter().map(|n| {
        let grid = grid.clone();
        async move {
            let call = async {
                match grid.client(&n.id) {
                    Some(c) => c.status().await.map_err(|e| e.to_string()),
                    None => Err("no client".to_string()),
                }
            };
            let answer = match timeout {
                Some(t) => tokio::time::timeout(t, call)
                    .await
                    .unwrap_or_else(|_| Err(format!("no answer within {} s", t.as_secs()))),
                None => call.await,
            };
            (n.clone(), answer)
        }
    });
    futures_util::future::join_all(calls).await
}

/// A node state as the map names it, in lower case (`up`, `down`,
/// `draining`, `lost`, `untrusted`...).
pub fn state_name(state: i32) -> String {
    metadata::model::NodeState::try_from(state)
        .map_or_else(|_| state.to_string(), |s| format!("{s:?}").to_lowercase())
}
