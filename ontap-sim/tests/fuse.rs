//! The FUSE data plane, through real mounts in temporary directories.
//!
//! These tests need /dev/fuse and `fusermount3` (Debian package fuse3, installed by
//! ci/install.sh). Without them they FAIL, saying what is missing: they never skip.
//! Every mount is unmounted at the end, also when a test fails (mount handles unmount on
//! drop, and a guard lazily unmounts anything left under the test's directory).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ontap_sim::fuse::{self, MountHandle};
use ontap_sim::model::cluster::{Selector, VolumeCreate, VolumeModify};
use ontap_sim::model::volume::{VolumeState, VolumeType};
use ontap_sim::{ClusterConfig, SimConfig, Simulator};
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

fn require_fuse() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    if let Err(e) = fuse::check_prerequisites() {
        panic!("the FUSE tests need FUSE and cannot run: {e:#}");
    }
}

/// Lazily unmounts whatever is still mounted below its directory when dropped.
struct MountGuard {
    dir: tempfile::TempDir,
}

impl MountGuard {
    fn new() -> Self {
        require_fuse();
        MountGuard { dir: tempfile::tempdir().expect("temp dir") }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("canonical temp dir")
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

fn is_mount_point(dir: &Path) -> bool {
    let d = dir.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().any(|l| l.split(' ').nth(4) == Some(&*d))
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let dir = self.path();
        for m in mounts_under(&dir).into_iter().rev() {
            let _ = Command::new("fusermount3").args(["-u", "-z", "-q", "--", &m]).status();
        }
        if !std::thread::panicking() {
            assert!(mounts_under(&dir).is_empty(), "mounts left behind under {}", dir.display());
        }
    }
}

fn new_sim() -> Simulator {
    Simulator::new(&ClusterConfig::default())
}

fn create_volume(sim: &Simulator, name: &str, size: u64, junction: Option<&str>, vtype: Option<VolumeType>) -> String {
    let now = sim.now();
    sim.transact(|s| {
        s.create_volume(
            VolumeCreate {
                name: name.into(),
                svm: Selector { name: Some("svm0".into()), uuid: None },
                aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
                size: Some(size),
                junction_path: junction.map(str::to_string),
                vtype,
                ..Default::default()
            },
            now,
        )
    })
    .expect("creating a volume")
}

fn mount(sim: &Simulator, uuid: &str, dir: &Path) -> MountHandle {
    let handle = fuse::mount(sim, uuid, dir).expect("mounting");
    assert!(is_mount_point(handle.path()), "{} is not a mount point", handle.path().display());
    handle
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error().expect("an OS error")
}

/// A minimal ONTAP REST client for the tests.
struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let resp = self.http.request(method, format!("{}{}", self.base, path)).basic_auth("admin", Some("admin")).json(&body).send().await.expect("request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
    }
    async fn ok(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let (status, v) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {v}");
        v
    }
    async fn raw(&self, path: &str) -> Vec<u8> {
        let resp = self.http.get(format!("{}{}", self.base, path)).basic_auth("admin", Some("admin")).send().await.expect("request");
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.bytes().await.expect("body").to_vec()
    }
}

/// Run blocking file system work off the async runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_through_rest_are_atomic_and_visible_under_dot_snapshot() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let uuid = create_volume(&sim, "db", 64 * MIB, None, None);
    let server = ontap_sim::server::spawn_with(sim.clone(), SimConfig::default()).await.expect("server");
    let rest = Rest { http: reqwest::Client::new(), base: server.base_url() };
    let handle = mount(&sim, &uuid, &guard.path().join("db"));
    let root = handle.path().to_path_buf();

    let r = root.clone();
    blocking(move || {
        fs::create_dir(r.join("data")).unwrap();
        fs::write(r.join("data/a.ibd"), vec![b'a'; 10_000]).unwrap();
        let mut f = fs::File::create(r.join("log")).unwrap();
        f.write_all(b"generation 1").unwrap();
        f.sync_all().unwrap();
    })
    .await;
    // The control API sees what was written through the mount.
    assert_eq!(rest.raw(&format!("/sim/v1/volumes/{uuid}/files/log")).await, b"generation 1");

    rest.ok(reqwest::Method::POST, &format!("/api/storage/volumes/{uuid}/snapshots?return_timeout=30"), json!({"name": "s1"})).await;

    let r = root.clone();
    blocking(move || {
        fs::write(r.join("log"), b"generation 2, longer").unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(r.join("data/a.ibd")).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(b"BBBB").unwrap();
        // The snapshot view: the old bytes, read-only.
        assert_eq!(fs::read(r.join(".snapshot/s1/log")).unwrap(), b"generation 1");
        let old = fs::read(r.join(".snapshot/s1/data/a.ibd")).unwrap();
        assert_eq!(old, vec![b'a'; 10_000]);
        let names: Vec<String> = fs::read_dir(r.join(".snapshot")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["s1".to_string()]);
        let mut snap_names: Vec<String> = fs::read_dir(r.join(".snapshot/s1")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        snap_names.sort();
        assert_eq!(snap_names, vec!["data".to_string(), "log".to_string()]);
        // `.snapshot` is reachable but not listed in the root (MariaDB would see a database).
        let root_names: Vec<String> = fs::read_dir(&r).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(!root_names.contains(&".snapshot".to_string()), "{root_names:?}");
        assert_eq!(errno_of(fs::write(r.join(".snapshot/s1/log"), b"x")), libc::EROFS);
        assert_eq!(errno_of(fs::create_dir(r.join(".snapshot/s1/newdir"))), libc::EROFS);
        assert_eq!(errno_of(fs::remove_file(r.join(".snapshot/s1/log"))), libc::EROFS);
        // Same file, different trees: different inode numbers.
        let active_ino = fs::metadata(r.join("log")).unwrap().ino();
        let snap_ino = fs::metadata(r.join(".snapshot/s1/log")).unwrap().ino();
        assert_ne!(active_ino, snap_ino);
        assert_eq!(ontap_sim::fuse::decode_ino(snap_ino), Some(ontap_sim::fuse::Node::Snapshot { epoch: 0, ino: active_ino }));
    })
    .await;

    // The control API agrees, for the active file system and the snapshot.
    assert_eq!(rest.raw(&format!("/sim/v1/volumes/{uuid}/files/log")).await, b"generation 2, longer");
    assert_eq!(rest.raw(&format!("/sim/v1/volumes/{uuid}/snapshots/s1/files/log")).await, b"generation 1");
    let a = sim.read_file(&uuid, "data/a.ibd", 4094, Some(8)).unwrap();
    assert_eq!(a, b"aaBBBBaa");

    // Atomicity across files: a writer keeps two files equal, snapshots never see them differ.
    let r = root.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut n: u64 = 0;
        let mut fa = fs::OpenOptions::new().create(true).truncate(true).write(true).open(r.join("pair_a")).unwrap();
        let mut fb = fs::OpenOptions::new().create(true).truncate(true).write(true).open(r.join("pair_b")).unwrap();
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            n += 1;
            fa.write_all_at_start(n);
            fb.write_all_at_start(n);
        }
        n
    });
    trait AtStart {
        fn write_all_at_start(&mut self, n: u64);
    }
    impl AtStart for fs::File {
        fn write_all_at_start(&mut self, n: u64) {
            use std::os::unix::fs::FileExt;
            self.write_all_at(&n.to_le_bytes(), 0).unwrap();
        }
    }
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        rest.ok(reqwest::Method::POST, &format!("/api/storage/volumes/{uuid}/snapshots?return_timeout=30"), json!({"name": format!("p{i}")})).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let writes = blocking(move || writer.join().unwrap()).await;
    assert!(writes > 0);
    for i in 0..20 {
        let a = sim.read_snapshot_file(&uuid, &format!("p{i}"), "pair_a", 0, None).unwrap_or_default();
        let b = sim.read_snapshot_file(&uuid, &format!("p{i}"), "pair_b", 0, None).unwrap_or_default();
        let a = if a.len() == 8 { u64::from_le_bytes(a.try_into().unwrap()) } else { 0 };
        let b = if b.len() == 8 { u64::from_le_bytes(b.try_into().unwrap()) } else { 0 };
        assert!(a == b || a == b + 1, "snapshot p{i}: pair_a {a}, pair_b {b}");
    }

    drop(handle);
    server.shutdown().await;
    drop(guard);
}

#[test]
fn posix_operations_work() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let uuid = create_volume(&sim, "vol1", 64 * MIB, None, None);
    let handle = mount(&sim, &uuid, &guard.path().join("m"));
    let r = handle.path();

    // mkdir, create, rename, unlink, rmdir
    fs::create_dir_all(r.join("a/b")).unwrap();
    fs::write(r.join("a/b/f1"), b"hello").unwrap();
    fs::rename(r.join("a/b/f1"), r.join("a/f2")).unwrap();
    assert_eq!(errno_of(fs::metadata(r.join("a/b/f1"))), libc::ENOENT);
    assert_eq!(fs::read(r.join("a/f2")).unwrap(), b"hello");
    fs::write(r.join("a/f3"), b"replaced").unwrap();
    fs::rename(r.join("a/f2"), r.join("a/f3")).unwrap();
    assert_eq!(fs::read(r.join("a/f3")).unwrap(), b"hello");
    assert_eq!(errno_of(fs::remove_dir(r.join("a"))), libc::ENOTEMPTY);
    fs::rename(r.join("a/b"), r.join("c")).unwrap();
    assert!(fs::metadata(r.join("c")).unwrap().is_dir());
    assert_eq!(errno_of(fs::rename(r.join("a"), r.join("a/x"))), libc::EINVAL);
    fs::remove_file(r.join("a/f3")).unwrap();
    fs::remove_dir(r.join("a")).unwrap();
    fs::remove_dir(r.join("c")).unwrap();
    assert!(fs::read_dir(r).unwrap().next().is_none());
    assert_eq!(sim.list_dir(&uuid, None, "").unwrap(), vec![]);

    // truncate, sparse reads, fsync
    let mut f = fs::OpenOptions::new().create(true).read(true).write(true).truncate(true).open(r.join("t")).unwrap();
    f.write_all(&[7u8; 10_000]).unwrap();
    f.set_len(5000).unwrap();
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    assert_eq!(fs::metadata(r.join("t")).unwrap().len(), 5000);
    f.set_len(9000).unwrap();
    let mut back = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(&back[..5000], &[7u8; 5000][..]);
    assert!(back[5000..].iter().all(|&b| b == 0), "bytes past a truncation read as zeros");
    drop(f);
    assert_eq!(sim.read_file(&uuid, "t", 0, None).unwrap(), back);

    // fallocate (mode 0) allocates blocks and extends the file
    let used_before = sim.with_volume(&uuid, |v| Ok(v.space().used)).unwrap();
    let status = Command::new("fallocate").args(["-l", "1MiB"]).arg(r.join("prealloc")).status().unwrap();
    assert!(status.success(), "fallocate failed");
    let meta = fs::metadata(r.join("prealloc")).unwrap();
    assert_eq!(meta.len(), MIB);
    assert_eq!(meta.blocks() * 512, MIB, "fallocate allocates");
    let used_after = sim.with_volume(&uuid, |v| Ok(v.space().used)).unwrap();
    assert_eq!(used_after - used_before, MIB);
    // Other modes are refused (punch hole)
    let punch = Command::new("fallocate").args(["-p", "-o", "0", "-l", "4096"]).arg(r.join("prealloc")).stderr(Stdio::null()).status().unwrap();
    assert!(!punch.success(), "punch hole is not supported");

    // symlink, readlink, hard link
    std::os::unix::fs::symlink("t", r.join("sym")).unwrap();
    assert_eq!(fs::read_link(r.join("sym")).unwrap(), PathBuf::from("t"));
    assert_eq!(fs::read(r.join("sym")).unwrap().len(), 9000);
    fs::hard_link(r.join("t"), r.join("t2")).unwrap();
    assert_eq!(fs::metadata(r.join("t")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(r.join("t")).unwrap().ino(), fs::metadata(r.join("t2")).unwrap().ino());
    fs::remove_file(r.join("t")).unwrap();
    assert_eq!(fs::read(r.join("t2")).unwrap().len(), 9000);

    // chmod and times
    fs::set_permissions(r.join("t2"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(r.join("t2")).unwrap().permissions().mode() & 0o7777, 0o600);
    let then = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs::File::options().write(true).open(r.join("t2")).unwrap().set_modified(then).unwrap();
    assert_eq!(fs::metadata(r.join("t2")).unwrap().modified().unwrap(), then);

    // O_DIRECT, as InnoDB opens its files by default
    let mut buf = vec![0u8; 3 * 4096];
    let start = buf.as_ptr().align_offset(4096);
    let aligned = &mut buf[start..start + 4096];
    aligned.fill(0x5a);
    let mut d = fs::OpenOptions::new().create(true).read(true).write(true).custom_flags(libc::O_DIRECT).open(r.join("direct")).unwrap();
    d.write_all(aligned).unwrap();
    d.sync_all().unwrap();
    aligned.fill(0);
    d.seek(SeekFrom::Start(0)).unwrap();
    d.read_exact(aligned).unwrap();
    assert!(aligned.iter().all(|&b| b == 0x5a));
    drop(d);
    assert_eq!(sim.read_file(&uuid, "direct", 0, None).unwrap(), vec![0x5a; 4096]);

    // Changes through the control API are seen through the mount at once.
    sim.put_file(&uuid, "from_api", b"via the control API").unwrap();
    assert_eq!(fs::read(r.join("from_api")).unwrap(), b"via the control API");
    sim.remove_file(&uuid, "from_api").unwrap();
    assert_eq!(errno_of(fs::metadata(r.join("from_api"))), libc::ENOENT);

    // `.snapshot` cannot be created, removed or renamed over
    assert_eq!(errno_of(fs::create_dir(r.join(".snapshot"))), libc::EEXIST);
    assert!(fs::metadata(r.join(".snapshot")).unwrap().is_dir());

    // A file may not reach past the volume's size.
    let big = fs::OpenOptions::new().write(true).open(r.join("t2")).unwrap();
    assert_eq!(errno_of(big.set_len(65 * MIB)), libc::EFBIG);
    drop(big);

    let t = Instant::now();
    handle.unmount().expect("unmount");
    assert!(t.elapsed() < Duration::from_secs(2), "an idle mount unmounts at once, not lazily ({:?})", t.elapsed());
    drop(guard);
}

#[test]
fn a_busy_mount_is_unmounted_lazily_and_open_files_keep_working() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let uuid = create_volume(&sim, "busy", 32 * MIB, None, None);
    let handle = mount(&sim, &uuid, &guard.path().join("m"));
    let dir = handle.path().to_path_buf();
    fs::write(dir.join("f"), b"still here").unwrap();
    let mut open = fs::File::open(dir.join("f")).unwrap();
    drop(handle);
    assert!(!is_mount_point(&dir), "a busy mount is detached, not left behind");
    let mut s = String::new();
    open.read_to_string(&mut s).unwrap();
    assert_eq!(s, "still here");
    drop(open);
    drop(guard);
}

#[test]
fn full_volume_gives_enospc_and_statfs_reflects_the_volume() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let uuid = create_volume(&sim, "small", 20 * MIB, None, None);
    let handle = mount(&sim, &uuid, &guard.path().join("m"));
    let r = handle.path();
    let statfs = |p: &Path| -> (u64, u64, u64, u64) {
        let out = Command::new("stat").args(["-f", "-c", "%S %b %f %a"]).arg(p).output().unwrap();
        assert!(out.status.success());
        let v: Vec<u64> = String::from_utf8(out.stdout).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2], v[3])
    };
    let space = sim.with_volume(&uuid, |v| Ok(v.space())).unwrap();
    let (bsize, blocks, bfree, bavail) = statfs(r);
    assert_eq!(bsize, 4096);
    assert_eq!(blocks * bsize, space.size - space.snapshot_reserve_size, "total = size less the snapshot reserve");
    assert_eq!(bavail * bsize, space.available);
    assert_eq!(bfree, bavail);

    fs::write(r.join("one_mib"), vec![1u8; MIB as usize]).unwrap();
    let (_, _, _, bavail2) = statfs(r);
    assert_eq!(bavail - bavail2, MIB / 4096);
    let space2 = sim.with_volume(&uuid, |v| Ok(v.space())).unwrap();
    assert_eq!(bavail2 * 4096, space2.available);

    // Fill it up: ENOSPC, and the volume stays consistent.
    let mut f = fs::File::create(r.join("fill")).unwrap();
    let chunk = vec![2u8; MIB as usize];
    let err = loop {
        if let Err(e) = f.write_all(&chunk) {
            break e;
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
    drop(f);
    let (_, _, _, bavail3) = statfs(r);
    assert!(bavail3 < 256, "almost nothing left: {bavail3}");
    fs::remove_file(r.join("fill")).unwrap();
    let (_, _, _, bavail4) = statfs(r);
    assert_eq!(bavail4, bavail2);
    drop(handle);
    drop(guard);
}

#[test]
fn dp_and_offline_volumes_refuse_writes() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let rw = create_volume(&sim, "rw", 32 * MIB, None, None);
    sim.put_file(&rw, "keep", b"data").unwrap();
    let dp = create_volume(&sim, "dst", 32 * MIB, None, Some(VolumeType::Dp));
    // A dp volume is written only by SnapMirror; give it content the way a transfer would.
    sim.with_volume_mut(&dp, |v| {
        v.vtype = VolumeType::Rw;
        v.put_file("replicated", b"from the source", sim.now().into())?;
        v.vtype = VolumeType::Dp;
        Ok(())
    })
    .unwrap();

    let dp_mount = mount(&sim, &dp, &guard.path().join("dp"));
    let d = dp_mount.path();
    assert_eq!(fs::read(d.join("replicated")).unwrap(), b"from the source");
    assert_eq!(errno_of(fs::write(d.join("new"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::OpenOptions::new().write(true).open(d.join("replicated"))), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(d.join("dir"))), libc::EROFS);
    assert_eq!(errno_of(fs::remove_file(d.join("replicated"))), libc::EROFS);
    assert_eq!(errno_of(fs::rename(d.join("replicated"), d.join("moved"))), libc::EROFS);
    assert_eq!(errno_of(fs::set_permissions(d.join("replicated"), fs::Permissions::from_mode(0o600))), libc::EROFS);
    assert_eq!(sim.read_file(&dp, "replicated", 0, None).unwrap(), b"from the source");

    let rw_mount = mount(&sim, &rw, &guard.path().join("rw"));
    let w = rw_mount.path();
    let mut open = fs::OpenOptions::new().read(true).write(true).open(w.join("keep")).unwrap();
    let now = sim.now();
    sim.transact(|s| s.modify_volume(&rw, VolumeModify { state: Some(VolumeState::Offline), ..Default::default() })).unwrap();
    assert_eq!(sim.with_volume(&rw, |v| Ok(v.state)).unwrap(), VolumeState::Offline);
    assert_eq!(errno_of(open.write_all(b"x")), libc::EIO);
    assert_eq!(errno_of(fs::read(w.join("keep"))), libc::EIO);
    let _ = now;
    sim.transact(|s| s.modify_volume(&rw, VolumeModify { state: Some(VolumeState::Online), ..Default::default() })).unwrap();
    open.write_all(b"D").unwrap();
    assert_eq!(fs::read(w.join("keep")).unwrap(), b"Data");
    drop(open);
    drop(rw_mount);
    drop(dp_mount);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snaprestore_then_remount_brings_the_old_bytes_back() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let uuid = create_volume(&sim, "db", 64 * MIB, None, None);
    let server = ontap_sim::server::spawn_with(sim.clone(), SimConfig::default()).await.expect("server");
    let rest = Rest { http: reqwest::Client::new(), base: server.base_url() };
    let dir = guard.path().join("db");
    let handle = mount(&sim, &uuid, &dir);
    let r = handle.path().to_path_buf();
    blocking(move || {
        fs::write(r.join("ibdata1"), vec![1u8; 100_000]).unwrap();
        fs::write(r.join("keep"), b"before").unwrap();
    })
    .await;
    rest.ok(reqwest::Method::POST, &format!("/api/storage/volumes/{uuid}/snapshots?return_timeout=30"), json!({"name": "good"})).await;
    let r = handle.path().to_path_buf();
    blocking(move || {
        let mut f = fs::OpenOptions::new().write(true).open(r.join("ibdata1")).unwrap();
        f.write_all(&[9u8; 50_000]).unwrap();
        fs::write(r.join("added_later"), b"x").unwrap();
        fs::remove_file(r.join("keep")).unwrap();
        // Read through the page cache so the kernel holds the new bytes.
        assert_eq!(fs::read(r.join("ibdata1")).unwrap()[0], 9);
    })
    .await;
    rest.ok(reqwest::Method::POST, &format!("/api/storage/volumes/{uuid}/snapshots?return_timeout=30"), json!({"name": "newer"})).await;

    // The restore workflow: stop the app, unmount, SnapRestore, mount afresh.
    blocking(move || handle.unmount().expect("unmount")).await;
    assert!(!is_mount_point(&dir));
    rest.ok(reqwest::Method::PATCH, &format!("/api/storage/volumes/{uuid}?restore_to.snapshot.name=good&return_timeout=30"), json!({})).await;
    let handle = mount(&sim, &uuid, &dir);
    let r = handle.path().to_path_buf();
    blocking(move || {
        assert_eq!(fs::read(r.join("ibdata1")).unwrap(), vec![1u8; 100_000]);
        assert_eq!(fs::read(r.join("keep")).unwrap(), b"before");
        assert_eq!(errno_of(fs::metadata(r.join("added_later"))), libc::ENOENT);
        // Newer snapshots went with the restore.
        let names: Vec<String> = fs::read_dir(r.join(".snapshot")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["good".to_string()]);
        // The restored volume is writable, and new inodes do not reuse numbers.
        fs::write(r.join("after_restore"), b"new").unwrap();
    })
    .await;
    let ino_keep = fs::metadata(handle.path().join("keep")).unwrap().ino();
    let ino_new = fs::metadata(handle.path().join("after_restore")).unwrap().ino();
    assert!(ino_new > ino_keep);
    // invalidate_cache is usable on a live mount.
    assert!(handle.invalidate_cache() >= 1);
    drop(handle);
    server.shutdown().await;
    drop(guard);
}

#[test]
fn mount_manager_follows_junction_paths() {
    let guard = MountGuard::new();
    let sim = new_sim();
    let manager = fuse::MountManager::new(sim.clone(), guard.path().join("exports"), fuse::MountOptions::default()).unwrap();
    let a = create_volume(&sim, "a", 32 * MIB, Some("/vol_a"), None);
    let _b = create_volume(&sim, "b", 32 * MIB, None, None);
    assert!(manager.reconcile().is_empty());
    let pa = manager.mount_point("/vol_a");
    assert!(is_mount_point(&pa));
    assert_eq!(manager.mounted().len(), 1);
    fs::write(pa.join("f"), b"on a").unwrap();
    assert_eq!(sim.read_file(&a, "f", 0, None).unwrap(), b"on a");

    // A path change moves the mount.
    sim.transact(|s| s.modify_volume(&a, VolumeModify { junction_path: Some(Some("/moved".into())), ..Default::default() })).unwrap();
    assert!(manager.reconcile().is_empty());
    assert!(!is_mount_point(&pa));
    let moved = manager.mount_point("/moved");
    assert_eq!(fs::read(moved.join("f")).unwrap(), b"on a");
    // Remount (the restore workflow's fresh mount).
    manager.remount(&a).unwrap();
    assert!(is_mount_point(&moved));
    // Path removal unmounts; so does a delete.
    sim.transact(|s| s.modify_volume(&a, VolumeModify { junction_path: Some(None), ..Default::default() })).unwrap();
    assert!(manager.reconcile().is_empty());
    assert!(!is_mount_point(&moved));
    sim.transact(|s| s.modify_volume(&a, VolumeModify { junction_path: Some(Some("/again".into())), ..Default::default() })).unwrap();
    manager.start(Duration::from_millis(20));
    let again = manager.mount_point("/again");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_mount_point(&again) {
        assert!(Instant::now() < deadline, "the watcher never mounted /again");
        std::thread::sleep(Duration::from_millis(10));
    }
    sim.transact(|s| s.delete_volume(&a)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mount_point(&again) {
        assert!(Instant::now() < deadline, "the watcher never unmounted a deleted volume");
        std::thread::sleep(Duration::from_millis(10));
    }
    create_volume(&sim, "c", 32 * MIB, Some("/c"), None);
    manager.reconcile();
    assert!(is_mount_point(&manager.mount_point("/c")));
    drop(manager);
    assert!(mounts_under(&guard.path()).is_empty(), "the manager unmounts everything when dropped");
    drop(guard);
}

/// Kills the server if a test fails half-way (its mounts go with fusermount3's auto-unmount
/// and the guard).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mount_root_mounts_volumes_and_unmounts_on_sigterm() {
    let guard = MountGuard::new();
    let root = guard.path().join("mnt");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_ontap-sim"))
            .args(["serve", "--listen", "127.0.0.1:0", "--mount-root"])
            .arg(&root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting ontap-sim serve"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let base = blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("stdout");
        std::thread::spawn(move || for _ in lines {});
        first.rsplit(' ').next().unwrap().to_string()
    })
    .await;
    let rest = Rest { http: reqwest::Client::new(), base };
    rest.ok(reqwest::Method::POST, "/api/storage/volumes?return_timeout=30", json!({"name": "db", "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "size": 64 * MIB, "nas": {"path": "/db"}})).await;
    let records = rest.ok(reqwest::Method::GET, "/api/storage/volumes?name=db", json!({})).await;
    let uuid = records["records"][0]["uuid"].as_str().unwrap().to_string();
    let dir = root.join("db");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mount_point(&dir) {
        assert!(Instant::now() < deadline, "serve never mounted /db");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = dir.clone();
    blocking(move || fs::write(d.join("hello"), b"through the mount").unwrap()).await;
    assert_eq!(rest.raw(&format!("/sim/v1/volumes/{uuid}/files/hello")).await, b"through the mount");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await;
    assert!(status.success(), "serve exited with {status}");
    assert!(mounts_under(&root).is_empty(), "serve left mounts behind: {:?}", mounts_under(&root));
    drop(guard);
}
