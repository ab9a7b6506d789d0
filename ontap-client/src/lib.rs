//! The ONTAP REST client: Stasis's `Storage` seam over HTTP(S).
//!
//! This crate is the only place in the orchestrator that knows ONTAP's wire format; what
//! leaves it is `stasis_core::storage` types and errors. The same client drives a real
//! array and `ontap-sim`.
//!
//! What it promises (see `http` for the error classification):
//! - reads retry within `retry_attempts_max`;
//! - writes are never blindly repeated once they may have reached the array: creates look
//!   their object up by name and adopt it, deletes treat "already gone" as done, other
//!   writes report `Indeterminate`;
//! - ONTAP jobs are polled with backoff, bounded by `job_wait_max`;
//! - a snapshot inside a freeze is one POST with `return_timeout`, bounded by its deadline.
//!
//! The password lives in a `SecretString` and is never formatted, logged or put in a URL.

mod client;
mod config;
mod http;
mod snapmirror;
mod tls;
mod wire;

pub use client::OntapClient;
pub use config::{
    ConfigError, OntapConfig, TlsTrust, CONNECT_TIMEOUT_DEFAULT, JOB_POLL_INTERVAL_DEFAULT,
    JOB_POLL_INTERVAL_MAX_DEFAULT, JOB_WAIT_MAX_DEFAULT, POOL_IDLE_TIMEOUT_DEFAULT,
    REQUEST_TIMEOUT_DEFAULT, RETRY_ATTEMPTS_MAX_DEFAULT, RETRY_BACKOFF_BASE_DEFAULT,
    RETRY_BACKOFF_MAX_DEFAULT,
};
pub use secrecy::SecretString;

/// An HTTP client builder that trusts servers as `trust` says (the same rules as
/// [`OntapClient`]), for callers that reach the same endpoint outside ONTAP's API (the
/// simulator's `/sim/v1` data plane).
pub fn http_client_builder(trust: &TlsTrust) -> Result<reqwest::ClientBuilder, ConfigError> {
    tls::apply(reqwest::Client::builder(), trust)
}
