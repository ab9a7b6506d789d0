//! The simulated database's files, reached over the simulator's `/sim/v1` data plane.
//!
//! A `kind: simdb` app outside a test keeps its database on the simulator's volumes, and
//! `stasis` opens it for the length of a command (or of `stasis serve`): it is the
//! database's process. Only `ontap-sim` has this data plane; a real ONTAP array has none, so
//! a simdb app against a real array fails with a message saying so.
//!
//! `VolumeData` is synchronous (the database calls it under its own lock), so the HTTP calls
//! run on one dedicated thread with its own runtime; callers block for one request, which
//! is what a process writing to a mounted volume does too.

use std::sync::mpsc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use stasis_core::volume_data::{DataError, DataResult, VolumeData};

/// Bound on one data-plane request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

enum Op {
    Read { uuid: String, path: String, offset: u64, len: u64 },
    Write { uuid: String, path: String, offset: u64, data: Vec<u8> },
    Replace { uuid: String, path: String, data: Vec<u8> },
    List { uuid: String, dir: String },
}

enum Answer {
    Bytes(Vec<u8>),
    Done,
    Listing(serde_json::Value),
}

type Request = (Op, mpsc::Sender<DataResult<Answer>>);

pub struct SimHttpVolumeData {
    requests: mpsc::Sender<Request>,
}

impl SimHttpVolumeData {
    /// `base_url` is the simulator's (`http://127.0.0.1:PORT`), `builder` carries its TLS
    /// trust (see `ontap_client::http_client_builder`).
    pub fn new(base_url: &str, username: &str, password: SecretString, builder: reqwest::ClientBuilder) -> anyhow::Result<Self> {
        let client = builder.timeout(REQUEST_TIMEOUT).build()?;
        let base = url::Url::parse(base_url)?;
        let username = username.to_string();
        let (tx, rx) = mpsc::channel::<Request>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name("sim-data-plane".into()).spawn(move || {
            // Ends when every sender is gone.
            while let Ok((op, reply)) = rx.recv() {
                let answer = runtime.block_on(call(&client, &base, &username, &password, op));
                let _ = reply.send(answer);
            }
        })?;
        Ok(SimHttpVolumeData { requests: tx })
    }

    fn call(&self, op: Op) -> DataResult<Answer> {
        let (tx, rx) = mpsc::channel();
        self.requests.send((op, tx)).map_err(|_| DataError::Io("the data-plane thread has stopped".into()))?;
        rx.recv().map_err(|_| DataError::Io("the data-plane thread has stopped".into()))?
    }
}

fn file_url(base: &url::Url, uuid: &str, path: &str) -> url::Url {
    let mut url = base.clone();
    {
        let mut segments = url.path_segments_mut().expect("http(s) URLs have paths");
        segments.clear().extend(["sim", "v1", "volumes", uuid, "files"]);
        segments.extend(path.split('/').filter(|s| !s.is_empty()));
    }
    url
}

async fn call(client: &reqwest::Client, base: &url::Url, username: &str, password: &SecretString, op: Op) -> DataResult<Answer> {
    let io = |e: reqwest::Error| DataError::Io(format!("simulator data plane: {e}"));
    let request = match &op {
        Op::Read { uuid, path, offset, len } => client.get(file_url(base, uuid, path)).query(&[("offset", offset), ("length", len)]),
        Op::Write { uuid, path, offset, data } => client.put(file_url(base, uuid, path)).query(&[("offset", offset)]).body(data.clone()),
        Op::Replace { uuid, path, data } => client.put(file_url(base, uuid, path)).body(data.clone()),
        Op::List { uuid, dir } => client.get(file_url(base, uuid, dir)),
    };
    let response = request.basic_auth(username, Some(password.expose_secret())).send().await.map_err(io)?;
    let status = response.status();
    let what = match &op {
        Op::Read { uuid, path, .. } | Op::Write { uuid, path, .. } | Op::Replace { uuid, path, .. } => format!("{path} on volume {uuid}"),
        Op::List { uuid, dir } => format!("directory {dir:?} on volume {uuid}"),
    };
    if status == reqwest::StatusCode::NOT_FOUND {
        let body = response.text().await.unwrap_or_default();
        // A simulator that has no /sim/v1 at all (a real array) also answers 404.
        if body.contains("\"error\"") {
            return Err(DataError::NotFound(what));
        }
        return Err(DataError::Io(format!("{what}: the endpoint has no simulator data plane (/sim/v1); kind simdb needs ontap-sim")));
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        if body.contains("524479") {
            return Err(DataError::NoSpace(what));
        }
        return Err(DataError::Io(format!("{what}: HTTP {status}: {}", body.chars().take(300).collect::<String>())));
    }
    match op {
        Op::Read { .. } => Ok(Answer::Bytes(response.bytes().await.map_err(io)?.to_vec())),
        Op::List { .. } => Ok(Answer::Listing(response.json().await.map_err(io)?)),
        Op::Write { .. } | Op::Replace { .. } => Ok(Answer::Done),
    }
}

impl VolumeData for SimHttpVolumeData {
    fn read(&self, volume_uuid: &str, path: &str, offset: u64, len: u64) -> DataResult<Vec<u8>> {
        match self.call(Op::Read { uuid: volume_uuid.into(), path: path.into(), offset, len })? {
            Answer::Bytes(b) => Ok(b),
            _ => Err(DataError::Io(format!("{path} is a directory"))),
        }
    }

    fn write(&self, volume_uuid: &str, path: &str, offset: u64, data: &[u8]) -> DataResult<()> {
        self.call(Op::Write { uuid: volume_uuid.into(), path: path.into(), offset, data: data.to_vec() }).map(|_| ())
    }

    /// The data plane has no truncate: the file is replaced by its first `size` bytes (one
    /// request, so a snapshot still sees the old or the new file whole).
    fn truncate(&self, volume_uuid: &str, path: &str, size: u64) -> DataResult<()> {
        let mut data = if size == 0 { Vec::new() } else { self.read(volume_uuid, path, 0, size)? };
        data.resize(size as usize, 0);
        self.call(Op::Replace { uuid: volume_uuid.into(), path: path.into(), data }).map(|_| ())
    }

    fn size(&self, volume_uuid: &str, path: &str) -> DataResult<Option<u64>> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (dir.to_string(), name),
            None => (String::new(), path),
        };
        let listing = match self.call(Op::List { uuid: volume_uuid.into(), dir }) {
            Ok(Answer::Listing(v)) => v,
            Ok(_) => return Ok(None),
            Err(DataError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let records = listing.get("records").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        Ok(records.iter().find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name)).and_then(|r| r.get("size").and_then(|s| s.as_u64())))
    }
}
