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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(Bench::Codec { json, quick }) => {
            let timing = if quick {
                bench::Timing::quick()
            } else {
                bench::Timing::full()
            };
            let report = bench::codec_speed::run(timing);
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("gridstore: cannot encode report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", bench::codec_speed::table(&report));
            }
        }
    }
    ExitCode::SUCCESS
}
