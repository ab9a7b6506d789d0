//! ONTAP errors as the simulator's model raises them.
//!
//! The model knows ONTAP error *codes* (they are part of the behaviour being simulated) but
//! not HTTP: `kind` says what sort of failure it is and `api` maps that to a status code.

use std::fmt;

/// What sort of failure an ONTAP error is; the API layer maps this to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: a field is invalid, missing, unknown or read-only; a name is malformed.
    Invalid,
    /// 401: no or wrong credentials.
    Unauthorized,
    /// 404: the object named does not exist.
    NotFound,
    /// 409: an object of that name exists already.
    Duplicate,
    /// 400 in ONTAP (not 409): the request is valid but the object's state refuses it,
    /// e.g. deleting a snapshot a clone depends on.
    Refused,
    /// 413: the request body is larger than the server accepts.
    TooLarge,
    /// 500: something broke inside the simulator (never the client's fault).
    Internal,
    /// 503 and friends, only ever produced by fault injection.
    Unavailable,
}

/// An ONTAP error: code and message as ONTAP 9.19.1 documents them, and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OntapError {
    pub kind: ErrorKind,
    pub code: u64,
    pub message: String,
    pub target: Option<String>,
}

impl OntapError {
    pub fn new(kind: ErrorKind, code: u64, message: impl Into<String>) -> Self {
        OntapError { kind, code, message: message.into(), target: None }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// ONTAP code 2: an invalid value for a field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, 2, message).with_target(field)
    }

    /// ONTAP code 2 for a field the resource does not have or that cannot be set.
    pub fn unknown_field(field: &str) -> Self {
        Self::new(ErrorKind::Invalid, 2, format!("Unexpected argument \"{field}\".")).with_target(field)
    }

    /// ONTAP code 2 for a read-only field given in a POST or PATCH.
    pub fn read_only_field(field: &str) -> Self {
        Self::new(ErrorKind::Invalid, 2, format!("Field \"{field}\" cannot be set in this operation."))
            .with_target(field)
    }

    /// ONTAP code 2 for a required field that is missing.
    pub fn missing_field(field: &str) -> Self {
        Self::new(ErrorKind::Invalid, 2, format!("Missing value for field \"{field}\"."))
            .with_target(field)
    }

    /// ONTAP code 4: the entry does not exist.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, 4, format!("entry doesn't exist: {what}"))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, 1, message)
    }
}

impl fmt::Display for OntapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ONTAP error {}: {}", self.code, self.message)?;
        if let Some(target) = &self.target {
            write!(f, " (target: {target})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OntapError {}

pub type SimResult<T> = Result<T, OntapError>;
