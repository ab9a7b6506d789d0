//! Real MariaDB for tests, benchmarks and the demo: `mariadb-install-db` + `mariadbd` on a
//! free 127.0.0.1 port with a given data directory (no systemd, no `my.cnf`), and an
//! in-process simulator whose volumes are FUSE-mounted (what `ontap-sim serve --mount-root`
//! does), so that the data directory can live on a simulated ONTAP volume.
//!
//! Every process and mount is owned by a value whose `Drop` stops it: [`MariaDb`] kills
//! the server and waits for it, [`SimWithMounts`] unmounts every volume (lazily if busy).
//! Drop servers before the mounts they run on (declare them after the [`SimWithMounts`]).
//!
//! # Server options that matter on the FUSE mount
//! - `innodb_flush_method = fsync`: InnoDB's default (`O_DIRECT`) works on the mount (the
//!   data plane answers `O_DIRECT` opens with `FOPEN_DIRECT_IO`), but then every 16 KiB page
//!   write is one synchronous FUSE round trip with no kernel merging; buffered writes plus
//!   `fsync` are what the benchmark found fastest and they are equally safe here: the
//!   simulator's tree is what a snapshot sees, and a write reaches it before `write(2)`
//!   returns (no FUSE writeback cache).
//! - `innodb_use_native_aio = 0`: Linux AIO on a FUSE file degrades to synchronous
//!   submission anyway; plain threads are simpler and portable (containers often forbid
//!   io_uring).
//! - `myisam_recover_options = OFF`, `aria_recover_options = OFF`: the default would repair
//!   a table silently when it is first opened; the checks want to *see* a table that was
//!   not closed properly (`CHECK TABLE` reports it).
//! - Binary log on, `server_id = 1`: the GTID position (`@@gtid_binlog_pos`) is the
//!   consistency point the plugin records.
//! - Small buffer pool and redo log: tests start many servers on two cores.

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use stasis_core::plugins::mysql::quote_string;

/// How long a server may take to accept connections after it was started (crash recovery
/// of a restored data directory included).
pub const START_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long a clean shutdown may take before the server is killed.
pub const SHUTDOWN_WAIT_MAX: Duration = Duration::from_secs(30);
/// Attempts to start on a fresh free port when the one picked was taken meanwhile.
const PORT_ATTEMPTS_MAX: u32 = 3;

/// The user the launcher creates for the plugin (all privileges; see the README for the
/// minimal set a production account needs).
pub const APP_USER: &str = "stasis";

fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    dirs.into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found: install MariaDB with `bash ci/install.sh` (Debian package mariadb-server)"))
}

/// Is `mariadbd` (and `mariadb-install-db`) installed? An error says how to get them.
pub fn check_prerequisites() -> anyhow::Result<()> {
    find_binary("mariadbd")?;
    find_binary("mariadb-install-db")?;
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released: a start retries if it was taken).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").context("finding a free port")?.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0")))
        .unwrap_or(false)
}

fn current_user() -> String {
    if running_as_root() {
        "root".into()
    } else {
        std::env::var("USER").unwrap_or_else(|_| "mysql".into())
    }
}

/// How a server is started.
#[derive(Clone, Debug)]
pub struct MariaDbOptions {
    /// Write every statement to `general.log` in the run directory (the SQL-sequence test).
    pub general_log: bool,
    /// Extra `--name=value` options, appended last (they win).
    pub extra_args: Vec<String>,
    /// InnoDB buffer pool size in MiB.
    pub buffer_pool_mib: u32,
}

impl Default for MariaDbOptions {
    fn default() -> Self {
        MariaDbOptions { general_log: false, extra_args: Vec::new(), buffer_pool_mib: 64 }
    }
}

/// The argument vector that starts `mariadbd` on `data_dir`, with its socket, pid file and
/// logs in `run_dir`. Also what the MySQL plugin's `instance_command` uses for a second
/// server on a restored copy (with `{datadir}`, `{port}` and `{run_dir}` placeholders).
pub fn server_args(mariadbd: &Path, data_dir: &str, port: &str, run_dir: &str, opts: &MariaDbOptions) -> Vec<String> {
    let mut args = vec![
        mariadbd.to_string_lossy().into_owned(),
        "--no-defaults".into(),
        format!("--user={}", current_user()),
        format!("--datadir={data_dir}"),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".into(),
        format!("--socket={run_dir}/mysqld.sock"),
        format!("--pid-file={run_dir}/mysqld.pid"),
        format!("--log-error={run_dir}/error.log"),
        format!("--tmpdir={run_dir}"),
        "--log-bin=mysql-bin".into(),
        "--server-id=1".into(),
        "--binlog-format=ROW".into(),
        "--innodb-flush-method=fsync".into(),
        "--innodb-use-native-aio=0".into(),
        format!("--innodb-buffer-pool-size={}M", opts.buffer_pool_mib),
        "--innodb-log-file-size=32M".into(),
        "--myisam-recover-options=OFF".into(),
        "--aria-recover-options=OFF".into(),
        "--skip-slave-start".into(),
        "--max-connections=200".into(),
    ];
    if opts.general_log {
        args.push("--general-log=1".into());
        args.push(format!("--general-log-file={run_dir}/general.log"));
    }
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// Create a fresh data directory (`mariadb-install-db`), `root@localhost` without a
/// password (the launcher sets up [`APP_USER`] on first start).
pub fn install(data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    // Its own temporary directory: bootstraps running side by side in the shared /tmp lost
    // each other's temporary tables ("Error on delete of '/tmp/#sql-temptable-...'").
    let tmp = tempfile::Builder::new().prefix("mariadb-install-").tempdir().context("creating the install's temporary directory")?;
    let output = Command::new(find_binary("mariadb-install-db")?)
        .arg("--no-defaults")
        .arg(format!("--user={}", current_user()))
        .arg(format!("--datadir={}", data_dir.display()))
        // --verbose: on failure the bootstrap server's own messages are in the output.
        .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve", "--verbose"])
        .arg(format!("--tmpdir={}", tmp.path().display()))
        // mariadb-install-db runs mariadbd --bootstrap; the same FUSE-friendly flags apply.
        .args(["--innodb-flush-method=fsync", "--innodb-use-native-aio=0", "--innodb-log-file-size=32M", "--innodb-buffer-pool-size=32M"])
        .stdin(Stdio::null())
        .output()
        .context("running mariadb-install-db")?;
    if !output.status.success() {
        bail!("mariadb-install-db failed ({}): {}{}", output.status, String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// A running `mariadbd`. Dropping it kills the server and waits for it.
pub struct MariaDb {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    run_dir: tempfile::TempDir,
    error_log_offset: u64,
    opts: MariaDbOptions,
}

impl MariaDb {
    /// Install a data directory in `data_dir` (must be empty or absent), start a server on
    /// it and create [`APP_USER`] with `password`.
    pub async fn install_and_start(data_dir: &Path, password: &str, opts: MariaDbOptions) -> anyhow::Result<MariaDb> {
        install(data_dir)?;
        // The general log stays off until the users exist: it would record the password.
        let mut server = Self::start(data_dir, MariaDbOptions { general_log: false, ..opts.clone() }).await?;
        server.opts = opts.clone();
        let mut conn = server.root_conn().await?;
        // The password is a literal in CREATE USER (no placeholders there): quote it.
        conn.query_drop(format!("CREATE USER '{APP_USER}'@'%' IDENTIFIED BY {}", quote_string(password))).await?;
        conn.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'%'")).await?;
        conn.query_drop(format!("CREATE USER '{APP_USER}'@'localhost' IDENTIFIED BY {}", quote_string(password))).await?;
        conn.query_drop(format!("GRANT ALL PRIVILEGES ON *.* TO '{APP_USER}'@'localhost'")).await?;
        if opts.general_log {
            let file = quote_string(&server.general_log_path().to_string_lossy());
            conn.query_drop(format!("SET GLOBAL general_log_file = {file}")).await?;
            conn.query_drop("SET GLOBAL general_log = 1").await?;
        }
        conn.disconnect().await?;
        Ok(server)
    }

    /// Start a server on an existing data directory (a fresh install, a restored volume or a
    /// clone) and wait until it accepts connections.
    pub async fn start(data_dir: &Path, opts: MariaDbOptions) -> anyhow::Result<MariaDb> {
        check_prerequisites()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS_MAX {
            let port = free_port()?;
            let run_dir = tempfile::Builder::new().prefix("mariadb-run-").tempdir().context("creating the run directory")?;
            let args = server_args(&find_binary("mariadbd")?, &data_dir.to_string_lossy(), &port.to_string(), &run_dir.path().to_string_lossy(), &opts);
            let child = Command::new(&args[0]).args(&args[1..]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("starting mariadbd")?;
            let mut server = MariaDb { child: Some(child), port, data_dir: data_dir.to_path_buf(), run_dir, error_log_offset: 0, opts: opts.clone() };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let port_taken = server.error_log().contains("Address already in use");
                    drop(server);
                    if !port_taken {
                        return Err(e);
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("mariadbd did not start")))
    }

    /// A server that is not started yet: its port and run directory are chosen now, so its
    /// [`MariaDb::start_command`] can be handed to a plugin that starts it later (a standby
    /// at a second site). Dropping this kills a server started that way (its pid file).
    pub fn planned(data_dir: &Path, opts: MariaDbOptions) -> anyhow::Result<MariaDb> {
        check_prerequisites()?;
        let port = free_port()?;
        let run_dir = tempfile::Builder::new().prefix("mariadb-run-").tempdir().context("creating the run directory")?;
        Ok(MariaDb { child: None, port, data_dir: data_dir.to_path_buf(), run_dir, error_log_offset: 0, opts })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("mariadbd exited ({status}) before accepting connections; error log:\n{}", self.error_log_tail());
            }
            if let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(2), mysql_async::Conn::new(self.root_opts())).await {
                // `free_port` is a guess: a server of a parallel test may have taken the port
                // first (ours then exits, "Address already in use"). Only ours counts.
                let socket: Option<String> = conn.query_first("SELECT @@socket").await.ok().flatten();
                let _ = conn.disconnect().await;
                if socket.is_some_and(|s| Path::new(&s) == self.run_dir.path().join("mysqld.sock")) {
                    return Ok(());
                }
            }
            if started.elapsed() > START_WAIT_MAX {
                bail!("mariadbd did not accept connections within {START_WAIT_MAX:?}; error log:\n{}", self.error_log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
    pub fn options(&self) -> &MariaDbOptions {
        &self.opts
    }
    pub fn general_log_path(&self) -> PathBuf {
        self.run_dir.path().join("general.log")
    }
    pub fn error_log_path(&self) -> PathBuf {
        self.run_dir.path().join("error.log")
    }

    /// The whole error log of this run.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// The error log written since the last call (or since the start).
    pub fn error_log_since_last(&mut self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.error_log_path()) {
            let _ = f.seek(SeekFrom::Start(self.error_log_offset));
            let _ = f.read_to_string(&mut text);
            self.error_log_offset += text.len() as u64;
        }
        text
    }

    fn error_log_tail(&self) -> String {
        let log = self.error_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn root_opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(self.port).user(Some("root")).prefer_socket(false).into()
    }

    /// A connection as `root` (no password; the launcher's servers listen on loopback only).
    pub async fn root_conn(&self) -> anyhow::Result<mysql_async::Conn> {
        mysql_async::Conn::new(self.root_opts()).await.with_context(|| format!("connecting to mariadbd on port {}", self.port))
    }

    /// A connection as [`APP_USER`] with `password`, to `database` if given.
    pub async fn app_conn(&self, password: &str, database: Option<&str>) -> anyhow::Result<mysql_async::Conn> {
        let opts = mysql_async::OptsBuilder::default().ip_or_hostname("127.0.0.1").tcp_port(self.port).user(Some(APP_USER)).pass(Some(password)).db_name(database).prefer_socket(false);
        mysql_async::Conn::new(opts).await.with_context(|| format!("connecting to mariadbd on port {} as {APP_USER}", self.port))
    }

    /// Clean shutdown (`SHUTDOWN`), waiting for the process; killed if it takes too long.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Ok(mut conn) = self.root_conn().await {
            let _ = conn.query_drop("SHUTDOWN").await;
        }
        let started = Instant::now();
        while let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if started.elapsed() > SHUTDOWN_WAIT_MAX {
                self.kill();
                bail!("mariadbd did not shut down within {SHUTDOWN_WAIT_MAX:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// SIGKILL and wait: a crash, as far as the data directory can tell. Also kills a
    /// server that [`MariaDb::start_command`] started in this run directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_by_pid_file(&self.run_dir.path().join("mysqld.pid"));
    }

    /// Stops this server cleanly from outside (the plugin's `stop_command`).
    pub fn stop_command(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            find_binary("mariadb-admin")?.to_string_lossy().into_owned(),
            "--no-defaults".into(),
            "--protocol=TCP".into(),
            "--host=127.0.0.1".into(),
            format!("--port={}", self.port),
            "--user=root".into(),
            "shutdown".into(),
        ])
    }

    /// Starts this server again, same data directory, port and run directory (the
    /// plugin's `start_command`; runs in the foreground). Dropping `self` kills it too.
    pub fn start_command(&self) -> anyhow::Result<Vec<String>> {
        Ok(server_args(&find_binary("mariadbd")?, &self.data_dir.to_string_lossy(), &self.port.to_string(), &self.run_dir.path().to_string_lossy(), &self.opts))
    }
}

/// The plugin's `instance_command` for a private server on a restored copy, with the same
/// FUSE-friendly options (placeholders `{datadir}`, `{port}`, `{run_dir}`).
pub fn instance_command(opts: &MariaDbOptions) -> anyhow::Result<Vec<String>> {
    Ok(server_args(&find_binary("mariadbd")?, "{datadir}", "{port}", "{run_dir}", opts))
}

/// SIGKILL the `mariadbd` whose pid is in `pid_file`, if it still runs, and wait until it is gone.
fn kill_by_pid_file(pid_file: &Path) {
    let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<u32>().ok()) else { return };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let is_mariadbd = std::fs::read(proc_dir.join("cmdline")).map(|c| String::from_utf8_lossy(&c).contains("mariadbd")).unwrap_or(false);
    if !is_mariadbd {
        return;
    }
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    let started = Instant::now();
    // Not our child (the plugin started it): wait for it to disappear or turn zombie.
    while started.elapsed() < Duration::from_secs(10) {
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if state.is_empty() || state.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An in-process simulator serving ONTAP REST on loopback, with every volume that has a
/// junction path FUSE-mounted under a temporary root (as `ontap-sim serve --mount-root`
/// does, new volumes and clones included). Dropping it unmounts everything.
pub struct SimWithMounts {
    // Field order is drop order: unmount before the simulator stops, remove the root last.
    mounts: ontap_sim::fuse::MountManager,
    sim: ontap_sim::RunningSim,
    root: tempfile::TempDir,
}

/// How often the mount manager looks for new, moved or deleted junction paths.
pub const MOUNT_RECONCILE_INTERVAL: Duration = Duration::from_millis(50);
/// The simulator's SVM that [`SimWithMounts::create_volume`] uses.
pub const SVM: &str = "svm0";

impl SimWithMounts {
    /// Start a simulator (seeded; `password` is the admin password) and its mount manager.
    pub async fn start(seed: u64, password: &str) -> anyhow::Result<SimWithMounts> {
        Self::start_cluster(ontap_sim::ClusterConfig { seed, ..Default::default() }, password).await
    }

    /// The same for a named cluster (a second site has its own name and SVMs).
    pub async fn start_cluster(cluster: ontap_sim::ClusterConfig, password: &str) -> anyhow::Result<SimWithMounts> {
        ontap_sim::fuse::check_prerequisites()?;
        let config = ontap_sim::SimConfig { cluster, password: password.to_string(), ..Default::default() };
        let sim = ontap_sim::spawn(config).await?;
        let root = tempfile::Builder::new().prefix("stasis-mounts-").tempdir().context("creating the mount root")?;
        let opts = ontap_sim::fuse::MountOptions::default();
        let mounts = ontap_sim::fuse::MountManager::new(sim.sim().clone(), root.path(), opts)?;
        mounts.start(MOUNT_RECONCILE_INTERVAL);
        Ok(SimWithMounts { mounts, sim, root })
    }

    pub fn sim(&self) -> &ontap_sim::RunningSim {
        &self.sim
    }
    /// To take the simulator offline and back ([`ontap_sim::RunningSim::go_offline`]); the
    /// mounts keep serving its state meanwhile.
    pub fn sim_mut(&mut self) -> &mut ontap_sim::RunningSim {
        &mut self.sim
    }
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }
    /// The directory under which junction paths are mounted (the plugin's `mount_root`).
    pub fn mount_root(&self) -> PathBuf {
        self.mounts.root().to_path_buf()
    }
    pub fn mounts(&self) -> &ontap_sim::fuse::MountManager {
        &self.mounts
    }

    /// Create a volume in [`SVM`] with junction path `/<name>`, mount it, and return its
    /// uuid and mount point.
    pub async fn create_volume(&self, name: &str, size_bytes: u64) -> anyhow::Result<(String, PathBuf)> {
        use ontap_sim::model::cluster::{Selector, VolumeCreate};
        let req = VolumeCreate {
            name: name.to_string(),
            svm: Selector { name: Some(SVM.into()), uuid: None },
            aggregates: vec![Selector { name: Some("aggr1".into()), uuid: None }],
            size: Some(size_bytes),
            junction_path: Some(format!("/{name}")),
            ..Default::default()
        };
        let uuid = self.sim.sim().transact(|s| s.create_volume(req, chrono::Utc::now())).map_err(|e| anyhow::anyhow!("creating volume {name}: {e}"))?;
        let mounts = &self.mounts;
        let errors = mounts.reconcile();
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let mount_point = self.mounts.mount_point(&format!("/{name}"));
        wait_until_mounted(&mount_point)?;
        Ok((uuid, mount_point))
    }
}

/// Longest wait for a volume's mount to take effect.
const MOUNT_WAIT_MAX: Duration = Duration::from_secs(10);

/// Wait until `dir` is a mount point (another device than its parent): a directory made
/// before the mount takes effect would land beneath it and vanish from view.
pub fn wait_until_mounted(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().with_context(|| format!("{} has no parent", dir.display()))?;
    let deadline = Instant::now() + MOUNT_WAIT_MAX;
    loop {
        let (own, up) = (std::fs::metadata(dir).map(|m| m.dev()), std::fs::metadata(parent).map(|m| m.dev()));
        if matches!((own, up), (Ok(a), Ok(b)) if a != b) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{} is not a mount point after {MOUNT_WAIT_MAX:?}", dir.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}


impl Drop for SimWithMounts {
    fn drop(&mut self) {
        self.mounts.shutdown();
        // Anything still mounted under the root (a mount made by someone else): lazily.
        let root = self.root.path().to_string_lossy().to_string();
        for m in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&root) {
                let _ = Command::new("fusermount3").args(["-u", "-z", "-q", "--", m]).status();
            }
        }
    }
}

/// Everything a MariaDB backup needs, wired as production wires it: a simulator on loopback
/// HTTP with the data volume FUSE-mounted, a real `mariadbd` whose data directory is on
/// that volume, the MySQL plugin, and an orchestrator reaching the simulator through the
/// ONTAP REST client. Field order is drop order: the server stops before the unmount.
pub struct MariaDbRig {
    pub server: MariaDb,
    pub plugin: std::sync::Arc<stasis_core::plugins::mysql::MysqlPlugin>,
    pub orchestrator: stasis_core::workflow::Orchestrator,
    pub app: stasis_core::domain::AppSpec,
    pub volume_uuid: String,
    pub app_password: String,
    pub sim: SimWithMounts,
}

/// Name of the rig's volume (junction path `/mdb_data`); the data directory is its `data/`.
pub const VOLUME: &str = "mdb_data";
pub const DATA_SUBDIR: &str = "data";
/// The ONTAP admin password of the rig's simulator (a canary: it must appear in no log).
pub const SIM_PASSWORD: &str = "sim-canary-7f3e91";

/// How a rig is set up.
#[derive(Clone, Debug)]
pub struct RigOptions {
    pub seed: u64,
    pub server: MariaDbOptions,
    pub freeze_timeout: Duration,
    pub lock_wait_timeout: Duration,
    /// The ONTAP client's per-request timeout.
    pub client_timeout: Duration,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            seed: 1,
            server: MariaDbOptions::default(),
            freeze_timeout: Duration::from_secs(5),
            lock_wait_timeout: Duration::from_secs(2),
            client_timeout: Duration::from_secs(5),
        }
    }
}

impl MariaDbRig {
    pub async fn start(opts: RigOptions) -> anyhow::Result<MariaDbRig> {
        use stasis_core::plugins::mysql::{MysqlConfig, MysqlPlugin, ServerControl};
        check_prerequisites()?;
        let sim = SimWithMounts::start(opts.seed, SIM_PASSWORD).await?;
        let (volume_uuid, mount_point) = sim.create_volume(VOLUME, 2 << 30).await?;
        let app_password = format!("app-canary-{:016x}", rand::random::<u64>());
        let server = MariaDb::install_and_start(&mount_point.join(DATA_SUBDIR), &app_password, opts.server.clone()).await?;
        let config = MysqlConfig {
            host: "127.0.0.1".into(),
            port: server.port(),
            user: APP_USER.into(),
            password: ontap_client::SecretString::from(app_password.clone()),
            freeze_timeout: opts.freeze_timeout,
            lock_wait_timeout: opts.lock_wait_timeout,
            server_control: Some(ServerControl {
                stop_command: server.stop_command()?,
                start_command: server.start_command()?,
                mount_root: sim.mount_root(),
                data_subdir: DATA_SUBDIR.into(),
                instance_command: instance_command(&MariaDbOptions { general_log: false, ..opts.server.clone() })?,
                start_wait: START_WAIT_MAX,
            }),
        };
        let plugin = std::sync::Arc::new(MysqlPlugin::new(config).map_err(|e| anyhow::anyhow!("{e}"))?);
        let orchestrator = Self::orchestrator(&sim, opts.client_timeout, opts.seed)?;
        let app = stasis_core::domain::AppSpec {
            name: "mariadb".into(),
            kind: stasis_core::domain::AppKind::Mysql,
            svm: SVM.into(),
            volumes: vec![VOLUME.into()],
            freeze_timeout: opts.freeze_timeout,
        };
        Ok(MariaDbRig { server, plugin, orchestrator, app, volume_uuid, app_password, sim })
    }

    /// A fresh orchestrator "process" (new ONTAP client and in-memory catalog).
    pub fn orchestrator(sim: &SimWithMounts, client_timeout: Duration, seed: u64) -> anyhow::Result<stasis_core::workflow::Orchestrator> {
        use std::sync::Arc;
        let client = ontap_client::OntapClient::new(crate::torture::world::client_config(&sim.base_url(), SIM_PASSWORD, client_timeout))?;
        let catalog = Arc::new(stasis_core::sqlite_catalog::SqliteCatalog::open_in_memory()?);
        Ok(stasis_core::workflow::Orchestrator::new(Arc::new(client), catalog, Arc::new(stasis_core::clock::SystemClock))
            .with_ids(Arc::new(stasis_core::workflow::SeededIds::new(seed))))
    }

    /// A connection as the app user to `database`.
    pub async fn conn(&self, database: Option<&str>) -> anyhow::Result<mysql_async::Conn> {
        self.server.app_conn(&self.app_password, database).await
    }

    pub fn plugin_dyn(&self) -> std::sync::Arc<dyn stasis_core::plugin::AppPlugin> {
        self.plugin.clone()
    }
}
