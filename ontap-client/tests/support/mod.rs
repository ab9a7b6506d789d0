//! Test helpers: a client config with fast bounds, and a scripted HTTP server for what
//! wiremock cannot do (drop a connection after reading the request).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ontap_client::{OntapConfig, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const PASSWORD: &str = "Sup3r-s3cret-pa55word";

/// Fast bounds so that retries and polls do not slow the suite down.
pub fn config(base_url: &str) -> OntapConfig {
    let mut config = OntapConfig::new(base_url, "admin", SecretString::from(PASSWORD));
    config.request_timeout = Duration::from_secs(5);
    config.retry_attempts_max = 3;
    config.retry_backoff_base = Duration::from_millis(1);
    config.retry_backoff_max = Duration::from_millis(5);
    config.job_poll_interval = Duration::from_millis(5);
    config.job_poll_interval_max = Duration::from_millis(20);
    config.job_wait_max = Duration::from_secs(3);
    config
}

/// What the scripted server does with the next request.
pub enum Step {
    /// Read the whole request, then close the connection without answering: the client
    /// cannot know whether it was acted on.
    Drop,
    /// Answer with this status and JSON body.
    Reply(u16, String),
}

/// Method, path prefix, and what to do: the scripted server's program, in order.
pub type Script = Arc<Mutex<VecDeque<(&'static str, &'static str, Step)>>>;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub body: String,
}

/// Answers requests strictly in script order; a request that does not match the next step
/// (method and path prefix) gets a 500 and is logged, so the test sees it.
pub struct ScriptedServer {
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

impl ScriptedServer {
    pub async fn start(script: Vec<(&'static str, &'static str, Step)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (seen2, script2) = (seen.clone(), script.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script) = (seen2.clone(), script2.clone());
                tokio::spawn(async move { serve(stream, seen, script).await });
            }
        });
        ScriptedServer {
            base_url,
            seen,
            script,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.target.starts_with(path_prefix))
            .count()
    }

    pub fn steps_left(&self) -> usize {
        self.script.lock().unwrap().len()
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Seen>>>, script: Script) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.lines();
    let mut request_line = lines.next().unwrap_or("").split_whitespace();
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let content_length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + content_length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body =
        String::from_utf8_lossy(&buffer[header_end..header_end + content_length]).to_string();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        body,
    });

    let step = {
        let mut script = script.lock().unwrap();
        match script.front() {
            Some((m, prefix, _)) if *m == method && target.starts_with(prefix) => {
                script.pop_front().map(|(_, _, s)| s)
            }
            _ => None,
        }
    };
    let (status, body) = match step {
        Some(Step::Drop) => {
            let _ = stream.shutdown().await;
            return;
        }
        Some(Step::Reply(status, body)) => (status, body),
        None => (
            500,
            format!(
                r#"{{"error":{{"message":"unscripted request {method} {target}","code":"1"}}}}"#
            ),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
