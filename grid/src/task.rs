//! The node RPC of the job runner: one call, `POST /v1/jobs/task:run`,
//! shared by the scheduler (gateway side, `cluster::jobs::JobManager`) and the
//! runner host (`storage-node`'s `jobs` module).
//!
//! The request is a [`TaskRequest`] record (authenticated like every node
//! call). It carries the keys of exactly the chunks the task reads, never
//! a bucket's domain secret, so a node running a task can open that
//! task's input and nothing else; the node keeps them in memory for the
//! task's life only. The response streams as frames, each one type byte
//! and a 4-byte big-endian length then the payload:
//!
//! | type | payload |
//! |---|---|
//! | [`FRAME_STDOUT`] | a piece of the program's stdout, in order |
//! | [`FRAME_ALIVE`] | nothing: the task is queued or running (every few seconds) |
//! | [`FRAME_DONE`] | a [`TaskReport`] record; the last frame |
//!
//! Streaming stdout back lets the gateway store it with `put_object`, so a
//! node never needs a key that writes; a stream that ends without a DONE
//! frame means the node died or dropped the task.
//!
//! A task with many inputs (a reduce reads every map output) sends its
//! request as frames too, so that no request has to hold them all: a
//! [`FRAME_REQUEST`] with the [`TaskRequest`] (its `inputs` then empty),
//! then one [`FRAME_INPUT`] per [`TaskInput`] as the gateway reads them,
//! the body's end closing the program's stdin. A body that starts with a
//! record tag instead is the plain record.

use bytes::{Buf, Bytes, BytesMut};
use metadata::model::ChunkRef;
use metadata::{Record, RecordError};

pub const TASK_RUN: &str = "/v1/jobs/task:run";

pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_DONE: u8 = 2;
pub const FRAME_ALIVE: u8 = 3;
/// Request frames: the task, then its inputs one by one.
pub const FRAME_REQUEST: u8 = 10;
pub const FRAME_INPUT: u8 = 11;

/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest program file shipped with a task.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Most inputs of one task (a reduce reads every map output).
pub const MAX_INPUTS: usize = 100_000;

/// A file placed in the task's directory before the program starts (a
/// script fetched from the grid).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskFile {
    /// A plain file name: no `/`, not `.` or `..`.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// One chunk of an input and the key that opens it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InputChunk {
    #[prost(message, optional, tag = "1")]
    pub chunk: Option<ChunkRef>,
    /// The chunk's AEAD key (32 bytes).
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

/// One object fed to the program's stdin: its chunks in order, or, for an
/// object small enough to live in its manifest, its bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskInput {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, repeated, tag = "2")]
    pub chunks: Vec<InputChunk>,
    #[prost(bytes = "vec", tag = "3")]
    pub inline_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskRequest {
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// `argv[0]` must be an interpreter or binary the node allows.
    #[prost(string, repeated, tag = "2")]
    pub argv: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub files: Vec<TaskFile>,
    /// Concatenated, in order, on the program's stdin.
    #[prost(message, repeated, tag = "4")]
    pub inputs: Vec<TaskInput>,
    /// Limits asked for; the node lowers them to its own caps (0: the
    /// node's cap).
    #[prost(uint64, tag = "5")]
    pub timeout_ms: u64,
    #[prost(uint64, tag = "6")]
    pub cpu_secs: u64,
    #[prost(uint64, tag = "7")]
    pub memory_bytes: u64,
    /// Extra environment variables (names checked by the node).
    #[prost(message, repeated, tag = "8")]
    pub env: Vec<EnvVar>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvVar {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Whether `name` may name a file in a task directory.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

/// Whether `name` may be set in a task's environment: letters, digits
/// and `_`, and none of the variables that change how the loader or an
/// interpreter finds code.
pub fn valid_env_name(name: &str) -> bool {
    let shape = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    let dangerous = name.starts_with("LD_")
        || name == "PATH"
        || name == "HOME"
        || name == "TMPDIR"
        || name.starts_with("PYTHON")
        || name.starts_with("GRIDSTORE_");
    shape && !dangerous
}

impl Record for TaskRequest {
    fn validate(&self) -> Result<(), RecordError> {
        if self.argv.is_empty() || self.argv.len() > 256 {
            return Err(RecordError::Invalid("argv must have 1 to 256 entries"));
        }
        if self.task_id.is_empty() || self.task_id.len() > 1024 {
            return Err(RecordError::Invalid("task id length"));
        }
        if self.files.len() > 16 || self.files.iter().any(|f| !valid_file_name(&f.name)) {
            return Err(RecordError::Invalid("task files: at most 16, plain names"));
        }
        if self.files.iter().any(|f| f.data.len() > MAX_FILE_BYTES) {
            return Err(RecordError::Invalid("task file too large"));
        }
        if self.env.len() > 64 || self.env.iter().any(|e| !valid_env_name(&e.name)) {
            return Err(RecordError::Invalid(
                "task environment: at most 64, safe names",
            ));
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(RecordError::Invalid("too many inputs"));
        }
        self.inputs.iter().try_for_each(TaskInput::validate)
    }
}

impl Record for TaskInput {
    fn validate(&self) -> Result<(), RecordError> {
        if !self.chunks.is_empty() && !self.inline_data.is_empty() {
            return Err(RecordError::Invalid(
                "input has both chunks and inline data",
            ));
        }
        for c in &self.chunks {
            let Some(chunk) = &c.chunk else {
                return Err(RecordError::Invalid("input chunk without its reference"));
            };
            if chunk.id.len() != metadata::model::CHUNK_ID_LEN || c.key.len() != 32 {
                return Err(RecordError::Invalid("chunk id or key length"));
            }
            let Some(e) = chunk.erasure else {
                return Err(RecordError::Invalid("input chunk without erasure shape"));
            };
            if e.data == 0 || e.data as usize + e.parity as usize > metadata::MAX_SHARDS {
                return Err(RecordError::Invalid("input chunk erasure shape"));
            }
        }
        Ok(())
    }
}

/// What became of a task, sent as the last frame.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskReport {
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The program's exit code, when it exited.
    #[prost(sint32, optional, tag = "2")]
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    #[prost(sint32, optional, tag = "3")]
    pub signal: Option<i32>,
    /// Killed for running past its wall-clock limit.
    #[prost(bool, tag = "4")]
    pub timed_out: bool,
    /// The start of the program's stderr (the node keeps at most 64 KiB).
    #[prost(bytes = "vec", tag = "5")]
    pub stderr: Vec<u8>,
    #[prost(bool, tag = "6")]
    pub stderr_truncated: bool,
    /// Why the task could not run or finish (set up, input, output limit),
    /// empty when the program ran to its end.
    #[prost(string, tag = "7")]
    pub error: String,
    /// Shard bytes read from this node's own disk.
    #[prost(uint64, tag = "8")]
    pub bytes_local: u64,
    /// Shard bytes fetched from other nodes on this node's site.
    #[prost(uint64, tag = "9")]
    pub bytes_site: u64,
    /// Shard bytes fetched from other sites.
    #[prost(uint64, tag = "10")]
    pub bytes_remote: u64,
    /// Input bytes that came inside the request (objects inline in their
    /// manifests).
    #[prost(uint64, tag = "11")]
    pub bytes_inline: u64,
    #[prost(uint64, tag = "12")]
    pub stdout_bytes: u64,
    #[prost(uint64, tag = "13")]
    pub wall_ms: u64,
    /// Whether the error is the node's (input unreadable, could not start)
    /// rather than the program's: worth retrying elsewhere.
    #[prost(bool, tag = "14")]
    pub node_fault: bool,
}
impl Record for TaskReport {}

impl TaskReport {
    /// The program ran, exited 0 and nothing else went wrong.
    pub fn succeeded(&self) -> bool {
        self.error.is_empty() && !self.timed_out && self.exit_code == Some(0)
    }

    /// One line saying how it ended.
    pub fn outcome(&self) -> String {
        if !self.error.is_empty() {
            self.error.clone()
        } else if self.timed_out {
            "killed: over its time limit".into()
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            match self.exit_code {
                Some(0) => "ok".into(),
                Some(c) => format!("exited with code {c}"),
                None => "ended without an exit code".into(),
            }
        }
    }
}

/// One frame on the wire.
pub fn frame(kind: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.extend_from_slice(&[kind]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b.freeze()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Splits a byte stream back into frames.
pub struct FrameReader {
    buf: BytesMut,
    limit: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::with_limit(MAX_FRAME)
    }
}

impl FrameReader {
    /// Frames of up to `limit` bytes (a streamed request's first frame
    /// carries the program files, so it may exceed [`MAX_FRAME`]).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            limit,
        }
    }

    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = self.buf[0];
        self.buf.advance(5);
        Ok(Some((kind, self.buf.split_to(len).freeze())))
    }

    /// Bytes received that do not yet make a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_come_back_whole() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame(FRAME_STDOUT, b"hello"));
        wire.extend_from_slice(&frame(FRAME_ALIVE, b""));
        wire.extend_from_slice(&frame(FRAME_DONE, &[7; 300]));
        for cut in 0..wire.len() {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 3);
            assert_eq!(got[0], (FRAME_STDOUT, Bytes::from_static(b"hello")));
            assert_eq!(got[1].1.len(), 0);
            assert_eq!(got[2].1.len(), 300);
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut r = FrameReader::default();
        r.push(&[FRAME_STDOUT, 0xff, 0xff, 0xff, 0xff]);
        assert!(r.next_frame().is_err());
    }

    #[test]
    fn names_that_could_escape_or_hijack_are_refused() {
        assert!(valid_file_name("wc.py"));
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!valid_file_name(bad), "{bad}");
        }
        assert!(valid_env_name("WORDS_MIN"));
        for bad in [
            "LD_PRELOAD",
            "PATH",
            "PYTHONPATH",
            "1X",
            "A-B",
            "GRIDSTORE_X",
            "",
        ] {
            assert!(!valid_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_task_request_round_trips_and_bad_ones_are_refused() {
        let ok = TaskRequest {
            task_id: "j/t".into(),
            argv: vec!["python3".into(), "-c".into(), "pass".into()],
            ..Default::default()
        };
        let back = TaskRequest::decode_record(&ok.encode_record()).unwrap();
        assert_eq!(back, ok);
        let mut bad = ok.clone();
        bad.argv.clear();
        assert!(TaskRequest::decode_record(&bad.encode_record()).is_err());
        let mut bad = ok;
        bad.inputs.push(TaskInput {
            key: "k".into(),
            chunks: vec![InputChunk {
                chunk: Some(ChunkRef {
                    id: vec![0; 5],
                    ..Default::default()
                }),
                key: vec![0; 32],
            }],
            inline_data: vec![],
        });
        assert!(TaskRequest::decode_record(&bad.encode_record()).is_err());
    }
}
