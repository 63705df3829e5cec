//! The daemon's side of the control socket.
//!
//! The socket is the only way to change what is enforced, so only root may use it: it is created
//! 0600 (never wider, not even for an instant: the umask is narrowed around `bind`) in a directory
//! created 0700, and every peer's credentials are checked as well. A stale socket left by a daemon
//! that died is replaced; a socket another daemon still answers on is not touched.

use std::{
    io,
    os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, warn};

use super::{
    actor::ActorHandle,
    protocol::{ErrorKind, ErrorReply, Request, Response, MAX_LINE_BYTES},
};

/// How long a client has to send its request: a connection that says nothing is dropped rather than
/// kept open.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another stance daemon answers on {}", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot create the control socket {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A bound control socket. Dropping it removes the socket file, unless another daemon has replaced it
/// since.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Inode of the socket file this daemon created, to recognise it at removal.
    ino: u64,
}

impl ControlSocket {
    /// Creates the socket at `path` (and its directory, 0700, when missing). Must run inside a tokio
    /// runtime.
    pub fn bind(path: &Path) -> Result<ControlSocket, ServerError> {
        let create = |source| ServerError::Create { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(create)?;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(create(e)),
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ServerError::NotASocket { path: path.to_owned() })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ServerError::InUse { path: path.to_owned() }),
                // Left by a daemon that did not stop cleanly: nobody listens on it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(create)?
                }
                Err(e) => return Err(create(e)),
            },
        }
        // SAFETY: umask only swaps the process's file mode mask; it cannot fail. The daemon binds
        // before it spawns any task, so no other file is created under the narrowed mask.
        let previous = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        // SAFETY: as above, restoring the mask that was in force.
        unsafe { libc::umask(previous) };
        let std_listener = bound.map_err(create)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(create)?;
        let ino = std::fs::symlink_metadata(path).map_err(create)?.ino();
        std_listener.set_nonblocking(true).map_err(create)?;
        let listener = UnixListener::from_std(std_listener).map_err(create)?;
        Ok(ControlSocket { listener, path: path.to_owned(), ino })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accepts connections until `stop` changes; each connection is served by its own task, so a slow
/// client never holds up another.
pub async fn serve(socket: ControlSocket, actor: ActorHandle, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, actor.clone()));
                }
                Err(e) => {
                    // Out of descriptors, typically: back off instead of spinning.
                    warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

async fn handle(mut stream: UnixStream, actor: ActorHandle) {
    let response = match stream.peer_cred() {
        Ok(cred) if cred.uid() == 0 => match read_request(&mut stream).await {
            Ok(request) => actor.request(request).await,
            Err(reply) => Response::Error(reply),
        },
        Ok(cred) => Response::Error(ErrorReply {
            kind: ErrorKind::Forbidden,
            message: format!("only root may change enforcement (peer uid {})", cred.uid()),
        }),
        Err(e) => Response::Error(ErrorReply {
            kind: ErrorKind::Forbidden,
            message: format!("cannot tell who is connected: {e}"),
        }),
    };
    let mut line = match serde_json::to_vec(&response) {
        Ok(line) => line,
        Err(e) => {
            warn!(error = %e, "control socket: cannot encode a response");
            return;
        }
    };
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line).await {
        debug!(error = %e, "control socket: the client left before the answer");
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Request, ErrorReply> {
    let bad = |message: String| ErrorReply { kind: ErrorKind::BadRequest, message };
    let mut line = String::new();
    let mut reader = BufReader::new(stream.take(MAX_LINE_BYTES));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return Err(bad(format!("no request within {} seconds", REQUEST_TIMEOUT.as_secs()))),
        Ok(Err(e)) => return Err(bad(format!("cannot read the request: {e}"))),
        Ok(Ok(_)) => {}
    }
    if !line.ends_with('\n') && line.len() as u64 == MAX_LINE_BYTES {
        return Err(bad(format!("request longer than {MAX_LINE_BYTES} bytes")));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| bad(format!("not a valid request: {e}")))
}
