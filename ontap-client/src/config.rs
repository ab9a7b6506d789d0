//! How to reach one ONTAP cluster, and the bounds on every retry and poll loop.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Which server certificates the client accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// The built-in web PKI roots, with host name verification: a real array whose
    /// certificate is signed by a public CA.
    #[default]
    BuiltInRoots,
    /// Trust only the CA certificates in this PEM file (the built-in roots are dropped: the
    /// operator said who signs the array's certificate), with host name verification.
    CaFile(PathBuf),
    /// Trust exactly the certificate(s) in this PEM file, byte for byte, and nothing else.
    /// Host name, validity dates and CA flags are not checked: the pin is the identity.
    /// This is how to talk to ONTAP's (or the simulator's) self-signed certificate,
    /// which usually names the cluster rather than the address used to reach it.
    PinnedCertificate(PathBuf),
    /// Accept any certificate. Only for throwaway labs; logged as a warning on every build.
    InsecureAcceptAny,
}

/// Everything `OntapClient::new` needs. Build it with [`OntapConfig::new`] and override the
/// defaults field by field.
///
/// `Debug` is safe to log: the password is a `SecretString` and prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct OntapConfig {
    /// `https://host[:port]` for an array, `http://127.0.0.1:port` for a local simulator.
    /// No path, query or credentials.
    pub base_url: String,
    pub username: String,
    pub password: SecretString,
    pub tls: TlsTrust,
    /// Per-request bound for calls that carry no deadline of their own.
    pub request_timeout: Duration,
    /// Bound on opening a TCP (and TLS) connection; a failure here never reached the array.
    pub connect_timeout: Duration,
    /// How long an idle keep-alive connection stays in the pool. Generous on purpose: the
    /// snapshot inside a freeze must reuse the connection `warm_up` opened, not pay for a
    /// new TCP and TLS handshake.
    pub pool_idle_timeout: Duration,
    /// Retries after the first attempt, for calls that are safe to repeat
    /// (GETs; writes that never left; lookups around creates).
    pub retry_attempts_max: u32,
    /// First pause between retries; doubled each time up to `retry_backoff_max`.
    pub retry_backoff_base: Duration,
    pub retry_backoff_max: Duration,
    /// First pause between polls of an ONTAP job; doubled up to `job_poll_interval_max`.
    pub job_poll_interval: Duration,
    pub job_poll_interval_max: Duration,
    /// How long to await one ONTAP job before calling its outcome indeterminate.
    pub job_wait_max: Duration,
}

pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
pub const POOL_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(900);
pub const RETRY_ATTEMPTS_MAX_DEFAULT: u32 = 3;
pub const RETRY_BACKOFF_BASE_DEFAULT: Duration = Duration::from_millis(200);
pub const RETRY_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
pub const JOB_POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(250);
pub const JOB_POLL_INTERVAL_MAX_DEFAULT: Duration = Duration::from_secs(5);
pub const JOB_WAIT_MAX_DEFAULT: Duration = Duration::from_secs(600);

impl OntapConfig {
    /// A config with TLS verification against the built-in roots and the default bounds.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        password: SecretString,
    ) -> Self {
        OntapConfig {
            base_url: base_url.into(),
            username: username.into(),
            password,
            tls: TlsTrust::BuiltInRoots,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            pool_idle_timeout: POOL_IDLE_TIMEOUT_DEFAULT,
            retry_attempts_max: RETRY_ATTEMPTS_MAX_DEFAULT,
            retry_backoff_base: RETRY_BACKOFF_BASE_DEFAULT,
            retry_backoff_max: RETRY_BACKOFF_MAX_DEFAULT,
            job_poll_interval: JOB_POLL_INTERVAL_DEFAULT,
            job_poll_interval_max: JOB_POLL_INTERVAL_MAX_DEFAULT,
            job_wait_max: JOB_WAIT_MAX_DEFAULT,
        }
    }
}

/// Why a configuration cannot make a client. Nothing here ever holds the password.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("base URL {url:?} is not usable: {reason}")]
    BaseUrl { url: String, reason: String },
    #[error("the username is empty")]
    EmptyUsername,
    #[error("{name} must be greater than zero")]
    ZeroDuration { name: &'static str },
    #[error("{lower} ({lower_value:?}) must not exceed {upper} ({upper_value:?})")]
    BoundsInverted {
        lower: &'static str,
        lower_value: Duration,
        upper: &'static str,
        upper_value: Duration,
    },
    #[error("cannot read the {what} file {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {} holds no usable PEM certificate: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS configuration: {source}")]
    Tls {
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the HTTP client: {source}")]
    Http {
        #[source]
        source: reqwest::Error,
    },
}

impl OntapConfig {
    /// Checks what can be checked without touching the network.
    pub(crate) fn validate(&self) -> Result<url::Url, ConfigError> {
        let base = parse_base_url(&self.base_url)?;
        if self.username.is_empty() {
            return Err(ConfigError::EmptyUsername);
        }
        for (name, value) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("pool_idle_timeout", self.pool_idle_timeout),
            ("retry_backoff_base", self.retry_backoff_base),
            ("retry_backoff_max", self.retry_backoff_max),
            ("job_poll_interval", self.job_poll_interval),
            ("job_poll_interval_max", self.job_poll_interval_max),
            ("job_wait_max", self.job_wait_max),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { name });
            }
        }
        for (lower, lower_value, upper, upper_value) in [
            (
                "retry_backoff_base",
                self.retry_backoff_base,
                "retry_backoff_max",
                self.retry_backoff_max,
            ),
            (
                "job_poll_interval",
                self.job_poll_interval,
                "job_poll_interval_max",
                self.job_poll_interval_max,
            ),
        ] {
            if lower_value > upper_value {
                return Err(ConfigError::BoundsInverted {
                    lower,
                    lower_value,
                    upper,
                    upper_value,
                });
            }
        }
        Ok(base)
    }
}

fn parse_base_url(raw: &str) -> Result<url::Url, ConfigError> {
    let fail = |reason: &str| ConfigError::BaseUrl {
        url: raw.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(raw).map_err(|e| fail(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Never echo the URL back: it holds a credential that would end up in logs.
        return Err(ConfigError::BaseUrl {
            url: "<redacted>".to_string(),
            reason: "credentials belong in username/password, not in the URL".to_string(),
        });
    }
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(fail(
            "the scheme must be https (or http for a local simulator)",
        ));
    }
    if url.host().is_none() {
        return Err(fail("no host"));
    }
    // ONTAP's `_links` are absolute paths (`/api/...`): a base with a path prefix would be
    // lost when following them, so refuse it rather than half-support it.
    if url.path() != "/" && !url.path().is_empty() {
        return Err(fail(
            "must be scheme://host[:port] with no path (the client adds /api)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("no query or fragment"));
    }
    Ok(url)
}
