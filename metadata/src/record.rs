//! Versioned binary encoding of records.
//!
//! A record on disk or on the wire is one tag byte followed by a protobuf
//! message. Protobuf's wire format is what makes evolution planned rather
//! than hoped for: a reader skips fields it does not know, and a field it
//! knows but does not find takes its default. Rules for changing a record:
//! add fields with new numbers, never reuse or retype a number, and bump the
//! tag byte only for a change old readers must refuse.

use thiserror::Error;

/// The first byte of every encoded record.
pub const RECORD_TAG_V1: u8 = 1;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("unsupported record version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed record: {0}")]
    Malformed(String),
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// A sealed record that was not sealed by a key holder for the place
    /// and revision it was found at.
    #[error("sealed record does not authenticate")]
    Unauthentic,
}

/// A record type with the versioned encoding.
pub trait Record: prost::Message + Default + Sized {
    /// Reject values that decode but make no sense (a chunk id that is not
    /// 32 bytes...). Called by `decode`.
    fn validate(&self) -> Result<(), RecordError> {
        Ok(())
    }

    fn encode_record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.encoded_len());
        out.push(RECORD_TAG_V1);
        // Encoding into a Vec cannot run out of space.
        self.encode(&mut out).expect("Vec grows as needed");
        out
    }

    fn decode_record(bytes: &[u8]) -> Result<Self, RecordError> {
        let (&tag, body) = bytes.split_first().ok_or(RecordError::Empty)?;
        if tag != RECORD_TAG_V1 {
            return Err(RecordError::UnsupportedVersion(tag));
        }
        let r = Self::decode(body).map_err(|e| RecordError::Malformed(e.to_string()))?;
        r.validate()?;
        Ok(r)
    }
}
