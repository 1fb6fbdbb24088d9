//! What checking a spec finds: a [`FieldError`] names one field and what is wrong with it, and hosts and origins
//! are checked by the guard's own parsers. Below everything that checks a spec ([`crate::validate`],
//! [`crate::auth`], [`crate::access`]) and the derivation that skips bad entries ([`crate::sources`]), so none of
//! them depends on another for it.

use std::fmt;

/// One problem with one field, e.g. `spec.hosts[2]`: `bad port "99999"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `spec.hosts[2]`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a host pattern with the guard's own parser, so that what the operator accepts is exactly what the
/// guard will load.
pub fn check_host_pattern(s: &str) -> Result<(), String> {
    mcp_guard_config::HostPattern::parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks an origin pattern with the guard's own parser.
pub fn check_origin_pattern(s: &str) -> Result<(), String> {
    mcp_guard_config::OriginPattern::parse(s)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
