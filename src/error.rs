//! eddy's one error type, split by who is at fault.
//!
//! Every layer returns [`Error`]; the pgwire layer (`server::error`) is the only place
//! that maps a variant to a SQLSTATE. Expected outcomes (a malformed Kafka record under a
//! skip policy, a late event) are values, not errors.

use std::fmt;

/// Result alias used throughout eddy.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, grouped by who is at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The SQL text does not parse. `position` is a 1-based character offset into the
    /// statement text, as Postgres reports it.
    Parse {
        message: String,
        position: Option<usize>,
    },
    /// A relation named in the statement does not exist (42P01).
    UndefinedRelation {
        name: String,
        position: Option<usize>,
    },
    /// A column named in the statement does not exist (42703).
    UndefinedColumn {
        message: String,
        position: Option<usize>,
    },
    /// An object with that name already exists (42P07).
    DuplicateRelation(String),
    /// The statement is well formed but invalid: wrong object kind, bad option,
    /// type mismatch, ... `code` is the SQLSTATE that describes it best.
    Invalid { code: &'static str, message: String },
    /// eddy understands the statement but does not support it (0A000).
    NotSupported(String),
    /// A value is invalid for its type: bad literal, overflow, division by zero (22xxx).
    Data { code: &'static str, message: String },
    /// An integrity constraint would be violated (23xxx); nothing was changed.
    Constraint { code: &'static str, message: String },
    /// An object cannot be dropped because others depend on it (2BP01).
    DependentObjects(String),
    /// A statement is not allowed in the session's current transaction state (25xxx).
    Transaction { code: &'static str, message: String },
    /// The query was cancelled by the client (57014).
    Cancelled,
    /// Execution failed for a reason that is not the user's input.
    Execution(String),
    /// The storage engine failed (disk full, corruption, I/O).
    Storage(String),
    /// Kafka failed (broker unreachable, topic missing, ...).
    Kafka(String),
    /// A bug in eddy: an invariant did not hold.
    Internal(String),
}

impl Error {
    pub fn parse(message: impl Into<String>) -> Self {
        Error::Parse {
            message: message.into(),
            position: None,
        }
    }

    /// An invalid statement with the generic "syntax error or access rule violation"
    /// class; prefer a specific code with [`Error::invalid_with`] where one fits.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            code: "42000",
            message: message.into(),
        }
    }

    pub fn invalid_with(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    /// "wrong object type": e.g. UPDATE on a stream, INSERT into a view.
    pub fn wrong_object_type(message: impl Into<String>) -> Self {
        Error::Invalid {
            code: "42809",
            message: message.into(),
        }
    }

    pub fn not_supported(message: impl Into<String>) -> Self {
        Error::NotSupported(message.into())
    }

    pub fn data(code: &'static str, message: impl Into<String>) -> Self {
        Error::Data {
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    pub fn storage(message: impl fmt::Display) -> Self {
        Error::Storage(message.to_string())
    }

    pub fn execution(message: impl Into<String>) -> Self {
        Error::Execution(message.into())
    }

    /// Attach a statement position to errors that carry one, if they have none yet.
    pub fn with_position(mut self, pos: Option<usize>) -> Self {
        match &mut self {
            Error::Parse { position, .. }
            | Error::UndefinedRelation { position, .. }
            | Error::UndefinedColumn { position, .. }
                if position.is_none() =>
            {
                *position = pos;
            }
            _ => {}
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Parse { message, .. } => write!(f, "{message}"),
            Error::UndefinedRelation { name, .. } => {
                write!(f, "relation \"{name}\" does not exist")
            }
            Error::UndefinedColumn { message, .. } => write!(f, "{message}"),
            Error::DuplicateRelation(name) => write!(f, "relation \"{name}\" already exists"),
            Error::Invalid { message, .. } => write!(f, "{message}"),
            Error::NotSupported(message) => write!(f, "not supported: {message}"),
            Error::Data { message, .. } => write!(f, "{message}"),
            Error::Constraint { message, .. } => write!(f, "{message}"),
            Error::DependentObjects(message) => write!(f, "{message}"),
            Error::Transaction { message, .. } => write!(f, "{message}"),
            Error::Cancelled => write!(f, "canceling statement due to user request"),
            Error::Execution(message) => write!(f, "{message}"),
            Error::Storage(message) => write!(f, "storage error: {message}"),
            Error::Kafka(message) => write!(f, "kafka error: {message}"),
            Error::Internal(message) => {
                write!(f, "internal error (this is a bug in eddy): {message}")
            }
        }
    }
}

impl std::error::Error for Error {}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        crate::plan::errors::from_arrow(e)
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::plan::errors::from_datafusion(e)
    }
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for Error {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        crate::sql::parse_error(e)
    }
}
