//! Running host tools (apt, dpkg, ldd, cpio, gzip) with their failures turned into [`Error`]s that
//! name the command and carry its stderr.

use std::{
    io::Write as _,
    process::{Command, Output, Stdio},
};

use crate::{Error, Result};

/// `program arg…` as a user would type it, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn spawn_error(cmd: &Command) -> impl FnOnce(std::io::Error) -> Error {
    let cmd = describe(cmd);
    move |source| Error::Spawn { cmd, source }
}

/// Runs `cmd` with captured output, without judging its exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().map_err(spawn_error(cmd))
}

/// Runs `cmd` with captured output; a non-zero exit is an error.
pub fn checked(cmd: &mut Command) -> Result<Output> {
    let out = output(cmd)?;
    succeeded(cmd, out)
}

/// Like [`checked`], with `input` written to the command's stdin.
pub fn checked_with_input(cmd: &mut Command, input: &[u8]) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error(cmd))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(spawn_error(cmd))?;
    }
    let out = child.wait_with_output().map_err(spawn_error(cmd))?;
    succeeded(cmd, out)
}

/// Runs `cmd` with its output going to the harness's own stdout/stderr (long installs show progress).
pub fn inherited(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(spawn_error(cmd))?;
    if !status.success() {
        return Err(Error::Command { cmd: describe(cmd), status, stderr: "see its output above".into() });
    }
    Ok(())
}

fn succeeded(cmd: &Command, out: Output) -> Result<Output> {
    if out.status.success() {
        return Ok(out);
    }
    Err(Error::Command {
        cmd: describe(cmd),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}
