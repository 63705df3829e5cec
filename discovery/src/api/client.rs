//! The CLI's side of the API (`stance workloads|graph|events --server URL`): a GET with the token
//! from the token file, and the answer decoded into the same types the offline queries return, so
//! both print alike.

use std::{
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use serde::de::DeserializeOwned;

use super::{
    auth,
    events::{EventPage, FeedEvent, MAX_LIMIT, MAX_OFFSET},
    ErrorBody,
};
use crate::store::{EnforcementEvent, VerdictKind};

/// A daemon that has not answered in this time is stuck; saying so beats hanging.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error("cannot reach the stance API at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    /// The server's own one-line message.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("the stance API at {url} answered something that is not what was asked for")]
    Malformed {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
}

pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

/// Encodes a workload name as one path segment.
pub fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// `server` is the daemon's URL (`http://127.0.0.1:7070`); the token is read from `token_file`.
    pub fn new(server: &str, token_file: &Path) -> Result<Client, ClientError> {
        let token = auth::read(token_file)?.as_str().to_owned();
        let config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(TIMEOUT)).build();
        Ok(Client { base: server.trim_end_matches('/').to_owned(), token, agent: config.into() })
    }

    /// The token file of the database `db` (the daemon writes it there).
    pub fn default_token_file(db: &Path) -> PathBuf {
        auth::token_path(db)
    }

    /// GETs `path` (with its query) and decodes the JSON answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| ClientError::Unreachable { url: url.clone(), source: Box::new(e) })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let message = match resp.body_mut().read_json::<ErrorBody>() {
                Ok(body) => body.error.message,
                Err(_) => format!("the stance API answered HTTP {status}"),
            };
            return Err(ClientError::Refused { status, message });
        }
        resp.body_mut().read_json().map_err(|e| ClientError::Malformed { url, source: Box::new(e) })
    }
}

/// `stance events --server`: deny and would-deny events (not losses, which `stance workloads`
/// shows), newest first, at most `limit`, fetched page by page.
pub fn events(
    client: &Client,
    workload: Option<&str>,
    kind: Option<VerdictKind>,
    since: Option<i64>,
    limit: u32,
) -> Result<Vec<EnforcementEvent>, ClientError> {
    let mut base = Vec::new();
    if let Some(w) = workload {
        base.push(format!("workload={}", segment(w)));
    }
    if let Some(k) = kind {
        base.push(format!("kind={}", k.as_str()));
    }
    if let Some(ns) = since {
        let at = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
        base.push(format!("since={}", humantime::format_rfc3339_nanos(at)));
    }
    let mut out = Vec::new();
    let mut offset = 0;
    while out.len() < limit as usize {
        let page_size = (limit as usize - out.len()).min(MAX_LIMIT as usize);
        let mut query = base.clone();
        query.push(format!("limit={page_size}"));
        query.push(format!("offset={offset}"));
        let page: EventPage = client.get(&format!("/api/v1/events?{}", query.join("&")))?;
        out.extend(page.events.into_iter().filter_map(|e| match e {
            FeedEvent::Verdict(v) => Some(v),
            FeedEvent::Loss(_) => None,
        }));
        match page.next_offset {
            Some(next) if next <= MAX_OFFSET => offset = next,
            _ => break,
        }
    }
    out.truncate(limit as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_segment() {
        assert_eq!(segment("web"), "web");
        assert_eq!(segment("docker:0123abcd"), "docker%3A0123abcd");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("nginx.service"), "nginx.service");
    }
}
