//! `stance launch`. (stub: being written)
use std::ffi::OsString;
#[derive(Debug, thiserror::Error)]
pub enum LaunchError { #[error("not implemented")] NotImplemented }
pub fn run(_name: &str, _cmd: &[OsString]) -> Result<u8, LaunchError> { Err(LaunchError::NotImplemented) }
