//! The reference application of kind `exec-hooks` (`stasis-ledger-app`, in `src/bin/`): an
//! app Stasis knows nothing about, quiesced only by the scenario's hook commands. This
//! module holds what the app and the harness's checker share: the on-disk record format,
//! the control protocol, and the checker of a restored copy.
//!
//! A record `n` is written in steps, across files and volumes, and acknowledged (`ack n` on
//! the app's stdout) only after the last step:
//! 1. `objects/<n>.dat` on the first volume: a payload drawn from `(seed, n)`;
//! 2. the line `n <len> <checksum>` appended to `journal.log` on every volume in turn,
//!    with a little computation (`STEP_GAP`) between volumes.
//!
//! A copy is consistent when every volume's journal is the same run `1..=k` of complete
//! lines with the same checksums, and `objects/` holds exactly the payloads `1..=k`,
//! intact. A snapshot taken mid-record (no quiesce) leaves an object without its journal
//! line, or one volume's journal ahead of another's: the checker names it.
//!
//! Control (a Unix socket; one request line, one answer line, like `fsfreeze` for one app):
//! `pause <lease_ms>` finishes the record in progress, stops before the next one, and
//! answers `paused <k>` (k = the last complete record); the pause lapses by itself after
//! the lease, so a lost resume never leaves the app stopped for good. `resume` answers
//! `resumed`. `status` answers `running <k>` or `paused <k>`.

use std::path::Path;
use std::time::Duration;

/// Where a hook finds the app's control socket (set in the app's "container" environment).
pub const CONTROL_ENV: &str = "LEDGER_APP_CONTROL";
/// The program's name (a bin of this crate).
pub const BINARY: &str = "stasis-ledger-app";
/// Work between the journal writes on two volumes: what makes a torn record likely when a
/// snapshot is not quiesced.
pub const STEP_GAP: Duration = Duration::from_millis(4);
/// Pause between records.
pub const RECORD_PACE: Duration = Duration::from_millis(1);
pub const JOURNAL: &str = "journal.log";
pub const OBJECTS: &str = "objects";

/// The payload of record `n`: 256..2303 bytes, reproducible from `(seed, n)`.
pub fn payload(seed: u64, n: u64) -> Vec<u8> {
    let mut x = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let len = 256 + (next() % 2048) as usize;
    (0..len).map(|_| next() as u8).collect()
}

/// FNV-1a, enough to tell a payload from a torn or foreign one.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn object_name(n: u64) -> String {
    format!("{n:010}.dat")
}

pub fn journal_line(n: u64, payload: &[u8]) -> String {
    format!("{n} {} {:016x}\n", payload.len(), checksum(payload))
}

/// One volume's journal: the complete lines, in order, or what is wrong with it.
fn read_journal(volume: &Path) -> Result<Vec<(u64, usize, u64)>, String> {
    let path = volume.join(JOURNAL);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| format!("{} is not text", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!("{} ends in a torn line {:?}", path.display(), text.rsplit('\n').next().unwrap_or("")));
    }
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let parsed = (|| {
            let mut f = line.split(' ');
            let n = f.next()?.parse::<u64>().ok()?;
            let len = f.next()?.parse::<usize>().ok()?;
            let sum = u64::from_str_radix(f.next()?, 16).ok()?;
            f.next().is_none().then_some((n, len, sum))
        })();
        let entry = parsed.ok_or_else(|| format!("{} line {}: {line:?} is not `n len checksum`", path.display(), i + 1))?;
        if entry.0 != i as u64 + 1 {
            return Err(format!("{} line {} holds record {}, not {}", path.display(), i + 1, entry.0, i + 1));
        }
        lines.push(entry);
    }
    Ok(lines)
}

/// Check a copy of the app's volumes (in the app's order). `Ok(k)`: consistent, records
/// `1..=k` complete. `Err`: what is torn or disagrees.
pub fn check_copy(volumes: &[&Path], seed: u64) -> Result<u64, String> {
    let first = volumes.first().ok_or("no volume")?;
    let journal = read_journal(first)?;
    for other in &volumes[1..] {
        let theirs = read_journal(other)?;
        if theirs != journal {
            let (a, b) = (journal.len(), theirs.len());
            return Err(format!("the volumes disagree: {} journals {a} records, {} journals {b} (a record torn across volumes)", first.display(), other.display()));
        }
    }
    let objects = first.join(OBJECTS);
    let mut names: Vec<String> = match std::fs::read_dir(&objects) {
        Ok(dir) => dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("listing {}: {e}", objects.display())),
    };
    names.sort();
    let expected: Vec<String> = (1..=journal.len() as u64).map(object_name).collect();
    if names != expected {
        let extra: Vec<&String> = names.iter().filter(|n| !expected.contains(n)).collect();
        let missing: Vec<&String> = expected.iter().filter(|n| !names.contains(n)).collect();
        return Err(format!("{} records journalled, but objects without a journal line: {extra:?}, journalled records without an object: {missing:?} (a record torn across files)", journal.len()));
    }
    for &(n, len, sum) in &journal {
        let bytes = std::fs::read(objects.join(object_name(n))).map_err(|e| format!("reading object {n}: {e}"))?;
        let want = payload(seed, n);
        if bytes.len() != len || checksum(&bytes) != sum || bytes != want {
            return Err(format!("object {n} is {} bytes with checksum {:016x}; its journal line says {len} bytes, {sum:016x} (torn or foreign)", bytes.len(), checksum(&bytes)));
        }
    }
    Ok(journal.len() as u64)
}

/// The consistency point a `pause` hook prints for record `k`.
pub fn point(k: u64) -> String {
    format!("record={k}")
}

/// The record number of a point printed by `pause`, if it is one.
pub fn record_of(point: &str) -> Option<u64> {
    point.strip_prefix("record=")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(volumes: &[&Path], seed: u64, records: u64) {
        std::fs::create_dir_all(volumes[0].join(OBJECTS)).unwrap();
        for n in 1..=records {
            let p = payload(seed, n);
            std::fs::write(volumes[0].join(OBJECTS).join(object_name(n)), &p).unwrap();
            for v in volumes {
                use std::io::Write;
                std::fs::OpenOptions::new().create(true).append(true).open(v.join(JOURNAL)).unwrap().write_all(journal_line(n, &p).as_bytes()).unwrap();
            }
        }
    }

    #[test]
    fn a_complete_copy_passes_and_every_kind_of_tear_is_named() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let vols = [a.path(), b.path()];
        assert_eq!(check_copy(&vols, 7), Ok(0), "an empty copy is consistent");
        write(&vols, 7, 5);
        assert_eq!(check_copy(&vols, 7), Ok(5));
        assert!(check_copy(&vols, 8).unwrap_err().contains("torn or foreign"), "the seed is part of the payload");

        // An object written, its journal lines not yet.
        std::fs::write(a.path().join(OBJECTS).join(object_name(6)), payload(7, 6)).unwrap();
        assert!(check_copy(&vols, 7).unwrap_err().contains("objects without a journal line"));
        // The first volume journalled it, the second not yet.
        let line = journal_line(6, &payload(7, 6));
        let mut journal = std::fs::read_to_string(a.path().join(JOURNAL)).unwrap();
        journal.push_str(&line);
        std::fs::write(a.path().join(JOURNAL), &journal).unwrap();
        assert!(check_copy(&vols, 7).unwrap_err().contains("the volumes disagree"));
        // A half-written line.
        std::fs::write(b.path().join(JOURNAL), format!("{}{}", std::fs::read_to_string(b.path().join(JOURNAL)).unwrap(), &line[..3])).unwrap();
        assert!(check_copy(&vols, 7).unwrap_err().contains("torn line"));
    }

    #[test]
    fn points_round_trip() {
        assert_eq!(record_of(&point(42)), Some(42));
        assert_eq!(record_of("exec-hooks@2026-01-01T00:00:00Z"), None);
    }
}
