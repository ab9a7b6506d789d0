//! The web dashboard in headless Chromium, driven over the DevTools protocol: load the page,
//! see the resources table, protect the app, click Back up now, see the job finish and the
//! backup listed, restore it to a clone. A screenshot is saved and its path printed.
//!
//! Chromium runs in its own process group, killed (the whole group) when the test ends,
//! also on failure.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::{registry, site, TOKEN};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Bound on waiting for one thing to appear on the page.
const WAIT_MAX: Duration = Duration::from_secs(30);

struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Start headless Chromium and return it with its DevTools websocket URL.
    fn start() -> (Chromium, String) {
        let binary = ["chromium", "chromium-browser"].into_iter().find(|b| Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()));
        let binary = binary.expect("chromium is not installed: run `bash ci/install.sh` (Debian package `chromium`)");
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary);
        command
            .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1400,1000"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let guard = Chromium { child, _profile: profile };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("chromium printed its DevTools URL");
        (guard, url)
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // The browser and its helpers (renderer, GPU, zygote) share the group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal DevTools client: one command at a time, events skipped.
struct Cdp {
    socket: Socket,
    next_id: u64,
    session: Option<String>,
}

impl Cdp {
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        self.socket.send(Message::Text(message.to_string().into())).await.expect("send to chromium");
        let deadline = tokio::time::Instant::now() + WAIT_MAX;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next()).await.unwrap_or_else(|_| panic!("{method}: no answer")).expect("chromium closed the socket").expect("websocket");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {}", reply["error"]);
                return reply["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self.send("Runtime.evaluate", json!({"expression": expression, "returnByValue": true, "awaitPromise": true})).await;
        assert!(result.get("exceptionDetails").is_none(), "{expression}: {}", result["exceptionDetails"]);
        result["result"]["value"].clone()
    }

    /// Wait until `condition` (a JavaScript expression) is true on the page.
    async fn wait_for(&mut self, what: &str, condition: &str, max: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            // While a page loads its elements may not exist yet: an error means "not yet".
            if self.eval(&format!("(() => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }})()")).await == json!(true) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let seen = self.eval("(async () => ['#status', '#conn', '#jobs'].map((s) => { const e = document.querySelector(s); return s + ': ' + (e ? e.innerText + (e.title ? ' (' + e.title + ')' : '') : '(none)'); }).join(' | ') + ' | API jobs: ' + await (await fetch('/api/v1/jobs', { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('stasis-token') } })).text())()").await;
                return Err(format!("timed out waiting for {what} ({condition}); the page shows {seen}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&mut self, selector: &str) {
        let clicked = self.eval(&format!("(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()", json!(selector))).await;
        assert_eq!(clicked, json!(true), "nothing to click at {selector}");
    }

    async fn text(&mut self, selector: &str) -> String {
        self.eval(&format!("(document.querySelector({}) || {{}}).innerText || ''", json!(selector))).await.as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protect_back_up_and_restore_by_clicking() {
    let site = site("").await;
    let (registry, db) = registry(&site).await;
    let txid = db.try_commit(&[(1, 10), (2, 20)]).unwrap();
    let (router, _) = stasis::server::router(registry, TOKEN.into()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(stasis::server::serve(listener, router, None, async {
        let _ = stop_rx.await;
    }));

    let (chromium, ws_url) = Chromium::start();
    let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("DevTools websocket");
    let mut cdp = Cdp { socket, next_id: 0, session: None };
    let target = cdp.send("Target.createTarget", json!({"url": "about:blank"})).await;
    let attached = cdp.send("Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await;
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_string());
    cdp.send("Runtime.enable", json!({})).await;
    cdp.send("Emulation.setDeviceMetricsOverride", json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false})).await;

    // Without a token the page asks for one; with the token in the fragment it connects.
    cdp.send("Page.navigate", json!({"url": format!("http://{addr}/")})).await;
    cdp.wait_for("the token form", "!document.querySelector('#login').hidden", WAIT_MAX).await.unwrap();
    cdp.send("Page.navigate", json!({"url": format!("http://{addr}/#token={TOKEN}")})).await;

    // The resources table.
    cdp.wait_for("the resources table", "document.querySelectorAll('#resources tbody tr[data-app=\"bank\"]').length === 1", WAIT_MAX).await.unwrap();
    let row = cdp.text("#resources tbody tr[data-app=\"bank\"]").await;
    for expect in ["bank-0", "finance", "/bank/data : site-a", "/bank/log : site-a", "bank_data", "bank_log", "Unprotected", "unprotected"] {
        assert!(row.contains(expect), "resources row lacks {expect:?}: {row:?}");
    }
    // A checker that cannot fail proves nothing: waiting for what is not there times out.
    assert!(cdp.wait_for("nothing", "document.querySelector('#no-such-thing') !== null", Duration::from_millis(300)).await.is_err());

    // Protect with the hourly policy.
    cdp.click("#resources tbody tr[data-app=\"bank\"]").await;
    cdp.wait_for("the app panel", "!document.querySelector('#app-panel').hidden && document.querySelector('#policy-select').options.length === 2", WAIT_MAX).await.unwrap();
    cdp.eval("document.querySelector('#policy-select').value = 'hourly'").await;
    cdp.click("#protect-btn").await;
    cdp.wait_for("the policy in the table", "document.querySelector('#resources tr[data-app=\"bank\"] .policy').textContent === 'hourly'", WAIT_MAX).await.unwrap();

    // Back up now: the job runs to success, and the backup is listed.
    cdp.click("#backup-btn").await;
    cdp.wait_for("the backup job to succeed", "document.querySelectorAll('#jobs tr.job-succeeded').length === 1", WAIT_MAX).await.unwrap();
    cdp.wait_for("the backup in the list", "document.querySelectorAll('#backups tbody tr[data-backup]').length === 1", WAIT_MAX).await.unwrap();
    let backup_row = cdp.text("#backups tbody tr[data-backup]").await;
    assert!(backup_row.contains(&format!("txid={txid}")) && backup_row.contains(" ms") && backup_row.contains("application"), "{backup_row:?}");
    let job_row = cdp.text("#jobs tr.job-succeeded").await;
    assert!(job_row.contains("backup") && job_row.contains(&format!("txid={txid}")), "{job_row:?}");
    cdp.wait_for("the protection status", "document.querySelector('#resources tr[data-app=\"bank\"] .status').textContent === 'protected'", WAIT_MAX).await.unwrap();

    // Damage, then restore the backup to a clone from its row.
    db.try_commit(&[(1, 99)]).unwrap();
    cdp.click("#backups tbody tr[data-backup] .restore-btn").await;
    cdp.wait_for("the restore dialog", "document.querySelector('#restore-dialog').open", WAIT_MAX).await.unwrap();
    cdp.eval("document.querySelector('#clone-name').value = 'bank_copy'").await;
    cdp.click("#restore-go").await;
    cdp.wait_for("the restore job to succeed", "document.querySelectorAll('#jobs tr.job-succeeded').length === 2", WAIT_MAX).await.unwrap();
    let restore_row = cdp.text("#jobs tbody tr:first-child").await;
    assert!(restore_row.contains("restore to clone") && restore_row.contains("bank_copy_bank_data") && restore_row.contains(&format!("recovered txid={txid}")), "{restore_row:?}");
    assert_eq!(db.values().unwrap()[1], 99, "a clone restore must not touch the app");
    let dr = cdp.text("#dr tbody").await;
    assert!(dr.contains("not configured"), "{dr:?}");

    let shot = cdp.send("Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("dashboard screenshot: {}", path.display());

    drop(cdp);
    drop(chromium);
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("the server stops").unwrap().unwrap();
}
