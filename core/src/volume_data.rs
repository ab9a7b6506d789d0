//! The data-plane seam: byte-level file access on a volume, as a process with the volume
//! mounted would have. The simulated database runs on it; over `ontap-sim` it is the
//! simulator's in-process data plane (the same copy-on-write tree its snapshots capture).

#[derive(Debug, Clone, thiserror::Error)]
pub enum DataError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("no space left on volume {0}")]
    NoSpace(String),
    #[error("data plane I/O error: {0}")]
    Io(String),
}

pub type DataResult<T> = Result<T, DataError>;

/// Each call is atomic with respect to snapshots: a snapshot sees a write whole or not at
/// all (like a single aligned block write on a real array), and nothing more atomic.
pub trait VolumeData: Send + Sync {
    /// Read up to `len` bytes at `offset` (short at end of file). A missing file is `NotFound`.
    fn read(&self, volume_uuid: &str, path: &str, offset: u64, len: u64) -> DataResult<Vec<u8>>;
    /// Write at `offset`, creating the file (and its directories) if needed.
    fn write(&self, volume_uuid: &str, path: &str, offset: u64, data: &[u8]) -> DataResult<()>;
    fn truncate(&self, volume_uuid: &str, path: &str, size: u64) -> DataResult<()>;
    /// File size, or `None` if the file does not exist.
    fn size(&self, volume_uuid: &str, path: &str) -> DataResult<Option<u64>>;
}
