//! An in-process grid: several `LocalNode`s on 127.0.0.1 with a real metadata store
//! and shard files in a temp dir, and the cluster map that names them.
#![allow(dead_code)]

use ::grid::chunk_io::Grid;
use ::grid::ClientOptions;
use metadata::model::{ClusterMap, Node};
use std::time::Duration;
use storage_node::config::IoChoice;
use storage_node::config::JobsConfig;
use storage_node::config::RepairConfig;
use storage_node::daemon::LocalNode;
use storage_node::NodeConfig;

pub struct TestGrid {
    pub dir: tempfile::TempDir,
    /// `None` once killed.
    pub nodes: Vec<Option<LocalNode>>,
    pub map: ClusterMap,
    /// Each node's config, with the address it first listened on.
    pub cfgs: Vec<NodeConfig>,
}

impl TestGrid {
    /// `per_site` nodes on each of `sites` sites, nothing in the background
    /// but what tests start by hand.
    pub async fn start(sites: usize, per_site: usize) -> TestGrid {
        Self::start_with(
            sites,
            per_site,
            RepairConfig::manual(),
            JobsConfig::default(),
        )
        .await
    }

    /// Like [`TestGrid::start`], the nodes running job tasks as `jobs`
    /// says, and given the map (tasks read their peers through it).
    pub async fn start_jobs(sites: usize, per_site: usize, jobs: JobsConfig) -> TestGrid {
        let grid = Self::start_with(sites, per_site, RepairConfig::manual(), jobs).await;
        grid.publish_map().await;
        grid
    }

    /// The same, with self-healing set by `repair`; the nodes are given the
    /// cluster map (as `gridstore server` does), so they heal by themselves.
    pub async fn start_healing(sites: usize, per_site: usize, repair: RepairConfig) -> TestGrid {
        let grid = Self::start_with(sites, per_site, repair, JobsConfig::default()).await;
        grid.publish_map().await;
        grid
    }

    /// Hand the map to every live node.
    /// Hand the map to every live node, signed by the owner as it is now
    /// (tests change it by hand).
    pub async fn publish_map(&self) {
        let g = self.grid();
        let map = super::signed_map(self.map.clone());
        for n in &self.map.nodes {
            if let Some(c) = g.client(&n.id) {
                let _ = c.put_map(&map).await;
            }
        }
    }

    /// Start one more node, on `site`, like the others (not in `map`: the
    /// test adds it, as an operator would). Returns its map entry.
    pub async fn add_node(&mut self, id: &str, site: &str) -> Node {
        let mut cfg = self.cfgs[0].clone();
        cfg.node_id = id.to_string();
        cfg.site = site.to_string();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.data_dir = self.dir.path().join(id);
        let node = LocalNode::start(&cfg).await.unwrap();
        cfg.listen = node.addr;
        let entry = node.map_entry(1 << 40);
        self.cfgs.push(cfg);
        self.nodes.push(Some(node));
        self.map.nodes.push(entry.clone());
        entry
    }

    /// Start a killed node again on its address and data.
    pub async fn restart(&mut self, node_id: &str) {
        let i = self.index_of(node_id);
        assert!(self.nodes[i].is_none(), "{node_id} is running");
        // A killed node's last blocking calls may hold its database for a
        // moment after the kill.
        let mut tries = 0;
        let node = loop {
            match LocalNode::start(&self.cfgs[i]).await {
                Ok(node) => break node,
                Err(e) if tries < 50 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restarting {node_id}: {e}"),
            }
        };
        self.nodes[i] = Some(node);
    }

    async fn start_with(
        sites: usize,
        per_site: usize,
        repair: RepairConfig,
        jobs: JobsConfig,
    ) -> TestGrid {
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        let mut cfgs = Vec::new();
        for s in 0..sites {
            for j in 0..per_site {
                let id = format!("s{s}n{j}");
                let cfg = NodeConfig {
                    node_id: id.clone(),
                    site: format!("site-{s}"),
                    listen: "127.0.0.1:0".parse().unwrap(),
                    data_dir: dir.path().join(&id),
                    quota_bytes: None,
                    reserve_bytes: 0,
                    io: IoChoice::Auto,
                    shutdown_grace_secs: 5,
                    // Tests drive collection themselves (LocalNode::gc_pass).
                    gc_grace_secs: 86_400,
                    gc_interval_secs: 0,
                    repair,
                    jobs: jobs.clone(),
                };
                let mut cfg = cfg;
                let node = LocalNode::start(&cfg).await.unwrap();
                cfg.listen = node.addr;
                cfgs.push(cfg.clone());
                entries.push(node.map_entry(1 << 40));
                nodes.push(Some(node));
            }
        }
        TestGrid {
            dir,
            nodes,
            map: super::signed_map(ClusterMap {
                epoch: 1,
                nodes: entries,
                clients: super::test_clients(),
                ..ClusterMap::default()
            }),
            cfgs,
        }
    }

    /// A gateway's view: the map (every node still listed as up, as it
    /// would be before failure detection notices) and clients.
    pub fn grid(&self) -> Grid {
        let opts = ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..ClientOptions::default()
        };
        Grid::new(self.map.clone(), opts)
    }

    pub fn index_of(&self, node_id: &str) -> usize {
        self.map.nodes.iter().position(|n| n.id == node_id).unwrap()
    }

    pub fn node(&self, node_id: &str) -> &LocalNode {
        self.nodes[self.index_of(node_id)].as_ref().unwrap()
    }

    pub async fn kill(&mut self, node_id: &str) {
        let i = self.index_of(node_id);
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }
}
