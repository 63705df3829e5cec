//! The API's bearer token: made at the daemon's first start, kept in a 0600 file beside the
//! database (root reads it; so does the CLI's `--server`), and required on every /api request.

use std::{
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use subtle::ConstantTimeEq;

use super::{ApiError, ErrorKind};
use crate::paths;

/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot create the API token file {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the API token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the API token file {} is empty or not a token", path.display())]
    Invalid { path: PathBuf },
    #[error("no random numbers for the API token")]
    Random(#[source] getrandom::Error),
}

/// The token, compared in constant time.
pub struct Token(String);

impl Token {
    pub fn new(value: String) -> Token {
        Token(value)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Where the token of the database `db` lives.
pub fn token_path(db: &Path) -> PathBuf {
    match db.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.join(paths::API_TOKEN_FILE),
        None => PathBuf::from(paths::API_TOKEN_FILE),
    }
}

/// Reads the token at `path`, creating it (0600, never wider) when there is none yet.
pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
    match read(path) {
        Ok(token) => return Ok(token),
        Err(TokenError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes).map_err(TokenError::Random)?;
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let create = |source| TokenError::Create { path: path.to_owned(), source };
    // create_new: two daemons starting at once never overwrite each other's token.
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut file) => {
            file.write_all(format!("{value}\n").as_bytes()).map_err(create)?;
            file.sync_all().map_err(create)?;
            Ok(Token(value))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(create(e)),
    }
}

/// Reads an existing token file. A file readable by others is narrowed to 0600: the token grants
/// control of enforcement.
pub fn read(path: &Path) -> Result<Token, TokenError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TokenError::Read { path: path.to_owned(), source })?;
    let value = text.trim();
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(TokenError::Invalid { path: path.to_owned() });
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(Token(value.to_owned()))
}

/// Middleware: every request under /api needs `Authorization: Bearer <token>`, or gets 401.
pub async fn require_token(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/api" && !path.starts_with("/api/") {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if token.matches(p) => next.run(req).await,
        Some(_) => unauthorized("wrong API token"),
        None => unauthorized(
            "missing `Authorization: Bearer <token>` (the token is in the file the daemon printed at start)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_once_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = token_path(&dir.path().join("stance.db"));
        assert_eq!(path, dir.path().join("api.token"));
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.as_str().len(), 2 * TOKEN_BYTES);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.as_str(), again.as_str());
        assert!(first.matches(again.as_str()));
        assert!(!first.matches("x"));
        assert!(!first.matches(""));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        read(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(load_or_create(&path), Err(TokenError::Invalid { .. })));
    }
}
