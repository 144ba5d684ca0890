//! The one place where eddy's errors become Postgres errors with a SQLSTATE.

use pgwire::error::{ErrorInfo, PgWireError};

use crate::error::Error;

/// The SQLSTATE for an error.
pub fn sqlstate(e: &Error) -> &'static str {
    match e {
        Error::Parse { .. } => "42601",
        Error::UndefinedRelation { .. } => "42P01",
        Error::UndefinedColumn { .. } => "42703",
        Error::DuplicateRelation(_) => "42P07",
        Error::Invalid { code, .. } => code,
        Error::NotSupported(_) => "0A000",
        Error::Data { code, .. } => code,
        Error::Constraint { code, .. } => code,
        Error::DependentObjects(_) => "2BP01",
        Error::Transaction { code, .. } => code,
        Error::Cancelled => "57014",
        Error::Execution(_) => "XX000",
        // ENOSPC: PostgreSQL's disk_full.
        Error::Storage(m) if m.contains("os error 28") => "53100",
        Error::Storage(_) => "58030",
        Error::Kafka(_) => "58000",
        Error::Internal(_) => "XX000",
    }
}

pub fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), sqlstate(e).to_string(), e.to_string());
    let position = match e {
        Error::Parse { position, .. }
        | Error::UndefinedRelation { position, .. }
        | Error::UndefinedColumn { position, .. } => *position,
        _ => None,
    };
    info.position = position.map(|p| p.to_string());
    info
}

pub fn to_pgwire(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_class_has_its_sqlstate() {
        assert_eq!(sqlstate(&Error::parse("x")), "42601");
        assert_eq!(
            sqlstate(&Error::UndefinedRelation {
                name: "t".into(),
                position: None
            }),
            "42P01"
        );
        assert_eq!(sqlstate(&Error::not_supported("x")), "0A000");
        assert_eq!(sqlstate(&Error::data("22012", "division by zero")), "22012");
        assert_eq!(sqlstate(&Error::internal("x")), "XX000");
        let info = error_info(&Error::Parse {
            message: "syntax error".into(),
            position: Some(8),
        });
        assert_eq!(info.position.as_deref(), Some("8"));
    }
}
