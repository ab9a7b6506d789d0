//! Performance figures of the simulator's copy-on-write model and of its REST API.
//!
//! `cargo bench -p ontap-sim` prints, each next to its goal and whether it is met:
//!
//! 1. snapshot create latency with 1 GiB vs 16 GiB written into the volume (in-process);
//! 2. extra memory one snapshot holds after 1% of a 1 GiB volume is overwritten, measured
//!    with a counting global allocator;
//! 3. data-plane write throughput through `Simulator::write_file` (16 KiB writes);
//! 4. REST snapshot create+delete cycles per second with 8 concurrent keep-alive clients.
//!
//! This is a report, not a test: nothing fails when a goal is missed. Run time is about
//! 15-30 s on a 2-core machine (after the build).

use std::alloc::System;
use std::time::{Duration, Instant};

use cap::Cap;
use ontap_sim::model::cluster::{ClusterConfig, Selector, SnapshotModify, VolumeCreate};
use ontap_sim::{SimConfig, Simulator};
use serde_json::{json, Value};

/// Wraps the system allocator and counts live bytes (requested sizes, in an AtomicUsize).
/// The `cap` crate does it because the workspace forbids `unsafe_code`, which an own
/// `GlobalAlloc` impl would need.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const BLOCK: u64 = 4096;

/// Bytes currently allocated through the global allocator (requested sizes, not counting
/// malloc headers, fragmentation or freed-but-retained pages).
fn live_bytes() -> usize {
    ALLOC.allocated()
}

/// (VmRSS, VmHWM) of this process in bytes, from /proc (zeros where unavailable).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * KIB)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / MIB as f64)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

/// Percentile `p` (0..=1) of `samples`, which it sorts.
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn new_volume(sim: &Simulator, name: &str, size: u64) -> String {
    let now = sim.now();
    let req = VolumeCreate {
        name: name.into(),
        svm: Selector { name: Some("svm0".into()), uuid: None },
        aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
        size: Some(size),
        ..Default::default()
    };
    sim.transact(|s| s.create_volume(req, now)).expect("volume create")
}

/// A snapshot create as the REST handler runs it, minus the job record and HTTP.
fn snapshot_create(sim: &Simulator, volume: &str, name: &str) -> String {
    let now = sim.now();
    sim.transact(|s| s.create_snapshot(volume, name, SnapshotModify::default(), now)).expect("snapshot create")
}

fn snapshot_delete(sim: &Simulator, volume: &str, uuid: &str) {
    sim.transact(|s| s.delete_snapshot(volume, uuid)).expect("snapshot delete");
}

/// A 4 KiB block of data no other block has: `tag` and `index` stamped into every word.
fn distinct_block(tag: u64, index: u64, out: &mut [u8]) {
    for (i, word) in out.chunks_mut(8).enumerate() {
        let v = (tag << 56) ^ (index << 16) ^ i as u64 ^ 0x5A5A_0000_0000_0000;
        word.copy_from_slice(&v.to_le_bytes()[..word.len()]);
    }
}

// ---------------------------------------------------------------------------------------
// 1. Snapshot create latency vs data written
// ---------------------------------------------------------------------------------------

struct SnapLatency {
    fill_time: Duration,
    fill_bytes_held: usize,
    rss_after_fill: (u64, u64),
    create_median: Duration,
    create_p99: Duration,
    delete_median: Duration,
    kept_create_median: Duration,
    kept_delete_median: Duration,
}

const SNAP_CYCLES: usize = 500;
const SNAP_KEPT: usize = 200;

fn snapshot_latency(data: u64) -> SnapLatency {
    let sim = Simulator::new(&ClusterConfig::default());
    let volume = new_volume(&sim, "bench", data * 2);
    let before = live_bytes();
    let started = Instant::now();
    sim.fill(&volume, "/data/file0", data, 1).expect("fill");
    let fill_time = started.elapsed();
    let fill_bytes_held = live_bytes().saturating_sub(before);
    let rss_after_fill = rss();

    let names: Vec<String> = (0..SNAP_CYCLES + SNAP_KEPT + 20).map(|i| format!("snap_{i}")).collect();
    // Warm-up.
    for name in &names[..20] {
        let uuid = snapshot_create(&sim, &volume, name);
        snapshot_delete(&sim, &volume, &uuid);
    }
    // Create then delete: the volume holds at most one snapshot.
    let mut creates = Vec::with_capacity(SNAP_CYCLES);
    let mut deletes = Vec::with_capacity(SNAP_CYCLES);
    for name in &names[20..20 + SNAP_CYCLES] {
        let t = Instant::now();
        let uuid = snapshot_create(&sim, &volume, name);
        creates.push(t.elapsed());
        let t = Instant::now();
        snapshot_delete(&sim, &volume, &uuid);
        deletes.push(t.elapsed());
    }
    // Creates that keep their snapshots (up to 200 on the volume), then their deletes.
    let mut kept_creates = Vec::with_capacity(SNAP_KEPT);
    let mut uuids = Vec::with_capacity(SNAP_KEPT);
    for name in &names[20 + SNAP_CYCLES..] {
        let t = Instant::now();
        uuids.push(snapshot_create(&sim, &volume, name));
        kept_creates.push(t.elapsed());
    }
    let mut kept_deletes = Vec::with_capacity(SNAP_KEPT);
    for uuid in &uuids {
        let t = Instant::now();
        snapshot_delete(&sim, &volume, uuid);
        kept_deletes.push(t.elapsed());
    }
    SnapLatency {
        fill_time,
        fill_bytes_held,
        rss_after_fill,
        create_median: percentile(&mut creates, 0.5),
        create_p99: percentile(&mut creates, 0.99),
        delete_median: percentile(&mut deletes, 0.5),
        kept_create_median: percentile(&mut kept_creates, 0.5),
        kept_delete_median: percentile(&mut kept_deletes, 0.5),
    }
}

fn bench_snapshot_latency() {
    println!("== 1. Snapshot create latency vs data written (in-process model, Simulator::transact)");
    println!("   volume filled by Simulator::fill, then {SNAP_CYCLES} x (create, delete) timed one by one,");
    println!("   then {SNAP_KEPT} creates kept on the volume and deleted oldest first");
    let mut medians = Vec::new();
    for (label, data) in [("1 GiB", GIB), ("16 GiB", 16 * GIB)] {
        let r = snapshot_latency(data);
        println!(
            "   {label:>6} written: fill {:.2} s, fill holds {} ({:.1} B/block), RSS {} (peak so far {})",
            r.fill_time.as_secs_f64(),
            mib(r.fill_bytes_held as f64),
            r.fill_bytes_held as f64 / (data / BLOCK) as f64,
            mib(r.rss_after_fill.0 as f64),
            mib(r.rss_after_fill.1 as f64),
        );
        println!(
            "   {label:>6} written: create median {:.2} us, p99 {:.2} us; delete median {:.2} us; with up to {SNAP_KEPT} kept: create median {:.2} us, delete median {:.2} us",
            us(r.create_median),
            us(r.create_p99),
            us(r.delete_median),
            us(r.kept_create_median),
            us(r.kept_delete_median),
        );
        medians.push(r.create_median);
    }
    let ratio = medians[1].as_secs_f64() / medians[0].as_secs_f64();
    println!("   RESULT snapshot create median ratio 16 GiB / 1 GiB = {ratio:.2}   goal <= 1.5   {}", verdict(ratio <= 1.5));
    // Reference: the same create with many volumes in the cluster (each transact path-copies
    // the node of the volumes map that holds the volume, cloning its neighbours).
    let mut line = Vec::new();
    for n_volumes in [1usize, 256] {
        let sim = Simulator::new(&ClusterConfig::default());
        let volumes: Vec<String> = (0..n_volumes).map(|i| new_volume(&sim, &format!("v{i}"), GIB)).collect();
        let volume = &volumes[n_volumes / 2];
        sim.fill(volume, "/data", 64 * MIB, 1).expect("fill");
        let mut creates = Vec::with_capacity(SNAP_CYCLES);
        for i in 0..SNAP_CYCLES {
            let name = format!("s{i}");
            let t = Instant::now();
            let uuid = snapshot_create(&sim, volume, &name);
            creates.push(t.elapsed());
            snapshot_delete(&sim, volume, &uuid);
        }
        line.push(format!("{n_volumes} volume(s) in the cluster: {:.2} us", us(percentile(&mut creates, 0.5))));
    }
    println!("   reference, create median with {}", line.join(", with "));
    println!();
}

// ---------------------------------------------------------------------------------------
// 2. Memory held by one snapshot after overwriting 1% of a 1 GiB volume
// ---------------------------------------------------------------------------------------

/// How the 1 GiB base was written.
#[derive(Clone, Copy)]
enum Base {
    /// `Simulator::fill`: 16 distinct 4 KiB buffers shared by all blocks.
    Fill,
    /// `Simulator::write_file` of distinct data in 1 MiB writes: every block its own 4 KiB.
    Distinct,
}

/// Live bytes (after snapshot if any, before overwrite) and the growth from the overwrite.
struct OverwriteMem {
    snapshot_cost: isize,
    growth: isize,
    blocks_overwritten: u64,
}

const OVERWRITE_STRIDE: u64 = 100;

fn overwrite_memory(base: Base, with_snapshot: bool) -> OverwriteMem {
    let sim = Simulator::new(&ClusterConfig::default());
    let volume = new_volume(&sim, "mem", 2 * GIB);
    let n_blocks = GIB / BLOCK;
    match base {
        Base::Fill => sim.fill(&volume, "/data", GIB, 7).expect("fill"),
        Base::Distinct => {
            let mut chunk = vec![0u8; MIB as usize];
            let per_chunk = MIB / BLOCK;
            for c in 0..GIB / MIB {
                for (b, block) in chunk.chunks_mut(BLOCK as usize).enumerate() {
                    distinct_block(1, c * per_chunk + b as u64, block);
                }
                sim.write_file(&volume, "/data", c * MIB, &chunk).expect("base write");
            }
        }
    }
    let mut buf = vec![0u8; BLOCK as usize];
    let before_snapshot = live_bytes();
    if with_snapshot {
        snapshot_create(&sim, &volume, "base");
    }
    let before = live_bytes();
    let mut blocks_overwritten = 0;
    for index in (0..n_blocks).step_by(OVERWRITE_STRIDE as usize) {
        distinct_block(2, index, &mut buf);
        sim.write_file(&volume, "/data", index * BLOCK, &buf).expect("overwrite");
        blocks_overwritten += 1;
    }
    let after = live_bytes();
    drop(sim);
    OverwriteMem { snapshot_cost: before as isize - before_snapshot as isize, growth: after as isize - before as isize, blocks_overwritten }
}

fn bench_snapshot_memory() {
    println!("== 2. Extra memory held by one snapshot after overwriting 1% of a 1 GiB volume");
    println!("   counted: bytes live in the global allocator (requested sizes; no malloc overhead, no RSS);");
    println!("   overwrite = every {OVERWRITE_STRIDE}th 4 KiB block, each a distinct 4 KiB via Simulator::write_file;");
    println!("   extra held by the snapshot = growth with the snapshot - growth of the same overwrite without one");
    println!("   (the latter is the new data itself); % is of the volume's 1 GiB of data");
    for (base, label, primary) in [(Base::Fill, "base from fill (shared buffers)", true), (Base::Distinct, "base of distinct data (write_file)", false)] {
        let without = overwrite_memory(base, false);
        let with = overwrite_memory(base, true);
        let extra = with.growth - without.growth;
        let percent = extra as f64 * 100.0 / GIB as f64;
        let n = with.blocks_overwritten;
        println!(
            "   {label}: {n} blocks ({} of data) overwritten; growth without snapshot {}, with snapshot {}; snapshot create itself {} B",
            mib((n * BLOCK) as f64),
            mib(without.growth as f64),
            mib(with.growth as f64),
            with.snapshot_cost,
        );
        let tag = if primary { "RESULT" } else { "      " };
        println!(
            "   {tag} {label}: extra held by the snapshot {} = {:.0} B per overwritten block = {percent:.2}% of the data   goal <= 2%   {}",
            mib(extra as f64),
            extra as f64 / n as f64,
            verdict(percent <= 2.0),
        );
    }
    println!("   note: with a fill base the old blocks' data are shared buffers, so the snapshot holds only");
    println!("   tree nodes; with a distinct base it also holds the 1% of old data, as a real snapshot must.");
    println!();
}

// ---------------------------------------------------------------------------------------
// 3. Data-plane write throughput
// ---------------------------------------------------------------------------------------

fn bench_write_throughput() {
    println!("== 3. Data-plane write throughput, Simulator::write_file with 16 KiB writes of distinct data");
    const WRITE: u64 = 16 * KIB;
    const TOTAL: u64 = 256 * MIB;
    let sim = Simulator::new(&ClusterConfig::default());
    let volume = new_volume(&sim, "tput", 2 * GIB);
    let mut buf = vec![0u8; WRITE as usize];
    let n_writes = TOTAL / WRITE;
    let stamp = |buf: &mut [u8], tag: u64, i: u64| {
        for (b, block) in buf.chunks_mut(BLOCK as usize).enumerate() {
            distinct_block(tag, i * (WRITE / BLOCK) + b as u64, block);
        }
    };
    let mut elapsed = Duration::ZERO;
    for i in 0..n_writes {
        stamp(&mut buf, 3, i);
        let t = Instant::now();
        sim.write_file(&volume, "/seq", i * WRITE, &buf).expect("write");
        elapsed += t.elapsed();
    }
    let seq_mbs = TOTAL as f64 / 1e6 / elapsed.as_secs_f64();
    println!("   sequential new data, {} in {n_writes} writes: {seq_mbs:.0} MB/s ({:.1} us/write)", mib(TOTAL as f64), us(elapsed) / n_writes as f64);

    // Random aligned overwrites after a snapshot: every first touch of a block copies it.
    snapshot_create(&sim, &volume, "before_overwrite");
    let mut state = 0x1234_5678_u64;
    let mut elapsed = Duration::ZERO;
    for i in 0..n_writes {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let slot = (state >> 33) % n_writes;
        stamp(&mut buf, 4, i);
        let t = Instant::now();
        sim.write_file(&volume, "/seq", slot * WRITE, &buf).expect("overwrite");
        elapsed += t.elapsed();
    }
    let cow_mbs = TOTAL as f64 / 1e6 / elapsed.as_secs_f64();
    println!("   random overwrites after a snapshot (copy-on-write), {n_writes} writes: {cow_mbs:.0} MB/s ({:.1} us/write)", us(elapsed) / n_writes as f64);
    println!("   (no goal set; for reference)");
    println!();
}

// ---------------------------------------------------------------------------------------
// 4. REST throughput
// ---------------------------------------------------------------------------------------

const CLIENTS: usize = 8;
const CYCLES: usize = 250;

struct ClientTimes {
    create: Vec<Duration>,
    lookup: Vec<Duration>,
    delete: Vec<Duration>,
}

async fn client_loop(base: String, volume: String, tag: String) -> ClientTimes {
    let http = reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client");
    let mut times = ClientTimes { create: Vec::with_capacity(CYCLES), lookup: Vec::with_capacity(CYCLES), delete: Vec::with_capacity(CYCLES) };
    let snapshots = format!("{base}/api/storage/volumes/{volume}/snapshots");
    for i in 0..CYCLES {
        let name = format!("{tag}_{i}");
        let t = Instant::now();
        let r = http.post(format!("{snapshots}?return_timeout=10")).basic_auth("admin", Some("admin")).json(&json!({ "name": name })).send().await.expect("create");
        let status = r.status();
        let _ = r.bytes().await.expect("create body");
        times.create.push(t.elapsed());
        assert_eq!(status.as_u16(), 201, "snapshot create answered {status}");

        // ONTAP answers a create with the job, not the snapshot: find its uuid by name.
        let t = Instant::now();
        let r = http.get(format!("{snapshots}?name={name}&fields=uuid")).basic_auth("admin", Some("admin")).send().await.expect("lookup");
        let body: Value = r.json().await.expect("lookup body");
        times.lookup.push(t.elapsed());
        let uuid = body["records"][0]["uuid"].as_str().expect("snapshot uuid").to_string();

        let t = Instant::now();
        let r = http.delete(format!("{snapshots}/{uuid}?return_timeout=10")).basic_auth("admin", Some("admin")).json(&json!({})).send().await.expect("delete");
        let status = r.status();
        let _ = r.bytes().await.expect("delete body");
        times.delete.push(t.elapsed());
        assert_eq!(status.as_u16(), 200, "snapshot delete answered {status}");
    }
    times
}

/// One timed run of all clients: (cycles/s, create, lookup, delete latencies).
struct PhaseStats {
    rate: f64,
    wall: Duration,
    create: Vec<Duration>,
    lookup: Vec<Duration>,
    delete: Vec<Duration>,
}

async fn rest_phase(base: &str, volumes: &[String], tag: &str) -> PhaseStats {
    let started = Instant::now();
    let tasks: Vec<_> = volumes.iter().enumerate().map(|(i, v)| tokio::spawn(client_loop(base.to_string(), v.clone(), format!("{tag}{i}")))).collect();
    let mut stats = PhaseStats { rate: 0.0, wall: Duration::ZERO, create: Vec::new(), lookup: Vec::new(), delete: Vec::new() };
    for task in tasks {
        let t = task.await.expect("client task");
        stats.create.extend(t.create);
        stats.lookup.extend(t.lookup);
        stats.delete.extend(t.delete);
    }
    stats.wall = started.elapsed();
    stats.rate = (CLIENTS * CYCLES) as f64 / stats.wall.as_secs_f64();
    stats
}

/// A fresh simulator with one volume (64 MiB of data) per client, then one timed run;
/// with `full_job_table`, the job table is first filled to JOBS_KEPT_MAX.
async fn rest_run(full_job_table: bool, tag: &str) -> PhaseStats {
    let running = ontap_sim::spawn(SimConfig::default()).await.expect("spawn simulator");
    let base = running.base_url();
    let http = reqwest::Client::new();
    let mut volumes = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("rest_{i}");
        let r = http
            .post(format!("{base}/api/storage/volumes?return_timeout=10"))
            .basic_auth("admin", Some("admin"))
            .json(&json!({"name": name, "svm": {"name": "svm0"}, "aggregates": [{"name": "aggr1"}], "size": 4 * GIB}))
            .send()
            .await
            .expect("volume create");
        assert_eq!(r.status().as_u16(), 201, "volume create answered {}", r.status());
        let uuid = running.sim().volume_uuid("svm0", &name).expect("volume uuid");
        // Some data, so a snapshot has a tree to share.
        running.sim().fill(&uuid, "/data", 64 * MIB, i as u64).expect("fill");
        volumes.push(uuid);
    }
    if full_job_table {
        pad_jobs(running.sim());
    }
    let stats = rest_phase(&base, &volumes, tag).await;
    running.shutdown().await;
    stats
}

const REST_RUNS: usize = 3;

fn report_rest(label: &str, mut runs: Vec<PhaseStats>) {
    let rates: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.rate)).collect();
    runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let mut median = runs.swap_remove(runs.len() / 2);
    let cycles = CLIENTS * CYCLES;
    println!(
        "   {label}: {:.0} cycles/s ({:.0} requests/s), median of {REST_RUNS} runs [{}] (median run: {cycles} cycles in {:.2} s)",
        median.rate,
        median.rate * 3.0,
        rates.join(", "),
        median.wall.as_secs_f64(),
    );
    println!(
        "   {label}: create median {:.0} us, p99 {:.0} us; lookup median {:.0} us; delete median {:.0} us, p99 {:.0} us",
        us(percentile(&mut median.create, 0.5)),
        us(percentile(&mut median.create, 0.99)),
        us(percentile(&mut median.lookup, 0.5)),
        us(percentile(&mut median.delete, 0.5)),
        us(percentile(&mut median.delete, 0.99)),
    );
}

/// Median of `transact(snapshot create + job record)` and of the matching delete, in-process:
/// what one REST write holds the cluster lock for, without HTTP.
fn job_write_medians(sim: &Simulator, volume: &str, tag: &str, cycles: usize) -> (Duration, Duration) {
    let mut creates = Vec::with_capacity(cycles);
    let mut deletes = Vec::with_capacity(cycles);
    for i in 0..cycles {
        let name = format!("{tag}_{i}");
        let now = sim.now();
        let t = Instant::now();
        let uuid = sim
            .transact(|s| {
                let uuid = s.create_snapshot(volume, &name, SnapshotModify::default(), now)?;
                s.record_job(format!("POST /api/storage/volumes/{volume}/snapshots/{name}"), Some(&Ok(())), now);
                Ok(uuid)
            })
            .expect("create");
        creates.push(t.elapsed());
        let t = Instant::now();
        sim.transact(|s| {
            s.delete_snapshot(volume, &uuid)?;
            s.record_job(format!("DELETE /api/storage/volumes/{volume}/snapshots/{uuid}"), Some(&Ok(())), now);
            Ok(())
        })
        .expect("delete");
        deletes.push(t.elapsed());
    }
    (percentile(&mut creates, 0.5), percentile(&mut deletes, 0.5))
}

fn pad_jobs(sim: &Simulator) {
    let now = sim.now();
    let kept = ontap_sim::model::cluster::JOBS_KEPT_MAX;
    sim.transact(|s| {
        while s.jobs.len() < kept {
            s.record_job("padding".into(), Some(&Ok(())), now);
        }
        Ok(())
    })
    .expect("pad jobs");
}

fn bench_job_table() {
    println!("   in-process, what one REST write does under the cluster lock (transact: snapshot op + job record):");
    let sim = Simulator::new(&ClusterConfig::default());
    let volume = new_volume(&sim, "jobs", GIB);
    sim.fill(&volume, "/data", 64 * MIB, 1).expect("fill");
    let (fresh_create, fresh_delete) = job_write_medians(&sim, &volume, "fresh", 500);
    pad_jobs(&sim);
    let (full_create, full_delete) = job_write_medians(&sim, &volume, "full", 500);
    println!(
        "   fresh job table: create {:.1} us, delete {:.1} us (medians); full job table ({} jobs kept): create {:.1} us, delete {:.1} us",
        us(fresh_create),
        us(fresh_delete),
        ontap_sim::model::cluster::JOBS_KEPT_MAX,
        us(full_create),
        us(full_delete),
    );
}

fn bench_rest() {
    println!("== 4. REST snapshot cycles: {CLIENTS} concurrent clients x {CYCLES} cycles, each client on its own volume");
    println!("   one cycle = POST snapshot (return_timeout=10, 201) + GET ?name= for its uuid + DELETE (200);");
    println!("   reqwest keep-alive, plain HTTP on 127.0.0.1; server and clients share this process (2 tokio workers)");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut fresh = Vec::new();
        let mut full = Vec::new();
        for run in 0..REST_RUNS {
            fresh.push(rest_run(false, &format!("a{run}_")).await);
            full.push(rest_run(true, &format!("b{run}_")).await);
        }
        report_rest("fresh job table", fresh);
        // ONTAP keeps a bounded job table; the simulator evicts the oldest finished job once it
        // holds more than JOBS_KEPT_MAX (8 x 250 cycles make 4000 jobs: a fresh table never fills).
        report_rest("full job table ", full);
    });
    bench_job_table();
    println!("   (no goal set; for reference)");
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a test run should not spend half a minute here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ontap-sim benches: run with `cargo bench -p ontap-sim`");
        return;
    }
    let started = Instant::now();
    println!("ontap-sim benchmarks (allocator-counted memory, wall-clock times; single run)");
    println!();
    bench_snapshot_latency();
    bench_snapshot_memory();
    bench_write_throughput();
    bench_rest();
    let (rss_now, hwm) = rss();
    println!("total bench time {:.1} s; RSS now {}, peak {}", started.elapsed().as_secs_f64(), mib(rss_now as f64), mib(hwm as f64));
}
