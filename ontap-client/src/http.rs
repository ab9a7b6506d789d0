//! One HTTP exchange with ONTAP, and what its outcome means.
//!
//! Every failure is classified by what it proves about the array's state:
//! - `Retryable`: the request certainly did not take effect (never sent, or 408/429);
//! - `Indeterminate`: a write may have taken effect (timeout or reset after sending, 5xx);
//! - `Refused` / `NotFound`: ONTAP answered with an error, a definite "no";
//! - `Auth`: 401/403 or a TLS trust failure.
//!
//! Reads are idempotent, so for them every transient failure is retried within
//! `retry_attempts_max` and reported as `Retryable` when the retries run out.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stasis_core::storage::{StorageError, StorageResult};
use url::Url;

use crate::wire::{self, Collection, ErrorResponse, Job, JobLinkResponse, JobState};

/// Collections longer than this many pages are refused: a `_links.next` chain that long
/// means a server that keeps answering "more", not a real SVM.
pub(crate) const COLLECTION_PAGES_MAX: usize = 10_000;

/// Is the request a read (idempotent: retry freely) or a write (may have landed)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    Read,
    Write,
}

/// Retry and poll bounds, copied from the config.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub request_timeout: Duration,
    pub retry_attempts_max: u32,
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    pub job_poll_interval: Duration,
    pub job_poll_interval_max: Duration,
    pub job_wait_max: Duration,
}

impl Bounds {
    /// The pause before retry number `retry` (0-based): base * 2^retry, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX);
        self.retry_backoff_base
            .saturating_mul(factor)
            .min(self.retry_backoff_max)
    }
}

/// What a successful write answered.
#[derive(Debug)]
pub(crate) enum Written {
    /// 200/201: done (with `return_timeout`, the job finished in time).
    Done,
    /// 202: an ONTAP job is still running.
    Accepted { job_uuid: String },
}

/// How a single exchange failed before any HTTP status was seen.
#[derive(Debug)]
enum SendFailure {
    /// The connection could not be made: the request never left.
    NotSent(String),
    /// The request may have reached the array (timeout, reset, truncated answer).
    MaybeSent(String),
    /// TLS trust failed.
    Tls(String),
    /// The request could not even be built: a bug on this side.
    Local(String),
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    /// The `Location` header, which ONTAP sets on creates.
    location: Option<String>,
}

/// A write's outcome with what the answer carried: creates that answer 201 without a job
/// (SnapMirror transfers) name their object in `Location` or in `records`.
#[derive(Debug)]
pub(crate) struct WriteAnswer {
    pub written: Written,
    pub location: Option<String>,
    pub body: serde_json::Value,
}

pub(crate) struct Transport {
    http: reqwest::Client,
    base: Url,
    username: String,
    password: SecretString,
    pub bounds: Bounds,
}

impl Transport {
    pub fn new(
        http: reqwest::Client,
        base: Url,
        username: String,
        password: SecretString,
        bounds: Bounds,
    ) -> Self {
        Transport {
            http,
            base,
            username,
            password,
            bounds,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `/api/<segments...>?<query>`, each segment percent-encoded (a uuid from a caller can
    /// never smuggle in a `/` or `?`).
    pub fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("validated: http(s) base URL");
            path.clear().push("api");
            for segment in segments {
                path.push(segment);
            }
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    /// Resolves a `_links.*.href` (an absolute `/api/...` path, followed verbatim).
    /// A link to another origin is refused: it would carry our credentials elsewhere.
    fn resolve_href(&self, href: &str) -> StorageResult<Url> {
        let url = self
            .base
            .join(href)
            .map_err(|e| refused_locally(format!("unusable link {href:?}: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(refused_locally(format!(
                "refusing to follow a link to another origin: {href:?}"
            )));
        }
        Ok(url)
    }

    /// One exchange, no retry. The body is read in full within `timeout`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, SendFailure> {
        let mut request = self
            .http
            .request(method, url)
            .basic_auth(&self.username, Some(self.password.expose_secret()))
            // HAL: with plain application/json ONTAP drops `_links` other than `next`.
            .header(reqwest::header::ACCEPT, "application/hal+json")
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(classify_send_error)?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.bytes().await.map_err(|e| {
            // The status line arrived, so the request was received; only the body was lost.
            SendFailure::MaybeSent(format!("reading the answer failed: {e}"))
        })?;
        Ok(Reply {
            status,
            body: body.to_vec(),
            location,
        })
    }

    /// GET `url` and parse it, retrying transient failures. With a `deadline`, every attempt
    /// and pause ends by it; at the deadline the answer is `Retryable` (nothing was changed).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        url: Url,
        deadline: Option<Instant>,
    ) -> StorageResult<T> {
        let mut retry = 0u32;
        loop {
            let timeout =
                self.attempt_timeout(deadline)
                    .ok_or_else(|| StorageError::Retryable {
                        message: format!("GET {}: deadline reached", url.path()),
                    })?;
            let error = match self.send(Method::GET, url.clone(), None, timeout).await {
                Ok(reply) if reply.status.is_success() => {
                    match serde_json::from_slice::<T>(&reply.body) {
                        Ok(value) => return Ok(value),
                        Err(e) => StorageError::Retryable {
                            message: format!(
                                "GET {}: unexpected answer ({e}): {}",
                                url.path(),
                                excerpt(&reply.body)
                            ),
                        },
                    }
                }
                Ok(reply) => {
                    status_error(&Method::GET, &url, reply.status, &reply.body, Call::Read)
                }
                Err(failure) => failure_error(&Method::GET, &url, failure, Call::Read),
            };
            if !error.is_retryable() || retry >= self.bounds.retry_attempts_max {
                return Err(error);
            }
            tracing::debug!(url = %url.path(), retry, error = %error, "retrying GET");
            if !self.pause(self.bounds.backoff(retry), deadline).await {
                return Err(error);
            }
            retry += 1;
        }
    }

    /// Every record of a collection, following `_links.next.href` verbatim.
    pub async fn get_collection<T: DeserializeOwned>(
        &self,
        first: Url,
        deadline: Option<Instant>,
    ) -> StorageResult<Vec<T>> {
        let mut url = first;
        let mut records = Vec::new();
        for _page in 0..COLLECTION_PAGES_MAX {
            let page: Collection<T> = self.get_json(url.clone(), deadline).await?;
            let next = page.next_href().map(str::to_string);
            records.extend(page.records);
            match next {
                None => return Ok(records),
                Some(href) => {
                    let next_url = self.resolve_href(&href)?;
                    if next_url == url {
                        return Err(refused_locally(format!(
                            "collection {} links to itself as next",
                            url.path()
                        )));
                    }
                    url = next_url;
                }
            }
        }
        Err(refused_locally(format!(
            "collection exceeded {COLLECTION_PAGES_MAX} pages"
        )))
    }

    /// How many records a collection holds, without fetching them (`return_records=false`).
    /// A server that sends the records anyway is counted page by page.
    pub async fn count_collection(&self, first: Url) -> StorageResult<u64> {
        let mut url = first;
        let mut count = 0u64;
        for _page in 0..COLLECTION_PAGES_MAX {
            let page: Collection<serde_json::Value> = self.get_json(url.clone(), None).await?;
            count += if page.records.is_empty() {
                page.num_records.unwrap_or(0)
            } else {
                page.records.len() as u64
            };
            match page.next_href() {
                None => return Ok(count),
                Some(href) => url = self.resolve_href(href)?,
            }
        }
        Err(refused_locally(format!(
            "collection exceeded {COLLECTION_PAGES_MAX} pages"
        )))
    }

    /// One write attempt, no retry, no job polling.
    pub async fn write_once<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: &B,
        timeout: Duration,
    ) -> StorageResult<Written> {
        self.write_once_answer(method, url, body, timeout)
            .await
            .map(|a| a.written)
    }

    /// As [`Transport::write_once`], keeping the answer's `Location` and body.
    pub async fn write_once_answer<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: &B,
        timeout: Duration,
    ) -> StorageResult<WriteAnswer> {
        let body = serde_json::to_value(body)
            .map_err(|e| refused_locally(format!("cannot encode the request: {e}")))?;
        let reply = match self
            .send(method.clone(), url.clone(), Some(&body), timeout)
            .await
        {
            Ok(reply) => reply,
            Err(failure) => return Err(failure_error(&method, &url, failure, Call::Write)),
        };
        let answer = |written: Written| WriteAnswer {
            written,
            location: reply.location.clone(),
            body: serde_json::from_slice(&reply.body).unwrap_or(serde_json::Value::Null),
        };
        match reply.status {
            StatusCode::ACCEPTED => {
                let job = serde_json::from_slice::<JobLinkResponse>(&reply.body)
                    .ok()
                    .and_then(|r| r.job)
                    .and_then(|j| j.job_uuid());
                match job {
                    Some(job_uuid) => Ok(answer(Written::Accepted { job_uuid })),
                    None => Err(StorageError::Indeterminate {
                        message: format!(
                            "{method} {}: accepted (202) without a job link: {}",
                            url.path(),
                            excerpt(&reply.body)
                        ),
                    }),
                }
            }
            status if status.is_success() => Ok(answer(Written::Done)),
            status => Err(status_error(
                &method,
                &url,
                status,
                &reply.body,
                Call::Write,
            )),
        }
    }

    /// A write that is not safe to repeat once it may have reached the array: retried only
    /// while it certainly did not (connection refused, 408, 429), then its job is awaited.
    pub async fn write_and_wait<B: Serialize>(
        &self,
        method: Method,
        url: Url,
        body: &B,
    ) -> StorageResult<()> {
        let mut retry = 0u32;
        loop {
            match self
                .write_once(
                    method.clone(),
                    url.clone(),
                    body,
                    self.bounds.request_timeout,
                )
                .await
            {
                Ok(Written::Done) => return Ok(()),
                Ok(Written::Accepted { job_uuid }) => return self.await_job(&job_uuid).await,
                Err(e) if e.is_retryable() && retry < self.bounds.retry_attempts_max => {
                    tracing::debug!(url = %url.path(), retry, error = %e, "write never reached the array; retrying");
                    tokio::time::sleep(self.bounds.backoff(retry)).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls `/api/cluster/jobs/{uuid}` with backoff until it succeeds or fails, at most
    /// `job_wait_max`. A failed job is its ONTAP error; losing sight of the job (poll
    /// errors, still running at the bound) leaves the write's outcome `Indeterminate`.
    pub async fn await_job(&self, job_uuid: &str) -> StorageResult<()> {
        let started = Instant::now();
        let wait_until = started + self.bounds.job_wait_max;
        let url = self.url(
            &["cluster", "jobs", job_uuid],
            &[("fields", wire::JOB_FIELDS)],
        );
        let mut interval = self.bounds.job_poll_interval;
        let mut n_polls = 0u32;
        loop {
            n_polls += 1;
            let job: Job = self
                .get_json(url.clone(), Some(wait_until))
                .await
                .map_err(|e| StorageError::Indeterminate {
                    message: format!(
                        "lost sight of ONTAP job {job_uuid} after {n_polls} polls: {e}"
                    ),
                })?;
            match job.state {
                JobState::Success => {
                    tracing::debug!(
                        job = job_uuid,
                        n_polls,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "job succeeded"
                    );
                    return Ok(());
                }
                JobState::Failure => return Err(job_failure(job_uuid, &job)),
                JobState::Queued | JobState::Running | JobState::Paused => {}
            }
            let now = Instant::now();
            if now + interval > wait_until {
                return Err(StorageError::Indeterminate {
                    message: format!(
                        "ONTAP job {job_uuid} still {:?} after {:?} (job_wait_max)",
                        job.state, self.bounds.job_wait_max
                    ),
                });
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(self.bounds.job_poll_interval_max);
        }
    }

    /// The timeout for the next read: the request timeout, cut short by the deadline
    /// (None when nothing is left).
    pub fn attempt_timeout(&self, deadline: Option<Instant>) -> Option<Duration> {
        self.time_left(deadline)
            .map(|left| left.min(self.bounds.request_timeout))
    }

    /// All the time left before the deadline (None when nothing is left), or the request
    /// timeout without one. A create inside a freeze may use all of it: `return_timeout`
    /// asks ONTAP to answer within the same window.
    pub fn time_left(&self, deadline: Option<Instant>) -> Option<Duration> {
        match deadline {
            None => Some(self.bounds.request_timeout),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left)
            }
        }
    }

    /// Sleeps `pause`, unless that would cross the deadline. Returns whether time is left.
    pub async fn pause(&self, pause: Duration, deadline: Option<Instant>) -> bool {
        match deadline {
            None => {
                tokio::time::sleep(pause).await;
                true
            }
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(pause.min(left)).await;
                Instant::now() < deadline
            }
        }
    }
}

fn classify_send_error(error: reqwest::Error) -> SendFailure {
    let text = error_chain(&error);
    if crate::tls::is_tls_failure(&error) {
        SendFailure::Tls(text)
    } else if error.is_builder() {
        SendFailure::Local(text)
    } else if error.is_connect() {
        // Includes connect timeouts and DNS failures: no byte of the request was sent.
        SendFailure::NotSent(text)
    } else {
        // Timeouts after connecting, resets, "connection closed before message completed":
        // the request may have been read and acted on.
        SendFailure::MaybeSent(text)
    }
}

/// "a: b: c" from an error and its sources, so the root cause reaches the logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

fn failure_error(method: &Method, url: &Url, failure: SendFailure, call: Call) -> StorageError {
    let path = url.path();
    match failure {
        SendFailure::NotSent(m) => StorageError::Retryable {
            message: format!("{method} {path}: not sent: {m}"),
        },
        SendFailure::MaybeSent(m) => match call {
            Call::Read => StorageError::Retryable {
                message: format!("{method} {path}: {m}"),
            },
            Call::Write => StorageError::Indeterminate {
                message: format!("{method} {path}: may have reached the array: {m}"),
            },
        },
        SendFailure::Tls(m) => StorageError::Auth {
            message: format!("TLS: {m}"),
        },
        SendFailure::Local(m) => refused_locally(format!("{method} {path}: {m}")),
    }
}

/// Maps a non-2xx answer. ONTAP's `{"error": {...}}` supplies the code, message and target.
fn status_error(
    method: &Method,
    url: &Url,
    status: StatusCode,
    body: &[u8],
    call: Call,
) -> StorageError {
    let ontap = serde_json::from_slice::<ErrorResponse>(body)
        .ok()
        .map(|r| r.error);
    let code = ontap
        .as_ref()
        .and_then(|e| wire::parse_code(e.code.as_ref()));
    let message = ontap
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| format!("HTTP {status}: {}", excerpt(body)));
    let target = ontap.as_ref().and_then(|e| e.target.clone());
    let path = url.path();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => StorageError::Auth {
            message: format!("{method} {path}: HTTP {status}: {message}"),
        },
        StatusCode::NOT_FOUND => StorageError::NotFound {
            what: format!("{method} {path}: {message}"),
        },
        // The server says it did not process the request.
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => StorageError::Retryable {
            message: format!("{method} {path}: HTTP {status}: {message}"),
        },
        s if s.is_client_error() => ontap_error(
            code.unwrap_or(0),
            format!("{method} {path}: {message}"),
            target,
        ),
        s => match call {
            // A read changed nothing: worth another try.
            Call::Read => StorageError::Retryable {
                message: format!("{method} {path}: HTTP {s}: {message}"),
            },
            // A 5xx (or a stray 1xx/3xx) after the array read the request proves nothing
            // about whether the write was applied.
            Call::Write => StorageError::Indeterminate {
                message: format!(
                    "{method} {path}: HTTP {s}{}: {message}",
                    code.map(|c| format!(" (ONTAP code {c})"))
                        .unwrap_or_default()
                ),
            },
        },
    }
}

/// ONTAP code 4 is "entry doesn't exist"; every other code is a refusal.
pub(crate) fn ontap_error(code: u64, message: String, target: Option<String>) -> StorageError {
    if code == 4 {
        StorageError::NotFound { what: message }
    } else {
        StorageError::Refused {
            code,
            message,
            target,
        }
    }
}

fn job_failure(job_uuid: &str, job: &Job) -> StorageError {
    let code = wire::parse_code(job.code.as_ref())
        .filter(|c| *c != 0)
        .or_else(|| {
            job.error
                .as_ref()
                .and_then(|e| wire::parse_code(e.code.as_ref()))
        })
        .unwrap_or(0);
    let message = job
        .message
        .clone()
        .or_else(|| job.error.as_ref().and_then(|e| e.message.clone()))
        .unwrap_or_else(|| "job failed without a message".to_string());
    let target = job.error.as_ref().and_then(|e| e.target.clone());
    ontap_error(code, format!("job {job_uuid}: {message}"), target)
}

/// A refusal that came from this client, not from ONTAP: code 0, which ONTAP never uses
/// for an error.
pub(crate) fn refused_locally(message: String) -> StorageError {
    StorageError::Refused {
        code: 0,
        message,
        target: None,
    }
}

/// The start of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        Url::parse("https://array/api/storage/volumes").unwrap()
    }

    fn body(code: &str) -> Vec<u8> {
        format!(r#"{{"error":{{"message":"m","code":"{code}","target":"t"}}}}"#).into_bytes()
    }

    #[test]
    fn statuses_classify_by_what_they_prove() {
        let m = Method::POST;
        assert!(matches!(
            status_error(&m, &url(), StatusCode::UNAUTHORIZED, b"", Call::Read),
            StorageError::Auth { .. }
        ));
        assert!(matches!(
            status_error(&m, &url(), StatusCode::FORBIDDEN, b"", Call::Write),
            StorageError::Auth { .. }
        ));
        assert!(matches!(
            status_error(&m, &url(), StatusCode::NOT_FOUND, &body("4"), Call::Write),
            StorageError::NotFound { .. }
        ));
        assert!(matches!(
            status_error(&m, &url(), StatusCode::BAD_REQUEST, &body("4"), Call::Write),
            StorageError::NotFound { .. }
        ));
        match status_error(
            &m,
            &url(),
            StatusCode::CONFLICT,
            &body("525059"),
            Call::Write,
        ) {
            StorageError::Refused { code, target, .. } => {
                assert_eq!(code, 525059);
                assert_eq!(target.as_deref(), Some("t"));
            }
            other => panic!("expected Refused, got {other:?}"),
        }
        assert!(status_error(
            &m,
            &url(),
            StatusCode::INTERNAL_SERVER_ERROR,
            b"",
            Call::Read
        )
        .is_retryable());
        assert!(status_error(
            &m,
            &url(),
            StatusCode::INTERNAL_SERVER_ERROR,
            b"",
            Call::Write
        )
        .is_indeterminate());
        assert!(status_error(
            &m,
            &url(),
            StatusCode::SERVICE_UNAVAILABLE,
            b"",
            Call::Write
        )
        .is_indeterminate());
        assert!(
            status_error(&m, &url(), StatusCode::TOO_MANY_REQUESTS, b"", Call::Write)
                .is_retryable()
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let bounds = Bounds {
            request_timeout: Duration::from_secs(1),
            retry_attempts_max: 3,
            retry_backoff_base: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(350),
            job_poll_interval: Duration::from_millis(1),
            job_poll_interval_max: Duration::from_millis(1),
            job_wait_max: Duration::from_secs(1),
        };
        let pauses: Vec<u128> = (0..4).map(|r| bounds.backoff(r).as_millis()).collect();
        assert_eq!(pauses, vec![100, 200, 350, 350]);
        assert_eq!(bounds.backoff(1000), Duration::from_millis(350));
    }
}
