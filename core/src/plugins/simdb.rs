//! `simdb`: the simulated database of the fault-injection harness.
//!
//! A tiny key-value database (keys `0..n_keys`, values `u64`) whose on-volume format and
//! buffering deliberately reproduce what makes crash-consistent snapshots unsafe, so the
//! harness can prove both that an application-consistent backup restores exactly and that a
//! crash-consistent snapshot does not.
//!
//! # Files
//! On the DATA volume:
//! - `data.db`: `ceil(n_keys / VALUES_PER_PAGE)` pages of [`PAGE_SIZE`] bytes. Page layout
//!   (little endian): `0..4` magic `SDBP`, `4..8` page number, `8..16` page LSN (the last txid
//!   applied to the page), `16..20` n_keys, `20..24` number of values in this page, `24..28`
//!   zero, `28..32` CRC-32 (IEEE) of bytes `0..28` and `32..4096`, then
//!   [`VALUES_PER_PAGE`] (508) `u64` values (the last page is zero padded).
//! - `checkpoint`: one 4 KiB block: `0..4` magic `SDBC`, `4..8` format version (1), `8..16`
//!   checkpoint txid C, `16..24` WAL offset W, `24..28` n_keys, `28..32` flags (bit 0: the
//!   constant-total invariant is kept), `32..48` the constant total (`u128`), `48..52` CRC-32
//!   of bytes `0..48`, zero padded. Meaning: every change of a txid `<= C` is in `data.db`,
//!   and the WAL record of txid `C + 1` (if any) starts at offset W of `wal.log`.
//!
//! On the WAL volume (which may be the data volume):
//! - `wal.log`: append-only records `[magic SDBW: 4][len: u32][txid: u64][n: u32]
//!   [(key: u32, value: u64) * n][crc32: u32]`, `len = 24 + 12 n` the whole record, the CRC
//!   over everything before it. When a checkpoint covers every durable record and no
//!   record is half-flushed, the log is recycled: the checkpoint is written with `W = 0`,
//!   then `wal.log` is truncated and the next records start at offset 0 (like a redo log that
//!   wraps). This is what makes a WAL volume snapshotted *later* than its data volume torn.
//!
//! # Buffering
//! [`SimDb::try_commit`] assigns the next txid, applies the writes to the in-memory buffer
//! pool, appends the record to the WAL buffer and acknowledges at once (asynchronous commit,
//! like `innodb_flush_log_at_trx_commit=2`). [`SimDb::background_step`] flushes part of the
//! WAL buffer (possibly cutting a record), writes back one dirty page even if the WAL is not
//! yet durable up to its LSN, or writes a checkpoint. Every write is one [`VolumeData::write`]
//! (or `truncate`) call, so a snapshot between two calls sees the intermediate state.
//!
//! # Recovery
//! Read the checkpoint, load the pages (checksums verified), replay WAL records from W while
//! each is whole, valid and has the next txid (a record is applied to a page only if its
//! txid is above the page LSN). Anything the database itself can see is wrong (a page LSN
//! ahead of the recovered log, a checkpoint pointing beyond the end of the log, a broken
//! constant-total invariant) is listed in [`RecoveredDb::anomalies`].
//!
//! # Fence and faults
//! [`AppPlugin::quiesce`] flushes everything, writes a checkpoint and raises the fence:
//! commits return [`CommitError::Frozen`] until `unquiesce`. Background I/O stops while the
//! fence is up. Faults for the next quiesce are armed with [`SimDb::inject_fault`];
//! [`SimDb::kill_session`] drops a freeze as MySQL drops `FLUSH TABLES WITH READ LOCK` when
//! the connection dies. After a freeze ended by a killed session (or by `stop`),
//! `unquiesce` returns [`PluginError::SessionLost`], every time, until the next quiesce: the
//! orchestrator (and its watchdog) must learn that the lock was not held to the end.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::domain::ConsistencyPoint;
use crate::plugin::{AppPlugin, PluginError, RecoveryReport, RecoveryTarget};
use crate::storage::VolumeInfo;
use crate::volume_data::{DataError, VolumeData};

/// Size of a data page and of the checkpoint block.
pub const PAGE_SIZE: usize = 4096;
/// Bytes of page header before the values.
pub const PAGE_HEADER_BYTES: usize = 32;
/// Values per data page: 508, so n_keys = 1024 takes 3 pages.
pub const VALUES_PER_PAGE: usize = (PAGE_SIZE - PAGE_HEADER_BYTES) / 8;
/// Upper bound on n_keys (4 MiB of values), so a corrupt header cannot ask for huge buffers.
pub const N_KEYS_MAX: u32 = 1 << 19;
pub const DATA_FILE: &str = "data.db";
pub const CHECKPOINT_FILE: &str = "checkpoint";
pub const WAL_FILE: &str = "wal.log";

const PAGE_MAGIC: [u8; 4] = *b"SDBP";
const CHECKPOINT_MAGIC: [u8; 4] = *b"SDBC";
const WAL_MAGIC: [u8; 4] = *b"SDBW";
const FORMAT_VERSION: u32 = 1;
const CHECKPOINT_CRC_OFFSET: usize = 48;
const WAL_HEADER_BYTES: usize = 20;
const WAL_RECORD_OVERHEAD_BYTES: usize = 24;
const WAL_PAIR_BYTES: usize = 12;

/// Background step weights, out of 100: WAL flush below the first, page write-back below
/// the second, checkpoint otherwise (and whenever the chosen action has nothing to do).
const BACKGROUND_WAL_FLUSH_BELOW: u32 = 45;
const BACKGROUND_PAGE_WRITE_BELOW: u32 = 85;

// ---------------------------------------------------------------------------------------
// Consistency points
// ---------------------------------------------------------------------------------------

/// The consistency point of txid `txid`: `txid=N`.
pub fn consistency_point(txid: u64) -> ConsistencyPoint {
    ConsistencyPoint(format!("txid={txid}"))
}

/// The txid of a point made by [`consistency_point`].
pub fn parse_consistency_point(point: &ConsistencyPoint) -> Option<u64> {
    point.0.strip_prefix("txid=")?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// Errors and public records
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The fence is up (quiesced, or a quiesce is waiting for its lock).
    #[error("commits are frozen")]
    Frozen,
    /// The instance is stopped.
    #[error("the database is stopped")]
    Stopped,
    #[error("key {key} out of range 0..{n_keys}")]
    KeyOutOfRange { key: u32, n_keys: u32 },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SimDbError {
    #[error("simdb I/O: {0}")]
    Data(#[from] DataError),
    /// The files are not a simdb database, or a page or the checkpoint fails its checks.
    #[error("simdb corrupt: {0}")]
    Corrupt(String),
    /// Wrong number of volumes, bad arguments.
    #[error("simdb: {0}")]
    Invalid(String),
}

impl SimDbError {
    fn into_plugin_error(self) -> PluginError {
        match self {
            SimDbError::Data(DataError::NotFound(_)) | SimDbError::Corrupt(_) => {
                PluginError::Verification(self.to_string())
            }
            SimDbError::Data(_) | SimDbError::Invalid(_) => PluginError::App(self.to_string()),
        }
    }
}

/// The volumes a simdb lives on: `[data]` or `[data, wal]` (uuids).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SimDbVolumes {
    pub data: String,
    pub wal: String,
}

impl SimDbVolumes {
    /// Data and WAL on one volume.
    pub fn single(uuid: impl Into<String>) -> Self {
        let uuid = uuid.into();
        SimDbVolumes {
            data: uuid.clone(),
            wal: uuid,
        }
    }

    /// Data and WAL on two volumes (a consistency-group snapshot is needed).
    pub fn split(data: impl Into<String>, wal: impl Into<String>) -> Self {
        SimDbVolumes {
            data: data.into(),
            wal: wal.into(),
        }
    }

    /// From the app's volumes in order: `[data]` or `[data, wal]`.
    pub fn from_volume_infos(volumes: &[VolumeInfo]) -> Result<Self, SimDbError> {
        match volumes {
            [data] => Ok(Self::single(data.uuid.clone())),
            [data, wal] => Ok(Self::split(data.uuid.clone(), wal.uuid.clone())),
            _ => Err(SimDbError::Invalid(format!(
                "simdb takes [data] or [data, wal] volumes, got {}",
                volumes.len()
            ))),
        }
    }

    pub fn is_split(&self) -> bool {
        self.data != self.wal
    }
}

/// What recovery computes from the files (read-only: [`read_recovered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredDb {
    /// Every value, index = key.
    pub values: Vec<u64>,
    /// The last txid recovered (the checkpoint's, or the last replayed record's).
    pub last_txid: u64,
    /// Records were replayed, a torn or invalid tail was found, or the checkpoint points
    /// beyond the end of the log.
    pub needed_crash_recovery: bool,
    pub checkpoint_txid: u64,
    pub n_replayed: u64,
    /// Bytes of `wal.log` after the last record replayed (a torn record, garbage, a record
    /// whose txid does not follow): discarded by recovery.
    pub discarded_wal_bytes: u64,
    /// The constant total kept by the bank invariant, if the database keeps one.
    pub constant_total: Option<u128>,
    /// What the database itself can see is wrong: pages newer than the log, a checkpoint
    /// beyond the end of the log, a broken constant total. Empty for a sane database.
    pub anomalies: Vec<String>,
}

/// Faults armed for the next quiesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimDbFault {
    /// The next quiesce fails with [`PluginError::App`] (like a lock wait timeout) without
    /// freezing anything.
    QuiesceFails,
    /// The next quiesce raises the fence (commits return Frozen: FTWRL waiting for its lock
    /// already blocks writers) and never returns by itself. It ends when `unquiesce`,
    /// `kill_session` or `stop` drops the fence, and then returns an error. Dropping the
    /// future (the caller's timeout) does NOT drop the fence: only those calls do.
    QuiesceHangs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeEnd {
    Unquiesced,
    /// [`SimDb::kill_session`]: the database dropped the freeze itself.
    SessionKilled,
    /// The instance was stopped while frozen.
    Stopped,
    /// Quiesce failed (I/O error while flushing) and dropped the fence itself.
    QuiesceFailed,
}

/// One freeze: from the moment the fence went up to the moment it came down, as the
/// database saw it (independent of what the orchestrator claims).
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeRecord {
    pub started: Instant,
    pub started_wall: DateTime<Utc>,
    pub ended: Option<Instant>,
    pub ended_wall: Option<DateTime<Utc>>,
    pub end: Option<FreezeEnd>,
    /// The txid returned as consistency point; `None` for a quiesce that never completed.
    pub point: Option<u64>,
}

impl FreezeRecord {
    /// How long the fence was (or, if still up, has been) up.
    pub fn duration(&self, now: Instant) -> Duration {
        self.ended
            .unwrap_or(now)
            .saturating_duration_since(self.started)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    /// [`SimDb::open`], [`SimDb::create`] or [`AppPlugin::start`] on the instance's own volumes.
    Start,
    /// [`AppPlugin::recover`] in place.
    InPlace,
    /// [`AppPlugin::recover`] on other volumes (a clone): a second instance, closed after.
    Clone,
}

/// Every open of the database, as the database saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryRecord {
    pub kind: RecoveryKind,
    pub volumes: SimDbVolumes,
    pub at_wall: DateTime<Utc>,
    pub outcome: Result<RecoveredDb, String>,
}

/// What one background step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackgroundAction {
    /// Stopped or frozen: nothing.
    Idle,
    WalFlush {
        n_bytes: u64,
        durable_txid: u64,
    },
    PageWrite {
        page: u32,
        page_lsn: u64,
    },
    Checkpoint {
        txid: u64,
        wal_offset: u64,
        wal_recycled: bool,
    },
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3, as zlib) over the concatenation of `parts`.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for &b in *part {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

fn get_u32(buf: &[u8], offset: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[offset..offset + 4]);
    u32::from_le_bytes(a)
}

fn get_u64(buf: &[u8], offset: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[offset..offset + 8]);
    u64::from_le_bytes(a)
}

fn get_u128(buf: &[u8], offset: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&buf[offset..offset + 16]);
    u128::from_le_bytes(a)
}

fn n_pages(n_keys: u32) -> usize {
    (n_keys as usize).div_ceil(VALUES_PER_PAGE)
}

fn page_of(key: u32) -> usize {
    key as usize / VALUES_PER_PAGE
}

fn page_range(page: usize, n_keys: u32) -> std::ops::Range<usize> {
    let start = page * VALUES_PER_PAGE;
    start..(start + VALUES_PER_PAGE).min(n_keys as usize)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CheckpointBlock {
    txid: u64,
    wal_offset: u64,
    n_keys: u32,
    constant_total: Option<u128>,
}

fn encode_checkpoint(c: &CheckpointBlock) -> Vec<u8> {
    let mut b = vec![0u8; PAGE_SIZE];
    b[0..4].copy_from_slice(&CHECKPOINT_MAGIC);
    b[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&c.txid.to_le_bytes());
    b[16..24].copy_from_slice(&c.wal_offset.to_le_bytes());
    b[24..28].copy_from_slice(&c.n_keys.to_le_bytes());
    let flags: u32 = u32::from(c.constant_total.is_some());
    b[28..32].copy_from_slice(&flags.to_le_bytes());
    b[32..48].copy_from_slice(&c.constant_total.unwrap_or(0).to_le_bytes());
    let crc = crc32(&[&b[..CHECKPOINT_CRC_OFFSET]]);
    b[CHECKPOINT_CRC_OFFSET..CHECKPOINT_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_checkpoint(b: &[u8]) -> Result<CheckpointBlock, SimDbError> {
    let corrupt = |what: &str| SimDbError::Corrupt(format!("{CHECKPOINT_FILE}: {what}"));
    if b.len() < CHECKPOINT_CRC_OFFSET + 4 {
        return Err(corrupt(&format!("short block ({} bytes)", b.len())));
    }
    if b[0..4] != CHECKPOINT_MAGIC {
        return Err(corrupt("bad magic"));
    }
    if get_u32(b, CHECKPOINT_CRC_OFFSET) != crc32(&[&b[..CHECKPOINT_CRC_OFFSET]]) {
        return Err(corrupt("bad checksum"));
    }
    let version = get_u32(b, 4);
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "format version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let n_keys = get_u32(b, 24);
    if n_keys == 0 || n_keys > N_KEYS_MAX {
        return Err(corrupt(&format!("n_keys {n_keys} out of 1..={N_KEYS_MAX}")));
    }
    let constant_total = (get_u32(b, 28) & 1 == 1).then(|| get_u128(b, 32));
    Ok(CheckpointBlock {
        txid: get_u64(b, 8),
        wal_offset: get_u64(b, 16),
        n_keys,
        constant_total,
    })
}

fn encode_page(page: usize, page_lsn: u64, n_keys: u32, values: &[u64]) -> Vec<u8> {
    let mut b = vec![0u8; PAGE_SIZE];
    b[0..4].copy_from_slice(&PAGE_MAGIC);
    b[4..8].copy_from_slice(&(page as u32).to_le_bytes());
    b[8..16].copy_from_slice(&page_lsn.to_le_bytes());
    b[16..20].copy_from_slice(&n_keys.to_le_bytes());
    b[20..24].copy_from_slice(&(values.len() as u32).to_le_bytes());
    for (i, v) in values.iter().enumerate() {
        let at = PAGE_HEADER_BYTES + 8 * i;
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32(&[&b[..28], &b[PAGE_HEADER_BYTES..]]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The page's LSN and values, after checking magic, number, key count and checksum.
fn decode_page(b: &[u8], page: usize, n_keys: u32) -> Result<(u64, Vec<u64>), SimDbError> {
    let corrupt = |what: &str| SimDbError::Corrupt(format!("{DATA_FILE} page {page}: {what}"));
    if b.len() != PAGE_SIZE {
        return Err(corrupt(&format!("short page ({} bytes)", b.len())));
    }
    if b[0..4] != PAGE_MAGIC {
        return Err(corrupt("bad magic"));
    }
    if get_u32(b, 28) != crc32(&[&b[..28], &b[PAGE_HEADER_BYTES..]]) {
        return Err(corrupt("bad checksum"));
    }
    let range = page_range(page, n_keys);
    if get_u32(b, 4) as usize != page
        || get_u32(b, 16) != n_keys
        || get_u32(b, 20) as usize != range.len()
    {
        return Err(corrupt(
            "header does not match its position or the checkpoint's n_keys",
        ));
    }
    let values = (0..range.len())
        .map(|i| get_u64(b, PAGE_HEADER_BYTES + 8 * i))
        .collect();
    Ok((get_u64(b, 8), values))
}

fn encode_wal_record(txid: u64, writes: &[(u32, u64)]) -> Vec<u8> {
    let len = WAL_RECORD_OVERHEAD_BYTES + WAL_PAIR_BYTES * writes.len();
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&WAL_MAGIC);
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(&txid.to_le_bytes());
    b.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (key, value) in writes {
        b.extend_from_slice(&key.to_le_bytes());
        b.extend_from_slice(&value.to_le_bytes());
    }
    let crc = crc32(&[&b]);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

struct WalRecord {
    txid: u64,
    writes: Vec<(u32, u64)>,
    len: usize,
}

/// The record at the start of `b`, or `None` if it is torn, damaged or not a record.
fn decode_wal_record(b: &[u8], n_keys: u32) -> Option<WalRecord> {
    if b.len() < WAL_HEADER_BYTES || b[0..4] != WAL_MAGIC {
        return None;
    }
    let len = get_u32(b, 4) as usize;
    let n = get_u32(b, 16) as usize;
    let expected_len = n
        .checked_mul(WAL_PAIR_BYTES)?
        .checked_add(WAL_RECORD_OVERHEAD_BYTES)?;
    if len != expected_len || len > b.len() {
        return None;
    }
    if get_u32(b, len - 4) != crc32(&[&b[..len - 4]]) {
        return None;
    }
    let mut writes = Vec::with_capacity(n);
    for i in 0..n {
        let at = WAL_HEADER_BYTES + WAL_PAIR_BYTES * i;
        let key = get_u32(b, at);
        if key >= n_keys {
            return None;
        }
        writes.push((key, get_u64(b, at + 4)));
    }
    Some(WalRecord {
        txid: get_u64(b, 8),
        writes,
        len,
    })
}

// ---------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------

fn read_file(vd: &dyn VolumeData, volume: &str, path: &str) -> Result<Vec<u8>, SimDbError> {
    let size = vd
        .size(volume, path)?
        .ok_or_else(|| DataError::NotFound(format!("{volume}:{path}")))?;
    Ok(vd.read(volume, path, 0, size)?)
}

struct Recovery {
    db: RecoveredDb,
    page_lsns: Vec<u64>,
    n_keys: u32,
    /// Where the next record goes: the end of the last record replayed (or of the log).
    wal_valid_end: u64,
}

fn recover_files(vd: &dyn VolumeData, volumes: &SimDbVolumes) -> Result<Recovery, SimDbError> {
    let checkpoint = decode_checkpoint(&read_file(vd, &volumes.data, CHECKPOINT_FILE)?)?;
    let n_keys = checkpoint.n_keys;
    let data = read_file(vd, &volumes.data, DATA_FILE)?;
    let n_pages = n_pages(n_keys);
    if data.len() < n_pages * PAGE_SIZE {
        return Err(SimDbError::Corrupt(format!(
            "{DATA_FILE}: {} bytes, {n_pages} pages expected",
            data.len()
        )));
    }
    let mut values = Vec::with_capacity(n_keys as usize);
    let mut page_lsns = Vec::with_capacity(n_pages);
    for page in 0..n_pages {
        let (lsn, page_values) = decode_page(
            &data[page * PAGE_SIZE..(page + 1) * PAGE_SIZE],
            page,
            n_keys,
        )?;
        page_lsns.push(lsn);
        values.extend(page_values);
    }

    let wal = read_file(vd, &volumes.wal, WAL_FILE)?;
    let wal_len = wal.len() as u64;
    let mut anomalies = Vec::new();
    let mut last_txid = checkpoint.txid;
    let mut n_replayed = 0u64;
    let (wal_valid_end, discarded_wal_bytes, beyond_end) = if checkpoint.wal_offset > wal_len {
        anomalies.push(format!(
            "the checkpoint (txid {}) points at offset {} of {WAL_FILE}, beyond its end ({wal_len} bytes)",
            checkpoint.txid, checkpoint.wal_offset
        ));
        (wal_len, 0, true)
    } else {
        let mut pos = checkpoint.wal_offset as usize;
        while let Some(record) = decode_wal_record(&wal[pos..], n_keys) {
            if record.txid != last_txid + 1 {
                break;
            }
            let mut touched = Vec::new();
            for &(key, value) in &record.writes {
                let page = page_of(key);
                if record.txid > page_lsns[page] {
                    values[key as usize] = value;
                    touched.push(page);
                }
            }
            for page in touched {
                page_lsns[page] = record.txid;
            }
            last_txid = record.txid;
            n_replayed += 1;
            pos += record.len;
        }
        (pos as u64, wal_len - pos as u64, false)
    };
    for (page, &lsn) in page_lsns.iter().enumerate() {
        if lsn > last_txid {
            anomalies.push(format!(
                "page {page} has LSN {lsn}, ahead of the recovered log (last txid {last_txid})"
            ));
        }
    }
    if let Some(total) = checkpoint.constant_total {
        let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
        if sum != total {
            anomalies.push(format!(
                "constant-total invariant broken: total {sum}, expected {total}"
            ));
        }
    }
    Ok(Recovery {
        db: RecoveredDb {
            values,
            last_txid,
            needed_crash_recovery: n_replayed > 0 || discarded_wal_bytes > 0 || beyond_end,
            checkpoint_txid: checkpoint.txid,
            n_replayed,
            discarded_wal_bytes,
            constant_total: checkpoint.constant_total,
            anomalies,
        },
        page_lsns,
        n_keys,
        wal_valid_end,
    })
}

/// Recovery as the database would run it on open, without writing anything: what a checker
/// reads from a snapshot or a clone.
pub fn read_recovered(
    volume_data: &dyn VolumeData,
    volumes: &SimDbVolumes,
) -> Result<RecoveredDb, SimDbError> {
    recover_files(volume_data, volumes).map(|r| r.db)
}

/// Recovery, then make the files clean: write every page (page LSNs clamped to the recovered
/// txid), a checkpoint at the recovered txid, and cut the discarded WAL tail.
fn open_files(vd: &dyn VolumeData, volumes: &SimDbVolumes) -> Result<Recovery, SimDbError> {
    let mut recovery = recover_files(vd, volumes)?;
    if recovery.db.needed_crash_recovery || !recovery.db.anomalies.is_empty() {
        let last_txid = recovery.db.last_txid;
        for (page, lsn) in recovery.page_lsns.iter_mut().enumerate() {
            *lsn = (*lsn).min(last_txid);
            let bytes = encode_page(
                page,
                *lsn,
                recovery.n_keys,
                &recovery.db.values[page_range(page, recovery.n_keys)],
            );
            vd.write(&volumes.data, DATA_FILE, (page * PAGE_SIZE) as u64, &bytes)?;
        }
        let checkpoint = CheckpointBlock {
            txid: last_txid,
            wal_offset: recovery.wal_valid_end,
            n_keys: recovery.n_keys,
            constant_total: recovery.db.constant_total,
        };
        vd.write(
            &volumes.data,
            CHECKPOINT_FILE,
            0,
            &encode_checkpoint(&checkpoint),
        )?;
        vd.truncate(&volumes.wal, WAL_FILE, recovery.wal_valid_end)?;
    }
    Ok(recovery)
}

/// Write a new, empty database (txid 0) with these values. With `constant_total`, the sum
/// of the values is recorded and recovery checks it (the bank invariant).
pub fn format(
    volume_data: &dyn VolumeData,
    volumes: &SimDbVolumes,
    initial_values: &[u64],
    constant_total: bool,
) -> Result<(), SimDbError> {
    let n_keys = u32::try_from(initial_values.len())
        .ok()
        .filter(|&n| n > 0 && n <= N_KEYS_MAX)
        .ok_or_else(|| {
            SimDbError::Invalid(format!(
                "n_keys {} out of 1..={N_KEYS_MAX}",
                initial_values.len()
            ))
        })?;
    for page in 0..n_pages(n_keys) {
        let bytes = encode_page(page, 0, n_keys, &initial_values[page_range(page, n_keys)]);
        volume_data.write(&volumes.data, DATA_FILE, (page * PAGE_SIZE) as u64, &bytes)?;
    }
    volume_data.write(&volumes.wal, WAL_FILE, 0, &[])?;
    volume_data.truncate(&volumes.wal, WAL_FILE, 0)?;
    let total = initial_values.iter().map(|&v| u128::from(v)).sum();
    let checkpoint = CheckpointBlock {
        txid: 0,
        wal_offset: 0,
        n_keys,
        constant_total: constant_total.then_some(total),
    };
    volume_data.write(
        &volumes.data,
        CHECKPOINT_FILE,
        0,
        &encode_checkpoint(&checkpoint),
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The running instance
// ---------------------------------------------------------------------------------------

/// Where the instance does its I/O.
struct Io<'a> {
    vd: &'a dyn VolumeData,
    volumes: &'a SimDbVolumes,
    n_keys: u32,
    constant_total: Option<u128>,
}

/// In-memory state of a running instance: the buffer pool (every page resident) and the WAL
/// buffer. Flushed by a clean stop, dropped without flushing by a crash.
struct Mem {
    values: Vec<u64>,
    page_lsns: Vec<u64>,
    /// Dirty page -> the first txid that dirtied it since it was last written (rec LSN).
    dirty: BTreeMap<usize, u64>,
    last_txid: u64,
    /// The last txid whose whole record is in `wal.log`.
    durable_txid: u64,
    /// Bytes not yet in `wal.log`; they start at file offset `wal_buffer_offset`, possibly
    /// in the middle of a record whose head was flushed.
    wal_buffer: Vec<u8>,
    wal_buffer_offset: u64,
    /// (txid, end offset in `wal.log`) of every record after the checkpoint.
    wal_index: VecDeque<(u64, u64)>,
    checkpoint_txid: u64,
    checkpoint_offset: u64,
}

impl Mem {
    fn from_recovery(recovery: Recovery) -> Mem {
        let last_txid = recovery.db.last_txid;
        Mem {
            values: recovery.db.values,
            page_lsns: recovery.page_lsns,
            dirty: BTreeMap::new(),
            last_txid,
            durable_txid: last_txid,
            wal_buffer: Vec::new(),
            wal_buffer_offset: recovery.wal_valid_end,
            wal_index: VecDeque::new(),
            checkpoint_txid: last_txid,
            checkpoint_offset: recovery.wal_valid_end,
        }
    }

    fn commit(&mut self, writes: &[(u32, u64)]) -> u64 {
        let txid = self.last_txid + 1;
        for &(key, value) in writes {
            let page = page_of(key);
            self.values[key as usize] = value;
            self.page_lsns[page] = txid;
            self.dirty.entry(page).or_insert(txid);
        }
        self.wal_buffer
            .extend_from_slice(&encode_wal_record(txid, writes));
        self.wal_index
            .push_back((txid, self.wal_buffer_offset + self.wal_buffer.len() as u64));
        self.last_txid = txid;
        txid
    }

    /// Write the first `n_bytes` of the WAL buffer (all of it if larger).
    fn flush_wal(&mut self, io: &Io<'_>, n_bytes: usize) -> Result<u64, DataError> {
        let n_bytes = n_bytes.min(self.wal_buffer.len());
        if n_bytes == 0 {
            return Ok(0);
        }
        io.vd.write(
            &io.volumes.wal,
            WAL_FILE,
            self.wal_buffer_offset,
            &self.wal_buffer[..n_bytes],
        )?;
        self.wal_buffer.drain(..n_bytes);
        self.wal_buffer_offset += n_bytes as u64;
        for &(txid, end) in &self.wal_index {
            if end > self.wal_buffer_offset {
                break;
            }
            self.durable_txid = self.durable_txid.max(txid);
        }
        Ok(n_bytes as u64)
    }

    fn write_page(&mut self, io: &Io<'_>, page: usize) -> Result<u64, DataError> {
        let lsn = self.page_lsns[page];
        let bytes = encode_page(
            page,
            lsn,
            io.n_keys,
            &self.values[page_range(page, io.n_keys)],
        );
        io.vd.write(
            &io.volumes.data,
            DATA_FILE,
            (page * PAGE_SIZE) as u64,
            &bytes,
        )?;
        self.dirty.remove(&page);
        Ok(lsn)
    }

    /// A fuzzy checkpoint: the highest txid C such that every change `<= C` is written and
    /// C's record is durable. Recycles the log when C covers everything durable and no
    /// record is half-flushed (and `allow_recycle`). Returns (C, W, recycled).
    fn checkpoint(
        &mut self,
        io: &Io<'_>,
        allow_recycle: bool,
    ) -> Result<(u64, u64, bool), DataError> {
        let oldest_dirty = self
            .dirty
            .values()
            .min()
            .map_or(u64::MAX, |&rec_lsn| rec_lsn - 1);
        let txid = self.durable_txid.min(oldest_dirty);
        let wal_offset = if txid == self.checkpoint_txid {
            self.checkpoint_offset
        } else {
            // txid > checkpoint_txid and txid <= durable_txid: its record is in the index.
            self.wal_index
                .iter()
                .find(|(t, _)| *t == txid)
                .map_or(self.checkpoint_offset, |&(_, end)| end)
        };
        let recycle = allow_recycle
            && txid == self.durable_txid
            && wal_offset == self.wal_buffer_offset
            && wal_offset > 0;
        let block_offset = if recycle { 0 } else { wal_offset };
        let block = CheckpointBlock {
            txid,
            wal_offset: block_offset,
            n_keys: io.n_keys,
            constant_total: io.constant_total,
        };
        // The checkpoint goes first: a snapshot between the two calls sees W = 0 over the old
        // log, whose first record does not follow C, so recovery stops at C, which is right.
        io.vd.write(
            &io.volumes.data,
            CHECKPOINT_FILE,
            0,
            &encode_checkpoint(&block),
        )?;
        while self.wal_index.front().is_some_and(|&(t, _)| t <= txid) {
            self.wal_index.pop_front();
        }
        self.checkpoint_txid = txid;
        self.checkpoint_offset = block_offset;
        if recycle {
            io.vd.truncate(&io.volumes.wal, WAL_FILE, 0)?;
            for entry in &mut self.wal_index {
                entry.1 -= wal_offset;
            }
            self.wal_buffer_offset = 0;
        }
        Ok((txid, block_offset, recycle))
    }

    /// Everything to disk: the whole WAL buffer, every dirty page, a checkpoint at the last
    /// txid. Returns the last txid.
    fn flush_all(&mut self, io: &Io<'_>) -> Result<u64, DataError> {
        self.flush_wal(io, usize::MAX)?;
        let dirty: Vec<usize> = self.dirty.keys().copied().collect();
        for page in dirty {
            self.write_page(io, page)?;
        }
        let (txid, _, _) = self.checkpoint(io, false)?;
        debug_assert_eq!(txid, self.last_txid);
        Ok(self.last_txid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fence {
    Open,
    /// `point` is `None` while a (hung) quiesce has not returned one.
    Frozen {
        record: usize,
        point: Option<u64>,
    },
}

struct Inner {
    mem: Option<Mem>,
    n_keys: u32,
    constant_total: Option<u128>,
    fence: Fence,
    /// The last freeze ended without an unquiesce (killed session, stop).
    session_lost: bool,
    fault: Option<SimDbFault>,
    freeze_log: Vec<FreezeRecord>,
    recoveries: Vec<RecoveryRecord>,
}

/// A simdb instance on its volumes. It is also the [`AppPlugin`] for itself
/// ([`SimDbPlugin`]). Every method takes `&self`; share it in an `Arc`.
pub struct SimDb {
    volume_data: Arc<dyn VolumeData>,
    volumes: SimDbVolumes,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Woken whenever the fence comes down (a hung quiesce waits on it).
    thaw: Notify,
}

/// The simulated database is its own plugin.
pub type SimDbPlugin = SimDb;

impl std::fmt::Debug for SimDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDb")
            .field("volumes", &self.volumes)
            .finish_non_exhaustive()
    }
}

impl SimDb {
    /// Format the volumes with these values (txid 0) and open.
    pub fn create(
        volume_data: Arc<dyn VolumeData>,
        volumes: SimDbVolumes,
        initial_values: &[u64],
        constant_total: bool,
        clock: Arc<dyn Clock>,
    ) -> Result<SimDb, SimDbError> {
        format(
            volume_data.as_ref(),
            &volumes,
            initial_values,
            constant_total,
        )?;
        Ok(SimDb::open(volume_data, volumes, clock)?.0)
    }

    /// An instance that is not running: the standby of a DR plan, on volumes that a mirror
    /// fills. An in-place `recover` (a failover) opens it; nothing is read before that.
    pub fn standby(volume_data: Arc<dyn VolumeData>, volumes: SimDbVolumes, clock: Arc<dyn Clock>) -> SimDb {
        let inner = Inner {
            n_keys: 0,
            constant_total: None,
            mem: None,
            fence: Fence::Open,
            session_lost: false,
            fault: None,
            freeze_log: Vec::new(),
            recoveries: Vec::new(),
        };
        SimDb { volume_data, volumes, clock, inner: Mutex::new(inner), thaw: Notify::new() }
    }

    /// Open an existing database, running crash recovery.
    pub fn open(
        volume_data: Arc<dyn VolumeData>,
        volumes: SimDbVolumes,
        clock: Arc<dyn Clock>,
    ) -> Result<(SimDb, RecoveredDb), SimDbError> {
        let recovery = open_files(volume_data.as_ref(), &volumes)?;
        let recovered = recovery.db.clone();
        let record = RecoveryRecord {
            kind: RecoveryKind::Start,
            volumes: volumes.clone(),
            at_wall: clock.now(),
            outcome: Ok(recovered.clone()),
        };
        let inner = Inner {
            n_keys: recovery.n_keys,
            constant_total: recovery.db.constant_total,
            mem: Some(Mem::from_recovery(recovery)),
            fence: Fence::Open,
            session_lost: false,
            fault: None,
            freeze_log: Vec::new(),
            recoveries: vec![record],
        };
        Ok((
            SimDb {
                volume_data,
                volumes,
                clock,
                inner: Mutex::new(inner),
                thaw: Notify::new(),
            },
            recovered,
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn io(&self, n_keys: u32, constant_total: Option<u128>) -> Io<'_> {
        Io {
            vd: self.volume_data.as_ref(),
            volumes: &self.volumes,
            n_keys,
            constant_total,
        }
    }

    pub fn volumes(&self) -> &SimDbVolumes {
        &self.volumes
    }

    pub fn n_keys(&self) -> u32 {
        self.lock().n_keys
    }

    pub fn is_running(&self) -> bool {
        self.lock().mem.is_some()
    }

    /// The fence is up: a quiesce holds (or is waiting for) the freeze.
    pub fn is_frozen(&self) -> bool {
        matches!(self.lock().fence, Fence::Frozen { .. })
    }

    /// The last acknowledged txid (`None` if stopped).
    pub fn last_committed_txid(&self) -> Option<u64> {
        self.lock().mem.as_ref().map(|m| m.last_txid)
    }

    /// The last txid whose whole WAL record is in `wal.log` (`None` if stopped).
    pub fn durable_txid(&self) -> Option<u64> {
        self.lock().mem.as_ref().map(|m| m.durable_txid)
    }

    /// The in-memory values (what a reader of the running database sees; `None` if stopped).
    pub fn values(&self) -> Option<Vec<u64>> {
        self.lock().mem.as_ref().map(|m| m.values.clone())
    }

    /// Commit `writes` (applied in order; a later write to the same key wins) as the next
    /// txid and acknowledge at once, before anything is durable.
    pub fn try_commit(&self, writes: &[(u32, u64)]) -> Result<u64, CommitError> {
        let mut guard = self.lock();
        let mem = Self::open_for_commit(&mut guard, writes.iter().map(|(key, _)| *key))?;
        Ok(mem.commit(writes))
    }

    /// The running instance's memory, if a commit touching `keys` may go ahead: not frozen,
    /// not stopped, every key in range.
    fn open_for_commit(inner: &mut Inner, keys: impl IntoIterator<Item = u32>) -> Result<&mut Mem, CommitError> {
        if matches!(inner.fence, Fence::Frozen { .. }) {
            return Err(CommitError::Frozen);
        }
        let n_keys = inner.n_keys;
        let mem = inner.mem.as_mut().ok_or(CommitError::Stopped)?;
        if let Some(key) = keys.into_iter().find(|key| *key >= n_keys) {
            return Err(CommitError::KeyOutOfRange { key, n_keys });
        }
        Ok(mem)
    }

    /// The bank transaction: move `min(amount, balance(from))` from `from` to `to`. Returns
    /// the txid and the writes it committed (for the caller's reference model).
    pub fn try_transfer(
        &self,
        from: u32,
        to: u32,
        amount: u64,
    ) -> Result<(u64, Vec<(u32, u64)>), CommitError> {
        let mut guard = self.lock();
        let mem = Self::open_for_commit(&mut guard, [from, to])?;
        let moved = amount.min(mem.values[from as usize]);
        let writes = if from == to {
            vec![(from, mem.values[from as usize])]
        } else {
            vec![
                (from, mem.values[from as usize] - moved),
                (to, mem.values[to as usize].wrapping_add(moved)),
            ]
        };
        Ok((mem.commit(&writes), writes))
    }

    /// One step of background I/O, chosen by `rng` (deterministic given its state): flush
    /// part of the WAL buffer, write back one dirty page (whether or not the WAL is durable
    /// up to its LSN), or write a checkpoint. Idle when stopped or frozen.
    pub fn background_step<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<BackgroundAction, DataError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if matches!(inner.fence, Fence::Frozen { .. }) {
            return Ok(BackgroundAction::Idle);
        }
        let io = self.io(inner.n_keys, inner.constant_total);
        let Some(mem) = inner.mem.as_mut() else {
            return Ok(BackgroundAction::Idle);
        };
        let roll = rng.gen_range(0..100u32);
        if roll < BACKGROUND_WAL_FLUSH_BELOW && !mem.wal_buffer.is_empty() {
            let len = mem.wal_buffer.len();
            let n_bytes = if rng.gen_bool(0.5) {
                len
            } else {
                rng.gen_range(1..=len)
            };
            let n_bytes = mem.flush_wal(&io, n_bytes)?;
            return Ok(BackgroundAction::WalFlush {
                n_bytes,
                durable_txid: mem.durable_txid,
            });
        }
        if (BACKGROUND_WAL_FLUSH_BELOW..BACKGROUND_PAGE_WRITE_BELOW).contains(&roll)
            && !mem.dirty.is_empty()
        {
            let nth = rng.gen_range(0..mem.dirty.len());
            let page = mem.dirty.keys().copied().nth(nth).unwrap_or_default();
            let page_lsn = mem.write_page(&io, page)?;
            return Ok(BackgroundAction::PageWrite {
                page: page as u32,
                page_lsn,
            });
        }
        let (txid, wal_offset, wal_recycled) = mem.checkpoint(&io, true)?;
        Ok(BackgroundAction::Checkpoint {
            txid,
            wal_offset,
            wal_recycled,
        })
    }

    /// Write at most `max_bytes` of the WAL buffer (deterministic control for tests and
    /// harness). Returns the bytes written. Refused (0) while frozen or stopped.
    pub fn flush_wal(&self, max_bytes: usize) -> Result<u64, DataError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let io = self.io(inner.n_keys, inner.constant_total);
        match (&inner.fence, inner.mem.as_mut()) {
            (Fence::Open, Some(mem)) => mem.flush_wal(&io, max_bytes),
            _ => Ok(0),
        }
    }

    /// Write back `page` if it is dirty (even ahead of the WAL). Returns its LSN if written.
    pub fn write_back_page(&self, page: u32) -> Result<Option<u64>, DataError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let io = self.io(inner.n_keys, inner.constant_total);
        match (&inner.fence, inner.mem.as_mut()) {
            (Fence::Open, Some(mem)) if mem.dirty.contains_key(&(page as usize)) => {
                mem.write_page(&io, page as usize).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Stop without flushing, as a crash of the database server would: acknowledged commits
    /// that were not flushed are lost, and their txids are reused after the next start.
    pub fn crash(&self) {
        let mut inner = self.lock();
        if self.end_freeze(&mut inner, FreezeEnd::Stopped) {
            inner.session_lost = true;
        }
        inner.mem = None;
    }

    /// Arm a fault for the next quiesce (replaces any armed fault).
    pub fn inject_fault(&self, fault: SimDbFault) {
        self.lock().fault = Some(fault);
    }

    pub fn clear_fault(&self) {
        self.lock().fault = None;
    }

    /// The session holding the freeze dies: the database drops the freeze itself (commits
    /// resume), a hung quiesce returns `SessionLost`, and `unquiesce` returns `SessionLost`
    /// until the next quiesce. Returns whether a freeze was dropped.
    pub fn kill_session(&self) -> bool {
        let mut inner = self.lock();
        let dropped = self.end_freeze(&mut inner, FreezeEnd::SessionKilled);
        if dropped {
            inner.session_lost = true;
        }
        dropped
    }

    /// Every freeze so far, oldest first.
    pub fn freeze_log(&self) -> Vec<FreezeRecord> {
        self.lock().freeze_log.clone()
    }

    /// How long the current freeze has lasted, if the fence is up.
    pub fn frozen_for(&self) -> Option<Duration> {
        let inner = self.lock();
        match inner.fence {
            Fence::Frozen { record, .. } => Some(inner.freeze_log[record].duration(Instant::now())),
            Fence::Open => None,
        }
    }

    /// Every open of the database (create/open/start, in-place and clone recoveries).
    pub fn recoveries(&self) -> Vec<RecoveryRecord> {
        self.lock().recoveries.clone()
    }

    fn start_freeze(&self, inner: &mut Inner, point: Option<u64>) -> usize {
        inner.freeze_log.push(FreezeRecord {
            started: Instant::now(),
            started_wall: self.clock.now(),
            ended: None,
            ended_wall: None,
            end: None,
            point,
        });
        let record = inner.freeze_log.len() - 1;
        inner.fence = Fence::Frozen { record, point };
        inner.session_lost = false;
        record
    }

    fn end_freeze(&self, inner: &mut Inner, end: FreezeEnd) -> bool {
        let Fence::Frozen { record, .. } = inner.fence else {
            return false;
        };
        let entry = &mut inner.freeze_log[record];
        entry.ended = Some(Instant::now());
        entry.ended_wall = Some(self.clock.now());
        entry.end = Some(end);
        inner.fence = Fence::Open;
        self.thaw.notify_waiters();
        true
    }

    fn begin_quiesce(&self, inner: &mut Inner) -> Result<QuiesceStart, PluginError> {
        if inner.mem.is_none() {
            return Err(PluginError::App("simdb is stopped".into()));
        }
        match inner.fence {
            Fence::Frozen {
                point: Some(txid), ..
            } => return Ok(QuiesceStart::Point(txid)),
            Fence::Frozen { point: None, .. } => {
                return Err(PluginError::App(
                    "a quiesce is already waiting for the freeze".into(),
                ))
            }
            Fence::Open => {}
        }
        match inner.fault.take() {
            Some(SimDbFault::QuiesceFails) => {
                inner.session_lost = false;
                return Err(PluginError::App(
                    "injected fault: quiesce failed (lock wait timeout)".into(),
                ));
            }
            Some(SimDbFault::QuiesceHangs) => {
                return Ok(QuiesceStart::Hang(self.start_freeze(inner, None)))
            }
            None => {}
        }
        let record = self.start_freeze(inner, None);
        let io = self.io(inner.n_keys, inner.constant_total);
        let flushed = inner.mem.as_mut().map(|mem| mem.flush_all(&io));
        match flushed {
            Some(Ok(txid)) => {
                inner.fence = Fence::Frozen {
                    record,
                    point: Some(txid),
                };
                inner.freeze_log[record].point = Some(txid);
                Ok(QuiesceStart::Point(txid))
            }
            Some(Err(e)) => {
                self.end_freeze(inner, FreezeEnd::QuiesceFailed);
                Err(PluginError::App(format!(
                    "quiesce failed while flushing: {e}"
                )))
            }
            None => unreachable!("checked running above"),
        }
    }

    fn report(recovered: &RecoveredDb, volumes: &SimDbVolumes) -> RecoveryReport {
        let mut detail = format!(
            "simdb on {}: checkpoint txid {}, replayed {} WAL records, discarded {} WAL bytes, recovered txid {}, {} keys in {} pages checksummed",
            if volumes.is_split() { format!("data {} + wal {}", volumes.data, volumes.wal) } else { volumes.data.clone() },
            recovered.checkpoint_txid,
            recovered.n_replayed,
            recovered.discarded_wal_bytes,
            recovered.last_txid,
            recovered.values.len(),
            n_pages(recovered.values.len() as u32),
        );
        if let Some(total) = recovered.constant_total {
            detail.push_str(&format!(", constant total {total} checked"));
        }
        if !recovered.anomalies.is_empty() {
            detail.push_str(&format!("; ANOMALIES: {}", recovered.anomalies.join("; ")));
        }
        RecoveryReport {
            needed_crash_recovery: recovered.needed_crash_recovery,
            recovered_point: consistency_point(recovered.last_txid),
            detail,
        }
    }

    fn verified(
        recovered: &RecoveredDb,
        volumes: &SimDbVolumes,
    ) -> Result<RecoveryReport, PluginError> {
        let report = Self::report(recovered, volumes);
        if recovered.anomalies.is_empty() {
            Ok(report)
        } else {
            Err(PluginError::Verification(report.detail))
        }
    }
}

enum QuiesceStart {
    Point(u64),
    Hang(usize),
}

#[async_trait]
impl AppPlugin for SimDb {
    /// Flush the WAL buffer and every dirty page, write a checkpoint, raise the fence, and
    /// return `txid=N`, N the last acknowledged txid.
    async fn quiesce(&self) -> Result<ConsistencyPoint, PluginError> {
        let record = {
            let mut inner = self.lock();
            match self.begin_quiesce(&mut inner)? {
                QuiesceStart::Point(txid) => return Ok(consistency_point(txid)),
                QuiesceStart::Hang(record) => record,
            }
        };
        loop {
            let notified = {
                let inner = self.lock();
                match inner.freeze_log[record].end {
                    None => self.thaw.notified(),
                    Some(FreezeEnd::SessionKilled | FreezeEnd::Stopped) => {
                        return Err(PluginError::SessionLost(
                            "the session waiting for the freeze was lost".into(),
                        ))
                    }
                    Some(end) => {
                        return Err(PluginError::App(format!(
                            "quiesce abandoned before it was granted ({end:?})"
                        )))
                    }
                }
            };
            notified.await;
        }
    }

    /// Lift the fence. Ok when not frozen, except after a freeze that ended without an
    /// unquiesce (killed session, stop): then `SessionLost`, every time, until the next quiesce.
    async fn unquiesce(&self) -> Result<(), PluginError> {
        let mut inner = self.lock();
        if self.end_freeze(&mut inner, FreezeEnd::Unquiesced) {
            inner.session_lost = false;
            return Ok(());
        }
        if inner.session_lost {
            let ended = inner
                .freeze_log
                .last()
                .and_then(|r| r.ended_wall)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            return Err(PluginError::SessionLost(format!(
                "the freeze was dropped by the database at {ended}, before unquiesce"
            )));
        }
        Ok(())
    }

    /// A clean shutdown, as a restore's "stop the app" is: flush the WAL buffer and every
    /// dirty page, write a checkpoint, then refuse commits. A freeze in progress ends
    /// (`Stopped`). If the flush fails the buffers are dropped anyway (what was not flushed
    /// is lost, as in a crash) and the error is reported. [`SimDb::crash`] is the unclean stop.
    async fn stop(&self) -> Result<(), PluginError> {
        let mut inner = self.lock();
        if self.end_freeze(&mut inner, FreezeEnd::Stopped) {
            inner.session_lost = true;
        }
        let io = self.io(inner.n_keys, inner.constant_total);
        let flushed = inner.mem.as_mut().map(|mem| mem.flush_all(&io));
        inner.mem = None;
        match flushed {
            Some(Err(e)) => Err(PluginError::App(format!("stop could not flush: {e}"))),
            _ => Ok(()),
        }
    }

    /// Reopen on the instance's own volumes, running recovery. No-op when running.
    async fn start(&self) -> Result<(), PluginError> {
        let mut inner = self.lock();
        if inner.mem.is_some() {
            return Ok(());
        }
        let opened = open_files(self.volume_data.as_ref(), &self.volumes);
        let outcome = opened
            .as_ref()
            .map(|r| r.db.clone())
            .map_err(|e| e.to_string());
        inner.recoveries.push(RecoveryRecord {
            kind: RecoveryKind::Start,
            volumes: self.volumes.clone(),
            at_wall: self.clock.now(),
            outcome,
        });
        let recovery = opened.map_err(SimDbError::into_plugin_error)?;
        inner.n_keys = recovery.n_keys;
        inner.constant_total = recovery.db.constant_total;
        inner.mem = Some(Mem::from_recovery(recovery));
        Ok(())
    }

    /// In place: the instance must be stopped and `target.volumes` must be its own; it is
    /// opened (running recovery) and left running. Otherwise a second instance opens on the
    /// target volumes (writing its recovery there) and is closed again. Either way, any
    /// anomaly (page ahead of the log, checkpoint beyond the log, broken constant total) is a
    /// `Verification` error; an unreadable or corrupt file is a `Verification` error too and
    /// leaves an in-place instance stopped.
    async fn recover(&self, target: &RecoveryTarget) -> Result<RecoveryReport, PluginError> {
        let volumes = SimDbVolumes::from_volume_infos(&target.volumes)
            .map_err(SimDbError::into_plugin_error)?;
        if target.in_place {
            if volumes != self.volumes {
                return Err(PluginError::App(format!(
                    "in-place recover on {volumes:?}, but this instance lives on {:?}",
                    self.volumes
                )));
            }
            let mut inner = self.lock();
            if inner.mem.is_some() {
                return Err(PluginError::App(
                    "simdb is running: stop it before an in-place recover".into(),
                ));
            }
            let opened = open_files(self.volume_data.as_ref(), &volumes);
            let outcome = opened
                .as_ref()
                .map(|r| r.db.clone())
                .map_err(|e| e.to_string());
            inner.recoveries.push(RecoveryRecord {
                kind: RecoveryKind::InPlace,
                volumes: volumes.clone(),
                at_wall: self.clock.now(),
                outcome,
            });
            let recovery = opened.map_err(SimDbError::into_plugin_error)?;
            let recovered = recovery.db.clone();
            inner.n_keys = recovery.n_keys;
            inner.constant_total = recovery.db.constant_total;
            inner.mem = Some(Mem::from_recovery(recovery));
            drop(inner);
            Self::verified(&recovered, &volumes)
        } else {
            // The second instance does its I/O without holding the instance's lock.
            let opened = open_files(self.volume_data.as_ref(), &volumes);
            let outcome = opened
                .as_ref()
                .map(|r| r.db.clone())
                .map_err(|e| e.to_string());
            self.lock().recoveries.push(RecoveryRecord {
                kind: RecoveryKind::Clone,
                volumes: volumes.clone(),
                at_wall: self.clock.now(),
                outcome,
            });
            let recovered = opened.map_err(SimDbError::into_plugin_error)?.db;
            Self::verified(&recovered, &volumes)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::clock::SystemClock;

    type Files = HashMap<(String, String), Vec<u8>>;

    /// The array, in memory: files by (volume, path). A snapshot clones the map.
    #[derive(Default)]
    struct MemVolumes {
        files: Mutex<Files>,
    }

    impl MemVolumes {
        fn new() -> Arc<MemVolumes> {
            Arc::new(MemVolumes::default())
        }

        fn from_files(files: Files) -> MemVolumes {
            MemVolumes {
                files: Mutex::new(files),
            }
        }

        fn files(&self) -> MutexGuard<'_, Files> {
            self.files.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// All volumes at one instant (a consistency-group snapshot).
        fn snapshot(&self) -> Files {
            self.files().clone()
        }

        /// One volume's files at this instant.
        fn snapshot_volume(&self, volume: &str) -> Files {
            self.files()
                .iter()
                .filter(|((v, _), _)| v == volume)
                .map(|(k, d)| (k.clone(), d.clone()))
                .collect()
        }

        /// SnapRestore: `volume`'s files become the snapshot's.
        fn restore_volume(&self, snapshot: &Files, volume: &str) {
            let mut files = self.files();
            files.retain(|(v, _), _| v != volume);
            for ((v, p), d) in snapshot {
                if v == volume {
                    files.insert((v.clone(), p.clone()), d.clone());
                }
            }
        }

        /// FlexClone: a new volume `to` from `from`'s files in the snapshot.
        fn clone_volume(&self, snapshot: &Files, from: &str, to: &str) {
            let mut files = self.files();
            for ((v, p), d) in snapshot {
                if v == from {
                    files.insert((to.to_string(), p.clone()), d.clone());
                }
            }
        }
    }

    impl VolumeData for MemVolumes {
        fn read(
            &self,
            volume_uuid: &str,
            path: &str,
            offset: u64,
            len: u64,
        ) -> Result<Vec<u8>, DataError> {
            let files = self.files();
            let data = files
                .get(&(volume_uuid.to_string(), path.to_string()))
                .ok_or_else(|| DataError::NotFound(path.into()))?;
            let start = (offset as usize).min(data.len());
            let end = (start + len as usize).min(data.len());
            Ok(data[start..end].to_vec())
        }

        fn write(
            &self,
            volume_uuid: &str,
            path: &str,
            offset: u64,
            data: &[u8],
        ) -> Result<(), DataError> {
            let mut files = self.files();
            let file = files
                .entry((volume_uuid.to_string(), path.to_string()))
                .or_default();
            let end = offset as usize + data.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[offset as usize..end].copy_from_slice(data);
            Ok(())
        }

        fn truncate(&self, volume_uuid: &str, path: &str, size: u64) -> Result<(), DataError> {
            let mut files = self.files();
            let file = files
                .get_mut(&(volume_uuid.to_string(), path.to_string()))
                .ok_or_else(|| DataError::NotFound(path.into()))?;
            file.resize(size as usize, 0);
            Ok(())
        }

        fn size(&self, volume_uuid: &str, path: &str) -> Result<Option<u64>, DataError> {
            Ok(self
                .files()
                .get(&(volume_uuid.to_string(), path.to_string()))
                .map(|f| f.len() as u64))
        }
    }

    const N_KEYS: u32 = 1024;
    const BALANCE: u64 = 1_000;

    fn volume_info(uuid: &str) -> VolumeInfo {
        VolumeInfo {
            uuid: uuid.into(),
            name: uuid.into(),
            svm: "svm1".into(),
            online: true,
            writable: true,
            n_snapshots: 0,
            size_bytes: 1 << 30,
            used_bytes: 0,
            junction_path: None,
            clone_parent_uuid: None,
        }
    }

    /// The harness's reference model: the state after every txid.
    struct Reference {
        states: Vec<Vec<u64>>,
    }

    impl Reference {
        fn new() -> Reference {
            Reference {
                states: vec![vec![BALANCE; N_KEYS as usize]],
            }
        }

        fn apply(&mut self, txid: u64, writes: &[(u32, u64)]) {
            assert_eq!(txid as usize, self.states.len(), "txids are consecutive");
            let mut next = self.states.last().cloned().unwrap_or_default();
            for &(k, v) in writes {
                next[k as usize] = v;
            }
            self.states.push(next);
        }

        fn at(&self, txid: u64) -> &[u64] {
            &self.states[txid as usize]
        }

        fn matches_some_txid(&self, values: &[u64]) -> bool {
            self.states.iter().any(|s| s.as_slice() == values)
        }
    }

    fn create(vd: &Arc<MemVolumes>, volumes: SimDbVolumes) -> SimDb {
        let vd_dyn: Arc<dyn VolumeData> = vd.clone();
        SimDb::create(
            vd_dyn,
            volumes,
            &vec![BALANCE; N_KEYS as usize],
            true,
            Arc::new(SystemClock),
        )
        .expect("create")
    }

    /// One workload step: a random transfer (half the time) or a background step.
    fn workload_step(db: &SimDb, reference: &mut Reference, rng: &mut ChaCha8Rng) {
        if rng.gen_bool(0.5) {
            let (from, to, amount) = (
                rng.gen_range(0..N_KEYS),
                rng.gen_range(0..N_KEYS),
                rng.gen_range(1..500),
            );
            let (txid, writes) = db.try_transfer(from, to, amount).expect("commit");
            reference.apply(txid, &writes);
        } else {
            db.background_step(rng).expect("background step");
        }
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(&[b"123456789"]), 0xCBF4_3926);
        assert_eq!(crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
    }

    #[test]
    fn consistency_point_round_trips() {
        assert_eq!(consistency_point(42).0, "txid=42");
        assert_eq!(parse_consistency_point(&consistency_point(42)), Some(42));
        assert_eq!(
            parse_consistency_point(&ConsistencyPoint("gtid=1".into())),
            None
        );
    }

    #[tokio::test]
    async fn quiesce_then_snapshot_recovers_exactly_on_one_and_two_volumes() {
        for seed in 0..40u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let vd = MemVolumes::new();
            let split = seed % 2 == 1;
            let volumes = if split {
                SimDbVolumes::split("data", "wal")
            } else {
                SimDbVolumes::single("data")
            };
            let db = create(&vd, volumes.clone());
            let mut reference = Reference::new();
            for _ in 0..rng.gen_range(0..400) {
                workload_step(&db, &mut reference, &mut rng);
            }
            let acked = db.last_committed_txid().expect("running");

            let point = db.quiesce().await.expect("quiesce");
            let txid = parse_consistency_point(&point).expect("txid point");
            assert_eq!(
                txid, acked,
                "seed {seed}: the point is the last acknowledged txid"
            );
            assert_eq!(db.try_commit(&[(1, 7)]), Err(CommitError::Frozen));
            assert_eq!(db.try_transfer(1, 2, 3), Err(CommitError::Frozen));
            assert_eq!(
                db.background_step(&mut rng).expect("step"),
                BackgroundAction::Idle
            );
            assert_eq!(
                db.quiesce().await.expect("quiesce again"),
                point,
                "quiesce while quiesced is idempotent"
            );
            // Inside the freeze even per-volume snapshots at different instants agree.
            let data_part = vd.snapshot_volume(&volumes.data);
            let snapshot = vd.snapshot();
            let wal_part = vd.snapshot_volume(&volumes.wal);
            db.unquiesce().await.expect("unquiesce");
            db.unquiesce().await.expect("unquiesce is idempotent");
            let (next, writes) = db
                .try_transfer(3, 4, 5)
                .expect("commits go on after unquiesce");
            assert_eq!(next, txid + 1);
            reference.apply(next, &writes);

            let recovered =
                read_recovered(&MemVolumes::from_files(snapshot), &volumes).expect("recover");
            assert_eq!(recovered.last_txid, txid, "seed {seed}");
            assert!(
                !recovered.needed_crash_recovery,
                "seed {seed}: {recovered:?}"
            );
            assert!(
                recovered.anomalies.is_empty(),
                "seed {seed}: {:?}",
                recovered.anomalies
            );
            assert_eq!(
                recovered.values,
                reference.at(txid),
                "seed {seed}: exactly the state at the point"
            );

            let mut parts = data_part;
            parts.extend(wal_part);
            let recovered_parts =
                read_recovered(&MemVolumes::from_files(parts), &volumes).expect("recover");
            assert_eq!(recovered_parts, recovered, "seed {seed}");

            let log = db.freeze_log();
            assert_eq!(log.len(), 1);
            assert_eq!(log[0].end, Some(FreezeEnd::Unquiesced));
            assert_eq!(log[0].point, Some(txid));
            assert!(log[0].ended.is_some() && log[0].ended_wall >= Some(log[0].started_wall));
        }
    }

    #[test]
    fn negative_control_crash_snapshots_are_not_exact() {
        let mut n_silent = 0;
        let (mut n_snapshots, mut n_differ, mut n_lost, mut n_pages_ahead, mut n_torn_tail) =
            (0, 0, 0, 0, 0);
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let vd = MemVolumes::new();
            let volumes = SimDbVolumes::single("data");
            let db = create(&vd, volumes.clone());
            let mut reference = Reference::new();
            for _ in 0..rng.gen_range(1..300) {
                workload_step(&db, &mut reference, &mut rng);
                if !rng.gen_bool(0.1) {
                    continue;
                }
                let snapshot = MemVolumes::from_files(vd.snapshot());
                let acked = db.last_committed_txid().expect("running");
                let recovered = read_recovered(&snapshot, &volumes)
                    .expect("a single-volume crash snapshot always opens");
                n_snapshots += 1;
                assert!(recovered.last_txid <= acked);
                if recovered.anomalies.is_empty() {
                    // A sane single-volume recovery is exactly some earlier state: the one
                    // at its recovered txid (acknowledged commits after it are lost).
                    assert_eq!(
                        recovered.values,
                        reference.at(recovered.last_txid),
                        "seed {seed}"
                    );
                } else {
                    n_pages_ahead += 1;
                }
                let differs = recovered.values != reference.at(acked);
                n_differ += usize::from(differs);
                // Consistent but behind: only the point (or the reference) shows it.
                n_silent += usize::from(differs && recovered.anomalies.is_empty());
                n_lost += usize::from(recovered.last_txid < acked);
                n_torn_tail += usize::from(recovered.discarded_wal_bytes > 0);
            }
        }
        eprintln!(
            "crash snapshots: {n_snapshots}; state differs from last acked: {n_differ}; acked commits lost: {n_lost}; \
             pages ahead of the log / broken total: {n_pages_ahead}; torn WAL tail: {n_torn_tail}; \
             differs with no anomaly (silently behind): {n_silent}"
        );
        assert!(
            n_differ >= 1,
            "the negative control must find inconsistent crash snapshots"
        );
        assert!(n_lost >= 1 && n_pages_ahead >= 1 && n_torn_tail >= 1);
    }

    #[test]
    fn two_volumes_snapshotted_at_different_instants_are_torn() {
        let volumes = SimDbVolumes::split("data", "wal");
        // [wal later than data, data later than wal]
        let (mut n_cases, mut n_no_txid, mut n_anomaly, mut n_silent) =
            ([0; 2], [0; 2], [0; 2], [0; 2]);
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let vd = MemVolumes::new();
            let db = create(&vd, volumes.clone());
            let mut reference = Reference::new();
            for _ in 0..rng.gen_range(0..200) {
                workload_step(&db, &mut reference, &mut rng);
            }
            let order = (seed % 2) as usize;
            let (first, second) = if order == 0 {
                (&volumes.data, &volumes.wal)
            } else {
                (&volumes.wal, &volumes.data)
            };
            let mut parts = vd.snapshot_volume(first);
            for _ in 0..rng.gen_range(1..100) {
                workload_step(&db, &mut reference, &mut rng);
            }
            parts.extend(vd.snapshot_volume(second));
            let recovered = read_recovered(&MemVolumes::from_files(parts), &volumes)
                .expect("torn volumes still open");
            n_cases[order] += 1;
            let no_txid = !reference.matches_some_txid(&recovered.values);
            n_no_txid[order] += usize::from(no_txid);
            n_anomaly[order] += usize::from(!recovered.anomalies.is_empty());
            // Torn, and the database cannot tell: only the harness's reference model can.
            n_silent[order] += usize::from(no_txid && recovered.anomalies.is_empty());
        }
        eprintln!(
            "torn two-volume snapshots: WAL later: {}/{} match no txid ({} with anomalies, {} silent); \
             data later: {}/{} match no txid ({} with anomalies, {} silent)",
            n_no_txid[0], n_cases[0], n_anomaly[0], n_silent[0], n_no_txid[1], n_cases[1], n_anomaly[1], n_silent[1]
        );
        assert!(
            n_no_txid[0] >= 1,
            "WAL later than data must be able to tear"
        );
        assert!(
            n_no_txid[1] >= 1,
            "data later than WAL must be able to tear"
        );
    }

    #[test]
    fn torn_wal_tail_stops_at_the_last_whole_record() {
        let vd = MemVolumes::new();
        let volumes = SimDbVolumes::single("data");
        let db = create(&vd, volumes.clone());
        let mut reference = Reference::new();
        for i in 0..3u32 {
            let (txid, writes) = db.try_transfer(i, 600 + i, 10).expect("commit");
            reference.apply(txid, &writes);
        }
        let record_bytes = (WAL_RECORD_OVERHEAD_BYTES + 2 * WAL_PAIR_BYTES) as u64;
        assert_eq!(
            db.flush_wal(2 * record_bytes as usize + 5).expect("flush"),
            2 * record_bytes + 5
        );
        assert_eq!(db.durable_txid(), Some(2));
        let snapshot = vd.snapshot();

        let recovered =
            read_recovered(&MemVolumes::from_files(snapshot.clone()), &volumes).expect("recover");
        assert_eq!(recovered.last_txid, 2);
        assert_eq!(recovered.n_replayed, 2);
        assert_eq!(recovered.discarded_wal_bytes, 5);
        assert!(recovered.needed_crash_recovery);
        assert!(recovered.anomalies.is_empty());
        assert_eq!(recovered.values, reference.at(2));

        // A damaged record in the middle ends replay there too.
        let mut damaged = snapshot.clone();
        damaged
            .get_mut(&("data".to_string(), WAL_FILE.to_string()))
            .expect("wal")[record_bytes as usize + 9] ^= 0x40;
        let recovered =
            read_recovered(&MemVolumes::from_files(damaged), &volumes).expect("recover");
        assert_eq!(
            (recovered.last_txid, recovered.discarded_wal_bytes),
            (1, record_bytes + 5)
        );
        assert_eq!(recovered.values, reference.at(1));

        // Opening the torn copy cuts the tail; a new txid 3 then survives a clean reopen.
        let copy: Arc<MemVolumes> = Arc::new(MemVolumes::from_files(snapshot));
        let copy_dyn: Arc<dyn VolumeData> = copy.clone();
        let (reopened, recovered) =
            SimDb::open(copy_dyn.clone(), volumes.clone(), Arc::new(SystemClock)).expect("open");
        assert_eq!(recovered.last_txid, 2);
        assert_eq!(
            copy.size("data", WAL_FILE).expect("size"),
            Some(2 * record_bytes)
        );
        assert_eq!(reopened.try_commit(&[(5, 55)]), Ok(3));
        reopened.flush_wal(usize::MAX).expect("flush");
        let recovered = read_recovered(copy.as_ref(), &volumes).expect("recover");
        assert_eq!((recovered.last_txid, recovered.values[5]), (3, 55));
    }

    #[test]
    fn recovery_never_panics_on_damaged_files() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let vd = MemVolumes::new();
        let volumes = SimDbVolumes::single("data");
        let db = create(&vd, volumes.clone());
        let mut reference = Reference::new();
        for _ in 0..300 {
            workload_step(&db, &mut reference, &mut rng);
        }
        db.flush_wal(usize::MAX).expect("flush");
        let base = vd.snapshot();
        let (mut n_ok, mut n_err) = (0, 0);
        for _ in 0..500 {
            let mut files = base.clone();
            let keys: Vec<_> = files.keys().cloned().collect();
            let file = files
                .get_mut(&keys[rng.gen_range(0..keys.len())])
                .expect("file");
            match rng.gen_range(0..3) {
                0 if !file.is_empty() => {
                    let at = rng.gen_range(0..file.len());
                    file[at] ^= 1 << rng.gen_range(0..8);
                }
                1 => file.truncate(rng.gen_range(0..=file.len())),
                _ => file.extend((0..rng.gen_range(0..64)).map(|_| rng.gen::<u8>())),
            }
            match read_recovered(&MemVolumes::from_files(files), &volumes) {
                Ok(r) => {
                    n_ok += 1;
                    assert_eq!(r.values.len(), N_KEYS as usize);
                }
                Err(SimDbError::Corrupt(_)) => n_err += 1,
                Err(e) => panic!("unexpected error kind: {e}"),
            }
        }
        assert!(n_ok > 0 && n_err > 0, "ok {n_ok}, corrupt {n_err}");
    }

    #[tokio::test]
    async fn a_clean_stop_keeps_every_acknowledged_commit() {
        let vd = MemVolumes::new();
        let db = create(&vd, SimDbVolumes::single("data"));
        for i in 0..6 {
            db.try_commit(&[(i, 7)]).expect("commit");
        }
        let values = db.values().expect("running");
        db.stop().await.expect("stop");
        db.start().await.expect("start");
        assert_eq!(db.last_committed_txid(), Some(6));
        assert_eq!(db.values(), Some(values));
        let last = db.recoveries().last().cloned().expect("recorded");
        assert!(!last.outcome.expect("ok").needed_crash_recovery, "a clean stop needs no recovery");
    }

    #[tokio::test]
    async fn a_crash_drops_unflushed_commits_unless_quiesced_first() {
        let vd = MemVolumes::new();
        let db = create(&vd, SimDbVolumes::single("data"));
        for i in 0..5 {
            db.try_commit(&[(i, 1)]).expect("commit");
        }
        db.flush_wal(usize::MAX).expect("flush");
        for i in 5..8 {
            db.try_commit(&[(i, 1)]).expect("commit");
        }
        db.crash();
        assert!(!db.is_running());
        assert_eq!(db.try_commit(&[(1, 1)]), Err(CommitError::Stopped));
        assert!(db.quiesce().await.is_err());
        db.start().await.expect("start");
        assert_eq!(
            db.last_committed_txid(),
            Some(5),
            "acknowledged but unflushed commits are lost"
        );
        let last = db.recoveries().last().cloned().expect("recorded");
        assert!(last.outcome.expect("ok").needed_crash_recovery);

        for i in 0..4 {
            db.try_commit(&[(i, 2)]).expect("commit");
        }
        let point = db.quiesce().await.expect("quiesce");
        db.stop().await.expect("stop");
        assert!(matches!(
            db.unquiesce().await,
            Err(PluginError::SessionLost(_))
        ));
        db.start().await.expect("start");
        assert_eq!(db.last_committed_txid(), parse_consistency_point(&point));
        assert!(
            !db.recoveries()
                .last()
                .cloned()
                .expect("recorded")
                .outcome
                .expect("ok")
                .needed_crash_recovery
        );
    }

    #[tokio::test]
    async fn restore_in_place_and_to_a_clone_via_the_plugin() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let vd = MemVolumes::new();
        let volumes = SimDbVolumes::split("data", "wal");
        let db = Arc::new(create(&vd, volumes.clone()));
        let plugin: Arc<dyn AppPlugin> = db.clone();
        let mut reference = Reference::new();
        for _ in 0..200 {
            workload_step(&db, &mut reference, &mut rng);
        }
        let point = plugin.quiesce().await.expect("quiesce");
        let txid = parse_consistency_point(&point).expect("point");
        let snapshot = vd.snapshot();
        plugin.unquiesce().await.expect("unquiesce");
        for _ in 0..200 {
            workload_step(&db, &mut reference, &mut rng);
        }

        // Clone restore: a second instance on the clones; the original keeps running.
        vd.clone_volume(&snapshot, "data", "data_clone");
        vd.clone_volume(&snapshot, "wal", "wal_clone");
        let target = RecoveryTarget {
            volumes: vec![volume_info("data_clone"), volume_info("wal_clone")],
            in_place: false,
        };
        let report = plugin.recover(&target).await.expect("clone recover");
        assert_eq!(report.recovered_point, point);
        assert!(!report.needed_crash_recovery, "{}", report.detail);
        assert!(db.is_running());
        let clone_values =
            read_recovered(vd.as_ref(), &SimDbVolumes::split("data_clone", "wal_clone"))
                .expect("read")
                .values;
        assert_eq!(clone_values, reference.at(txid));

        // In place: refused while running, then stop, SnapRestore, recover.
        let own = RecoveryTarget {
            volumes: vec![volume_info("data"), volume_info("wal")],
            in_place: true,
        };
        assert!(matches!(
            plugin.recover(&own).await,
            Err(PluginError::App(_))
        ));
        plugin.stop().await.expect("stop");
        vd.restore_volume(&snapshot, "data");
        vd.restore_volume(&snapshot, "wal");
        let report = plugin.recover(&own).await.expect("in-place recover");
        assert_eq!(report.recovered_point, point);
        assert!(!report.needed_crash_recovery);
        assert_eq!(db.values().expect("running"), reference.at(txid));
        assert_eq!(
            db.try_commit(&[(0, 1)]),
            Ok(txid + 1),
            "the restored instance takes commits"
        );
        plugin.start().await.expect("start when running is a no-op");
        let kinds: Vec<_> = db.recoveries().iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RecoveryKind::Start,
                RecoveryKind::Clone,
                RecoveryKind::InPlace
            ]
        );
    }

    #[tokio::test]
    async fn crash_snapshot_recover_reports_lost_commits_or_anomalies() {
        // The plugin's own verdict on crash snapshots: never the acknowledged point exactly
        // unless nothing was in flight; anomalies are Verification errors.
        let (mut n_behind, mut n_verification) = (0, 0);
        for seed in 0..30u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let vd = MemVolumes::new();
            let db = create(&vd, SimDbVolumes::single("data"));
            let mut reference = Reference::new();
            for _ in 0..rng.gen_range(10..200) {
                workload_step(&db, &mut reference, &mut rng);
            }
            let acked = db.last_committed_txid().expect("running");
            let snapshot = vd.snapshot();
            vd.clone_volume(&snapshot, "data", "clone");
            let target = RecoveryTarget {
                volumes: vec![volume_info("clone")],
                in_place: false,
            };
            match db.recover(&target).await {
                Ok(report) => {
                    let txid = parse_consistency_point(&report.recovered_point).expect("point");
                    n_behind += usize::from(txid < acked);
                    let values = read_recovered(vd.as_ref(), &SimDbVolumes::single("clone"))
                        .expect("read")
                        .values;
                    assert_eq!(values, reference.at(txid), "seed {seed}");
                }
                Err(PluginError::Verification(_)) => n_verification += 1,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        eprintln!("plugin recover of 30 crash snapshots: {n_behind} behind the acknowledged txid, {n_verification} verification errors");
        assert!(n_behind + n_verification >= 1);
    }

    #[tokio::test]
    async fn quiesce_faults() {
        let vd = MemVolumes::new();
        let db = Arc::new(create(&vd, SimDbVolumes::single("data")));
        db.try_commit(&[(1, 1)]).expect("commit");

        db.inject_fault(SimDbFault::QuiesceFails);
        assert!(matches!(db.quiesce().await, Err(PluginError::App(_))));
        assert!(!db.is_frozen());
        assert!(db.freeze_log().is_empty());
        db.unquiesce().await.expect("unquiesce when not frozen");

        // Hang: the fence is up, the call never returns; the caller's timeout gives up,
        // and only unquiesce lifts the fence.
        db.inject_fault(SimDbFault::QuiesceHangs);
        let hung = tokio::time::timeout(Duration::from_millis(50), db.quiesce()).await;
        assert!(hung.is_err(), "a hung quiesce does not return by itself");
        assert!(db.is_frozen());
        assert_eq!(db.try_commit(&[(1, 2)]), Err(CommitError::Frozen));
        assert!(db.frozen_for().expect("frozen") >= Duration::from_millis(50));
        db.unquiesce().await.expect("unquiesce");
        assert_eq!(db.try_commit(&[(1, 2)]), Ok(2));
        let log = db.freeze_log();
        assert_eq!(
            (log[0].end, log[0].point),
            (Some(FreezeEnd::Unquiesced), None)
        );
        assert!(log[0].duration(Instant::now()) >= Duration::from_millis(50));

        // A hung quiesce still awaited returns an error once the session is killed.
        db.inject_fault(SimDbFault::QuiesceHangs);
        let waiter = {
            let db = db.clone();
            tokio::spawn(async move { db.quiesce().await })
        };
        while !db.is_frozen() {
            tokio::task::yield_now().await;
        }
        assert!(db.kill_session());
        assert!(matches!(
            waiter.await.expect("join"),
            Err(PluginError::SessionLost(_))
        ));

        // Killed while quiesced: the database drops the freeze, commits resume, and every
        // unquiesce reports SessionLost until the next quiesce.
        let point = db.quiesce().await.expect("quiesce");
        assert_eq!(parse_consistency_point(&point), Some(2));
        assert!(db.kill_session());
        assert!(!db.kill_session(), "nothing left to kill");
        assert_eq!(db.try_commit(&[(1, 3)]), Ok(3));
        assert!(matches!(
            db.unquiesce().await,
            Err(PluginError::SessionLost(_))
        ));
        assert!(matches!(
            db.unquiesce().await,
            Err(PluginError::SessionLost(_))
        ));
        assert_eq!(
            db.freeze_log().last().and_then(|r| r.end),
            Some(FreezeEnd::SessionKilled)
        );
        db.quiesce().await.expect("quiesce");
        db.unquiesce()
            .await
            .expect("a fresh session unquiesces normally");
        db.unquiesce().await.expect("and idempotently");
        assert_eq!(db.freeze_log().len(), 4);
    }
}
