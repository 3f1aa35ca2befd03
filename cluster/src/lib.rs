//! The object layer every front end uses: node RPC client, quorum reads and
//! writes, streaming encode/decode, versions, listing, multipart, dedup, GC.
//!
//! Empty until the cluster object layer issue.
