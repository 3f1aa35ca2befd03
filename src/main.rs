//! The `gridstore` binary: command-line parsing only; every subcommand is a
//! call into a library crate.

mod admin;
mod cluster_file;
mod embedded;
mod job;
mod units;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gridstore",
    version,
    about = "Self-healing, erasure-coded, encrypted object store for an edge grid"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a storage node: hold shards and metadata records, serve them
    /// over authenticated RPC. Stops cleanly on SIGTERM or SIGINT.
    Node {
        /// The node's config file (TOML; see the storage-node crate docs).
        #[arg(long, value_name = "FILE")]
        config: std::path::PathBuf,
        /// Print the node's identity key (what the cluster map lists as its
        /// `key`) and exit; the identity is made if the node has none yet.
        #[arg(long)]
        identity: bool,
    },
    /// The whole store in one process: an S3 gateway and storage nodes on
    /// sub-folders of DIR spread over sites. Credentials are printed at
    /// start and kept in DIR (or taken from GRIDSTORE_ACCESS_KEY and
    /// GRIDSTORE_SECRET_KEY).
    Server {
        /// Where the data and the server's secrets live.
        dir: std::path::PathBuf,
        /// S3 listener.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// WebDAV listener (HTTP Basic: access key and secret key).
        #[arg(long, default_value = "127.0.0.1:9001")]
        webdav_listen: std::net::SocketAddr,
        /// Storage nodes.
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Sites the nodes are spread over (failure domains).
        #[arg(long, default_value_t = 3)]
        sites: usize,
        /// The S3 region clients sign for.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Seconds between each node's reconciliation passes (what it
        /// should hold against what it has); 0: none.
        #[arg(long, default_value_t = 300)]
        reconcile_interval_secs: u64,
        /// Seconds between full scrubs (every shard's checksum re-read);
        /// 0: none.
        #[arg(long, default_value_t = 7 * 86_400)]
        scrub_interval_secs: u64,
        /// Seconds a shard no chunk reference names, or a reference no
        /// record names, is kept before it is deleted (a write in flight
        /// names what it stores well within).
        #[arg(long, default_value_t = 86_400)]
        gc_grace_secs: u64,
        /// Seconds between garbage collection passes (each node's, and
        /// the gateway's sweep of references); 0: none on the nodes.
        #[arg(long, default_value_t = 3_600)]
        gc_interval_secs: u64,
        /// Job API listener (`gridstore job ...`; HTTP Basic: access key
        /// and secret key).
        #[arg(long, default_value = "127.0.0.1:9002")]
        jobs_listen: std::net::SocketAddr,
        /// Admin listener: `/health`, Prometheus `/metrics` and a status
        /// page, without credentials (keep it on loopback or behind a
        /// firewall).
        #[arg(long, default_value = "127.0.0.1:9003")]
        admin_listen: std::net::SocketAddr,
        /// Programs job tasks may run on the nodes (comma-separated names
        /// looked up on /usr/local/bin:/usr/bin:/bin, or absolute paths);
        /// empty: no jobs.
        #[arg(long, default_value = "python3", value_delimiter = ',')]
        job_allow: Vec<String>,
    },
    /// Run an S3 gateway in front of storage nodes named by a cluster map.
    Gateway {
        /// The gateway's config file (TOML; see config/gateway.example.toml).
        #[arg(long, value_name = "FILE")]
        config: std::path::PathBuf,
        /// Print the gateway's identity key (what the cluster map lists
        /// under `[[clients]]`) and exit; made if there is none yet.
        #[arg(long)]
        identity: bool,
    },
    /// Manage access keys, buckets and nodes; show node status, repair
    /// progress and storage audits.
    Admin(admin::AdminArgs),
    /// Submit and follow jobs that run beside the data (a gateway's job
    /// API; `gridstore server` serves it on 127.0.0.1:9002).
    Job(job::JobArgs),
    /// Measure this machine: how fast it can seal and open data.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// Single-core throughput of every codec stage (memcpy as reference,
    /// CDC, BLAKE3, zstd, ChaCha20-Poly1305, Reed-Solomon) and of the whole
    /// seal and open pipelines, on random and text-like data, for RS (4,2),
    /// (8,4) and (10,4), plus the pipelines on two threads.
    Codec {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure briefly (seconds instead of tens of seconds); for checking
        /// the harness, not for figures.
        #[arg(long)]
        quick: bool,
    },
    /// Shard put and get through a node's RPC over loopback (1 MiB shards,
    /// one and four at a time), beside raw write+fsync and read of the
    /// same disk measured in the same run.
    Node {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure briefly; for checking the harness, not for figures.
        #[arg(long)]
        quick: bool,
        /// Where to put the files (a temp dir inside it); default: the
        /// system temp dir. Choose the disk you want measured.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
    /// Load any S3 endpoint (gridstore, MinIO, AWS) like MinIO's warp:
    /// put, get, a get/put/stat/delete mix or list, for a fixed time;
    /// ops/s, MiB/s and latency percentiles.
    S3(bench::s3_load::S3Args),
    /// Self-healing: an in-process grid of 8 nodes on 4 sites stores
    /// --size-mib of data at 4+2, one node dies; time to detection, to the
    /// first rebuilt shard and to full redundancy, and the rebuild rate
    /// beside the codec's and the disk's measured in the same run.
    Repair {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Data stored before the node dies.
        #[arg(long, default_value_t = 2048)]
        size_mib: u64,
        /// Seconds between the nodes' heartbeats (`[repair]
        /// heartbeat_secs`).
        #[arg(long, default_value_t = 5)]
        heartbeat_secs: u64,
        /// Seconds unheard before a node is marked down (`[repair]
        /// down_after_secs`); without --outage-secs it is lost then too,
        /// and its shards rebuilt.
        #[arg(long, default_value_t = 25)]
        down_after_secs: u64,
        /// Rebuilds each node runs at once (`[repair] concurrency`).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// The node comes back after this many seconds (a reboot, before
        /// it is lost) instead of dying: reports the repair bytes written
        /// over the bytes it held (`outage_repair_fraction`).
        #[arg(long, value_name = "SECS")]
        outage_secs: Option<u64>,
        /// Where the nodes keep their data (a temp dir inside it).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// Logs go to stderr (stdout carries what scripts read); `RUST_LOG`
/// filters them, `info` by default.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // s3s logs every failed request at ERROR, as Rust structures, where
    // the gateway's access log already says it once in words: off unless
    // RUST_LOG names it.
    let directives = match std::env::var("RUST_LOG") {
        Ok(d) if d.contains("s3s") => d,
        Ok(d) if !d.trim().is_empty() => format!("{d},s3s=off"),
        _ => "info,s3s=off".to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(gateway::recent_errors::layer())
        .init();
}

fn run_node(config: &std::path::Path, identity: bool) -> ExitCode {
    init_logging();
    let cfg = match storage_node::NodeConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gridstore node: {e}");
            return ExitCode::FAILURE;
        }
    };
    if identity {
        return match storage_node::daemon::identity(&cfg) {
            Ok(id) => {
                println!("{}", id.key());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gridstore node: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gridstore node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(storage_node::daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("gridstore node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A bench's outcome: its report as JSON or as its table, or why it failed.
fn print_report<R: serde::Serialize, E: std::fmt::Display>(
    bench: &str,
    report: Result<R, E>,
    json: bool,
    table: impl Fn(&R) -> String,
) -> ExitCode {
    match report {
        Err(e) => {
            eprintln!("gridstore bench {bench}: {e}");
            ExitCode::FAILURE
        }
        Ok(r) if json => print_json(&r),
        Ok(r) => {
            print!("{}", table(&r));
            ExitCode::SUCCESS
        }
    }
}

fn print_json(report: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(report) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gridstore: cannot encode report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(what: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("gridstore {what}: cannot start the runtime: {e}");
            None
        }
    }
}

fn run_server(args: embedded::ServerArgs) -> ExitCode {
    init_logging();
    let Some(rt) = runtime("server") else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(embedded::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridstore server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_gateway(config: &std::path::Path) -> ExitCode {
    init_logging();
    let Some(rt) = runtime("gateway") else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(admin::run_gateway(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gridstore gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bench's report is its output; its nodes' logs only when asked for
    // (`RUST_LOG=debug` shows when each node adopted a map, started a
    // pass and rebuilt each shard).
    if matches!(cli.command, Command::Bench(_)) && std::env::var_os("RUST_LOG").is_some() {
        init_logging();
    }
    match cli.command {
        Command::Node { config, identity } => run_node(&config, identity),
        Command::Server {
            dir,
            listen,
            webdav_listen,
            nodes,
            sites,
            region,
            reconcile_interval_secs,
            scrub_interval_secs,
            gc_grace_secs,
            gc_interval_secs,
            jobs_listen,
            admin_listen,
            job_allow,
        } => run_server(embedded::ServerArgs {
            dir,
            listen,
            webdav_listen,
            reconcile_interval_secs,
            scrub_interval_secs,
            gc_grace_secs,
            gc_interval_secs,
            nodes,
            sites,
            region,
            jobs_listen,
            admin_listen,
            job_allow: job_allow.into_iter().filter(|p| !p.is_empty()).collect(),
        }),
        Command::Gateway {
            config,
            identity: true,
        } => admin::print_gateway_identity(&config),
        Command::Gateway { config, .. } => run_gateway(&config),
        Command::Job(args) => {
            let Some(rt) = runtime("job") else {
                return ExitCode::FAILURE;
            };
            rt.block_on(job::run(args))
        }
        Command::Admin(args) => {
            let Some(rt) = runtime("admin") else {
                return ExitCode::FAILURE;
            };
            rt.block_on(admin::run(args))
        }
        Command::Bench(Bench::Node { json, quick, dir }) => {
            let report = bench::node_speed::run(bench::node_speed::timing(quick), dir.as_deref());
            print_report("node", report, json, bench::node_speed::table)
        }
        Command::Bench(Bench::Repair {
            json,
            size_mib,
            heartbeat_secs,
            down_after_secs,
            concurrency,
            outage_secs,
            dir,
        }) => {
            let args = bench::repair_speed::RepairArgs {
                data_mib: size_mib,
                heartbeat_secs,
                down_after_secs,
                concurrency,
                outage_secs,
            };
            let report = bench::repair_speed::run(args, dir.as_deref());
            print_report("repair", report, json, bench::repair_speed::table)
        }
        Command::Bench(Bench::S3(args)) => {
            let report = bench::s3_load::run(&args);
            print_report("s3", report, args.json, bench::s3_load::table)
        }
        Command::Bench(Bench::Codec { json, quick }) => {
            let timing = if quick {
                bench::Timing::quick()
            } else {
                bench::Timing::full()
            };
            let report = Ok::<_, std::convert::Infallible>(bench::codec_speed::run(timing));
            print_report("codec", report, json, bench::codec_speed::table)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Operators learn the tool from `--help`: every subcommand and every
    /// argument says what it is.
    #[test]
    fn every_subcommand_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() {
                missing.push(path.to_string());
            }
            for a in cmd.get_arguments() {
                if !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "gridstore", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
