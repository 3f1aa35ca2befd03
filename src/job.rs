//! `gridstore job submit|status|logs|cancel|list`: a client of a
//! gateway's job API (see `gateway::jobs`).

use clap::{Args, Subcommand};
use gateway::jobs::client::{ClientError, JobClient};
use gateway::jobs::{ProgramBody, SubmitRequest};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct JobArgs {
    /// The gateway's job API (or GRIDSTORE_JOBS_ENDPOINT; default
    /// http://127.0.0.1:9002).
    #[arg(long)]
    endpoint: Option<String>,
    /// Access key id (or GRIDSTORE_ACCESS_KEY, AWS_ACCESS_KEY_ID).
    #[arg(long)]
    access_key: Option<String>,
    /// Secret key (or GRIDSTORE_SECRET_KEY, AWS_SECRET_ACCESS_KEY).
    #[arg(long)]
    secret_key: Option<String>,
    #[command(subcommand)]
    command: JobCommand,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum JobCommand {
    /// Run PROGRAM once per object under BUCKET/PREFIX, beside its data;
    /// each output is stored as OUT/<key>.
    Submit {
        /// The bucket holding the input objects.
        #[arg(long)]
        bucket: String,
        /// Only the objects whose keys start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// BUCKET2/PREFIX2 for the outputs.
        #[arg(long)]
        out: String,
        /// BUCKET/KEY of a program file placed in each task's directory
        /// (under the key's last part); repeatable.
        #[arg(long = "file")]
        files: Vec<String>,
        /// Reduce program (split on spaces), fed every map output; its
        /// output is OUT/_reduce.
        #[arg(long)]
        reduce: Option<String>,
        /// BUCKET/KEY of a file for the reduce program; repeatable.
        #[arg(long = "reduce-file")]
        reduce_files: Vec<String>,
        /// Wall-clock seconds a task may run (default 300; at most the
        /// nodes' `[jobs] max_timeout_secs`).
        #[arg(long)]
        timeout_secs: Option<u64>,
        /// CPU seconds a task may use (default 300; at most `[jobs]
        /// max_cpu_secs`).
        #[arg(long)]
        cpu_secs: Option<u64>,
        /// Memory a task may use, in MiB (default 512; at most `[jobs]
        /// max_memory_mb`).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// locality (default) or random (the baseline locality is
        /// measured against).
        #[arg(long)]
        placement: Option<String>,
        /// Tasks of this job at once per node.
        #[arg(long)]
        per_node: Option<usize>,
        /// Follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        /// The program and its arguments (after `--`).
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
    /// A job's tasks (pending, running, done, failed) and locality.
    Status {
        /// The job's id, as `submit` printed it.
        id: String,
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        /// The whole status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// stderr of the failed tasks (and the reduce), or of one task.
    Logs {
        /// The job's id.
        id: String,
        /// Only the task of this input object key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Stop a job: no more tasks start, running ones are killed.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Your jobs.
    List,
}

fn credential(given: &Option<String>, names: [&str; 2]) -> Option<String> {
    given.clone().or_else(|| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    })
}

fn split_out(out: &str) -> (String, String) {
    match out.split_once('/') {
        Some((b, p)) => (b.to_string(), p.to_string()),
        None => (out.to_string(), String::new()),
    }
}

pub async fn run(args: JobArgs) -> ExitCode {
    let (Some(ak), Some(sk)) = (
        credential(
            &args.access_key,
            ["GRIDSTORE_ACCESS_KEY", "AWS_ACCESS_KEY_ID"],
        ),
        credential(
            &args.secret_key,
            ["GRIDSTORE_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"],
        ),
    ) else {
        eprintln!("gridstore job: give --access-key and --secret-key (or GRIDSTORE_ACCESS_KEY / GRIDSTORE_SECRET_KEY)");
        return ExitCode::FAILURE;
    };
    let endpoint = args
        .endpoint
        .clone()
        .or_else(|| std::env::var("GRIDSTORE_JOBS_ENDPOINT").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9002".into());
    let client = JobClient::new(&endpoint, &ak, &sk);
    match command(&client, args.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gridstore job: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn command(client: &JobClient, cmd: JobCommand) -> Result<ExitCode, ClientError> {
    match cmd {
        JobCommand::Submit {
            bucket,
            prefix,
            out,
            files,
            reduce,
            reduce_files,
            timeout_secs,
            cpu_secs,
            memory_mb,
            placement,
            per_node,
            wait,
            program,
        } => {
            let (out_bucket, out_prefix) = split_out(&out);
            let req = SubmitRequest {
                bucket,
                prefix,
                out_bucket,
                out_prefix,
                map: ProgramBody {
                    argv: program,
                    files,
                },
                reduce: reduce.map(|r| ProgramBody {
                    argv: r.split_whitespace().map(String::from).collect(),
                    files: reduce_files,
                }),
                timeout_secs,
                cpu_secs,
                memory_mb,
                placement,
                per_node,
                max_attempts: None,
            };
            let body =
                serde_json::to_string(&req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
            let v = client.call_json("POST", "/v1/jobs", Some(body)).await?;
            let id = v
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| ClientError::BadResponse("no job id".into()))?
                .to_string();
            println!("{id}");
            if wait {
                return follow(client, &id).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Status { id, wait, json } => {
            if wait {
                return follow(client, &id).await;
            }
            let v = client
                .call_json("GET", &format!("/v1/jobs/{id}"), None)
                .await?;
            if json {
                println!("{v:#}");
            } else {
                print!("{}", v["summary"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Logs { id, key } => {
            let path = match key {
                Some(k) => format!("/v1/jobs/{id}/logs?key={}", urlencode(&k)),
                None => format!("/v1/jobs/{id}/logs"),
            };
            print!("{}", client.call("GET", &path, None).await?);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { id } => {
            let v = client
                .call_json("POST", &format!("/v1/jobs/{id}/cancel"), None)
                .await?;
            print!("{}", v["summary"].as_str().unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List => {
            let v = client.call_json("GET", "/v1/jobs", None).await?;
            for j in v.as_array().into_iter().flatten() {
                let t = &j["tasks"];
                println!(
                    "{}  {:<9} {:<8} {}/{} -> {}/{}  {}/{} done, {} failed",
                    j["id"].as_str().unwrap_or_default(),
                    j["phase"].as_str().unwrap_or_default(),
                    j["placement"].as_str().unwrap_or_default(),
                    j["bucket"].as_str().unwrap_or_default(),
                    j["prefix"].as_str().unwrap_or_default(),
                    j["out_bucket"].as_str().unwrap_or_default(),
                    j["out_prefix"].as_str().unwrap_or_default(),
                    t["done"],
                    t["total"],
                    t["failed"],
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Poll until the job ends, with a progress bar on stderr; the summary
/// on stdout. Exit status: success only if the job is done.
async fn follow(client: &JobClient, id: &str) -> Result<ExitCode, ClientError> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    loop {
        // Long poll: answers at once when the job ends.
        let v = client
            .call_json("GET", &format!("/v1/jobs/{id}?wait=2"), None)
            .await?;
        let t = &v["tasks"];
        let n = |k: &str| t[k].as_u64().unwrap_or(0);
        bar.set_length(n("total"));
        bar.set_position(n("done") + n("failed") + n("cancelled"));
        bar.set_message(format!(
            "{} running, {} failed, {} retries{}",
            n("running"),
            n("failed"),
            n("retries"),
            if v["phase"] == "reducing" {
                ", reducing"
            } else {
                ""
            }
        ));
        if v["finished"].as_bool().unwrap_or(false) {
            bar.finish_and_clear();
            print!("{}", v["summary"].as_str().unwrap_or_default());
            return Ok(if v["phase"] == "done" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
}
