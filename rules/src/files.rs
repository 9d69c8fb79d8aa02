//! The files a policy read at load, each with a digest of the bytes that were read. A reloader
//! compares these with the disk: a modification stamp alone misses an edit made while the load
//! ran (the stamp taken after the load already shows it) and one that lands within the file
//! system's timestamp granularity.

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

/// A SHA-256 of a file's bytes.
pub type Digest = [u8; 32];

/// One file read at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRead {
    /// The path read (a relative name is joined to the policy's folder).
    pub path: PathBuf,
    /// The digest of the bytes read; `None` when the file could not be read.
    pub digest: Option<Digest>,
}

/// The digest [`FileRead::digest`] holds for `bytes`.
pub fn digest(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}
