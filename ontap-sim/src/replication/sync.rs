//! SnapMirror Synchronous: a write to a Sync source is acknowledged only once the
//! destination has applied it.
//!
//! The data plane is synchronous (FUSE threads, in-process calls, `/sim/v1` writes), so the
//! forward is a blocking HTTP/1.1 POST over a plain `TcpStream` (inside a multi-thread tokio
//! runtime through `block_in_place`; a current-thread runtime that also serves the destination
//! would deadlock, so in-process Sync needs a multi-thread runtime). What crosses is the delta
//! between the tree the destination is known to hold and the source's tree after the write.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::model::cluster::ClusterState;
use crate::model::delta::{self, Encoder};
use crate::model::fs::Fs;
use crate::model::peering::ClusterPeer;

/// Bound on one forwarded write (connect, send, answer).
pub const SYNC_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One write to forward, prepared under the simulator's lock.
pub struct Forward {
    pub peer: ClusterPeer,
    pub local_uuid: String,
    pub destination_volume: String,
    pub strict: bool,
    pub body: Vec<u8>,
    pub new_base: Fs,
}

/// The forward for the write just applied to `volume_uuid`, if it is an in-sync Sync source
/// and the write changed anything.
pub fn prepare(state: &ClusterState, volume_uuid: &str) -> Option<Forward> {
    let source = state.sync_sources.get(volume_uuid).filter(|s| s.in_sync)?;
    let volume = state.volumes.get(volume_uuid)?;
    let d = delta::diff(Some(&source.base), &volume.fs);
    if d.changed.is_empty() && d.removed.is_empty() {
        return None;
    }
    let peer = state.cluster_peers.get(&source.peer_uuid)?.clone();
    let mut enc = Encoder::default();
    enc.put_delta(&d);
    Some(Forward { peer, local_uuid: state.uuid.clone(), destination_volume: source.target.destination_volume.clone(), strict: source.target.strict, body: enc.out, new_base: volume.fs.clone() })
}

fn post_blocking(address: &str, path: &str, f: &Forward) -> Result<u16, String> {
    let addr: SocketAddr = address.parse().map_err(|_| format!("{address} is not IP:PORT"))?;
    let mut stream = TcpStream::connect_timeout(&addr, SYNC_WRITE_TIMEOUT).map_err(|e| format!("{address}: {e}"))?;
    stream.set_read_timeout(Some(SYNC_WRITE_TIMEOUT)).and_then(|_| stream.set_write_timeout(Some(SYNC_WRITE_TIMEOUT))).map_err(|e| e.to_string())?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{}: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        f.body.len(),
        super::PEER_HEADER,
        f.local_uuid,
        f.peer.passphrase
    );
    stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&f.body)).map_err(|e| format!("{address}: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The status line is all that is needed.
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).map_err(|e| format!("{address}: {e}"))?;
        if n == 0 {
            return Err(format!("{address}: connection closed without an answer"));
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace().nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| format!("{address}: bad answer {line:?}"))
}

/// Send the write to the destination and wait for it to be applied.
pub fn send(f: &Forward) -> Result<(), String> {
    let path = format!("/sim/v1/intercluster/sync/{}", f.destination_volume);
    let run = || {
        let mut last = String::from("no address");
        for address in &f.peer.addresses {
            match post_blocking(address, &path, f) {
                Ok(code) if (200..300).contains(&code) => return Ok(()),
                Ok(code) => return Err(format!("the destination refused the write (HTTP {code})")),
                Err(e) => last = e,
            }
        }
        Err(format!("the destination did not answer ({last})"))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
    }
}
