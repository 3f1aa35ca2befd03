//! The `gridstore` binary: command-line parsing only; every subcommand is a
//! call into a library crate.

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
    },
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
}

/// Logs go to stderr (stdout carries what scripts read); `RUST_LOG`
/// filters them, `info` by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_node(config: &std::path::Path) -> ExitCode {
    init_logging();
    let cfg = match storage_node::NodeConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gridstore node: {e}");
            return ExitCode::FAILURE;
        }
    };
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node { config } => return run_node(&config),
        Command::Bench(Bench::Node { json, quick, dir }) => {
            let report =
                match bench::node_speed::run(bench::node_speed::timing(quick), dir.as_deref()) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("gridstore bench node: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            if json {
                return print_json(&report);
            }
            print!("{}", bench::node_speed::table(&report));
        }
        Command::Bench(Bench::Codec { json, quick }) => {
            let timing = if quick {
                bench::Timing::quick()
            } else {
                bench::Timing::full()
            };
            let report = bench::codec_speed::run(timing);
            if json {
                return print_json(&report);
            } else {
                print!("{}", bench::codec_speed::table(&report));
            }
        }
    }
    ExitCode::SUCCESS
}
