//! `gridstore server` as a child process on loopback ports the system
//! picks, for the tests that drive the binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `gridstore server`, killed when dropped.
pub struct Server {
    child: Child,
    /// Listeners, host:port.
    pub s3: String,
    pub webdav: String,
    pub jobs: String,
    pub admin: String,
    /// The root key pair.
    pub access_key: String,
    pub secret_key: String,
    /// Everything the server wrote on stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// `gridstore server DIR` with every listener on a port the system
    /// picks, not started.
    pub fn command(data: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gridstore"));
        cmd.arg("server").arg(data).args([
            "--listen",
            "127.0.0.1:0",
            "--webdav-listen",
            "127.0.0.1:0",
            "--jobs-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]);
        cmd
    }

    /// `gridstore server DIR` with `RUST_LOG` set to `rust_log`, once it
    /// has printed its addresses and credentials.
    pub fn start(data: &Path, rust_log: &str) -> Server {
        let mut child = Server::command(data)
            .env("RUST_LOG", rust_log)
            .env_remove("GRIDSTORE_ACCESS_KEY")
            .env_remove("GRIDSTORE_SECRET_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut s3, mut webdav, mut jobs, mut admin, mut ak, mut sk) =
            (None, None, None, None, None, None);
        let word = |rest: &str| rest.split(['/', ' ']).next().map(str::to_string);
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("gridstore server ready: S3 on http://") {
                s3 = word(rest);
            }
            if let Some(rest) = line.strip_prefix("WebDAV on http://") {
                webdav = word(rest);
            }
            if let Some(rest) = line.strip_prefix("jobs on http://") {
                jobs = word(rest);
            }
            if let Some(rest) = line.strip_prefix("admin on http://") {
                admin = word(rest);
            }
            if let Some(k) = line.strip_prefix("access key: ") {
                ak = Some(k.to_string());
            }
            if let Some(k) = line.strip_prefix("secret key: ") {
                sk = Some(k.to_string());
            }
            if line.starts_with("data: ") {
                break;
            }
        }
        // Keep reading: a line printed later would meet a closed pipe, and
        // a failed print ends the server.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            s3: s3.expect("the server never said it was ready (no S3 address)"),
            webdav: webdav.expect("no WebDAV address printed"),
            jobs: jobs.expect("no jobs address printed"),
            admin: admin.expect("no admin address printed"),
            access_key: ak.expect("no access key printed"),
            secret_key: sk.expect("no secret key printed"),
            log,
        }
    }

    /// Wait until a stderr line satisfies `pred` (the access line is
    /// written when the answer's last byte has gone, a moment after the
    /// client has it).
    pub fn log_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many stderr lines so far satisfy `pred`.
    pub fn log_count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.log.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// SIGKILL, and wait for it to end.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}
