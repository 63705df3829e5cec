//! The CLI's side of the control socket: connect, send one request, read one response. Blocking: a
//! command makes one call and has nothing else to do meanwhile.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use super::protocol::{Request, Response, MAX_LINE_BYTES};

/// How long the CLI waits for the daemon's answer. Loading a large policy writes many map entries,
/// but a daemon that has not answered in this time is stuck, and saying so beats hanging.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon is not running (no control socket at {}): start it with `stance run`", path.display())]
    NotRunning { path: PathBuf },
    #[error(
        "the daemon is not running (nothing listens on the control socket {}): start it with `stance run`",
        path.display()
    )]
    NotListening { path: PathBuf },
    #[error("cannot connect to the daemon's control socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the daemon through {} failed", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the daemon did not answer within {} seconds", REPLY_TIMEOUT.as_secs())]
    Timeout,
    #[error("the daemon's answer is not understood: {message}")]
    Protocol { message: String },
}

/// Sends `request` to the daemon listening on `socket` and returns its response.
pub fn call(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ClientError::NotRunning { path: socket.to_owned() },
        io::ErrorKind::ConnectionRefused => ClientError::NotListening { path: socket.to_owned() },
        _ => ClientError::Connect { path: socket.to_owned(), source },
    })?;
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io { path: socket.to_owned(), source },
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).map_err(io_err)?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ClientError::Protocol { message: e.to_string() })?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    // One request per connection: saying so lets the daemon stop reading at once.
    stream.shutdown(std::net::Shutdown::Write).map_err(io_err)?;

    let mut answer = String::new();
    BufReader::new(stream.take(MAX_LINE_BYTES)).read_line(&mut answer).map_err(io_err)?;
    if answer.is_empty() {
        return Err(ClientError::Protocol { message: "the connection closed without an answer".into() });
    }
    serde_json::from_str(answer.trim_end()).map_err(|e| ClientError::Protocol { message: e.to_string() })
}
