//! The control socket's messages: one JSON request on one line, one JSON response on one line, then
//! the daemon closes the connection.
//!
//! ```text
//! → {"op":"mode","workload":"web","mode":"audit","domains":["network"]}
//! ← {"mode":{"workload":"web","modes":{"process":"observe","file":"observe","network":"audit","capabilities":"observe"},"revision":3}}
//! ← {"error":{"kind":"unknown-workload","message":"unknown workload 'web' (see `stance workloads`)"}}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ControlError;
use crate::enforce::{Domain, EnforceError, Mode, Modes};

/// Longest request or response line accepted, in bytes: far more than any request needs, and a bound
/// on what a confused peer can make the other side buffer.
pub const MAX_LINE_BYTES: u64 = 64 * 1024;

/// What the CLI asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Put domains of a workload into a mode. Audit and enforce (re)load the workload's policy,
    /// compiled from its behaviour graph as it is now.
    Mode {
        workload: String,
        mode: Mode,
        /// The domains to change; empty means all four.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        domains: Vec<Domain>,
    },
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Response {
    Mode(ModeReply),
    Error(ErrorReply),
}

/// The workload's modes after a `mode` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModeReply {
    pub workload: String,
    pub modes: Modes,
    /// The revision of the policy now loaded; None when every domain is observe (nothing loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
}

impl fmt::Display for ModeReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.workload, modes_text(self.modes))?;
        match self.revision {
            Some(rev) => write!(f, " (policy revision {rev})"),
            None => f.write_str(" (no policy loaded)"),
        }
    }
}

/// `process=enforce file=audit network=observe capabilities=observe`
pub fn modes_text(modes: Modes) -> String {
    Domain::ALL.iter().map(|d| format!("{d}={}", modes.get(*d))).collect::<Vec<_>>().join(" ")
}

/// A failed request: a kind a program can match on, and one line for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Not JSON, not a known request, or too long.
    BadRequest,
    /// The peer is not root.
    Forbidden,
    UnknownWorkload,
    /// No enforcement for a requested domain on this kernel; nothing changed.
    Unavailable,
    /// The enforcer refused the policy (too large) or failed to update; the previous policy stays.
    Rejected,
    /// The daemon failed otherwise (database); nothing changed.
    Internal,
}

impl From<&ControlError> for ErrorReply {
    fn from(e: &ControlError) -> Self {
        let kind = match e {
            ControlError::UnknownWorkload { .. } => ErrorKind::UnknownWorkload,
            ControlError::Unavailable { .. } | ControlError::Enforce(EnforceError::Unavailable(_)) => {
                ErrorKind::Unavailable
            }
            ControlError::Enforce(_) => ErrorKind::Rejected,
            ControlError::NotRecorded { .. }
            | ControlError::Store(_)
            | ControlError::PolicyId { .. }
            | ControlError::Stopping => ErrorKind::Internal,
        };
        ErrorReply { kind, message: super::one_line(e) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_domains_default_to_all() {
        let req = Request::Mode { workload: "web".into(), mode: Mode::Audit, domains: vec![Domain::Network] };
        let line = serde_json::to_string(&req).unwrap();
        assert_eq!(line, r#"{"op":"mode","workload":"web","mode":"audit","domains":["network"]}"#);
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let all: Request = serde_json::from_str(r#"{"op":"mode","workload":"w","mode":"enforce"}"#).unwrap();
        assert_eq!(all, Request::Mode { workload: "w".into(), mode: Mode::Enforce, domains: vec![] });
        assert!(serde_json::from_str::<Request>(r#"{"op":"mode","workload":"w","mode":"block"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn responses_round_trip() {
        let mut modes = Modes::default();
        modes.set(Domain::Network, Mode::Audit);
        let ok = Response::Mode(ModeReply { workload: "web".into(), modes, revision: Some(3) });
        let line = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            line,
            r#"{"mode":{"workload":"web","modes":{"process":"observe","file":"observe","network":"audit","capabilities":"observe"},"revision":3}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), ok);
        let err = Response::Error(ErrorReply::from(&ControlError::UnknownWorkload { name: "x".into() }));
        let line = serde_json::to_string(&err).unwrap();
        assert_eq!(
            line,
            r#"{"error":{"kind":"unknown-workload","message":"unknown workload 'x' (see `stance workloads`)"}}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&line).unwrap(), err);
    }

    #[test]
    fn replies_read_as_one_line() {
        let reply = ModeReply { workload: "web".into(), modes: Modes::all(Mode::Enforce), revision: Some(7) };
        assert_eq!(
            reply.to_string(),
            "web: process=enforce file=enforce network=enforce capabilities=enforce (policy revision 7)"
        );
        let released = ModeReply { workload: "web".into(), modes: Modes::default(), revision: None };
        assert!(released.to_string().ends_with("capabilities=observe (no policy loaded)"));
    }
}
