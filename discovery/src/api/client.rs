//! The CLI's side of the API (`stance workloads|graph|events|policy --server URL`): a request with
//! the token from the token file, and the answer decoded into the same types the offline queries
//! return, so both print alike.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, UNIX_EPOCH},
};

use serde::{de::DeserializeOwned, Deserialize};

use super::{
    auth,
    events::{EventPage, FeedEvent, MAX_LIMIT, MAX_OFFSET},
    versions::Accepted,
    ErrorBody,
};
use crate::{
    enforce::{Domain, Policy},
    recommend::{
        readiness::DomainReadiness,
        replay::{Check, Denial},
        Diff, Readiness, Review, RuleInfo,
    },
    store::{EnforcementEvent, VerdictKind, WorkloadInfo},
};

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
        self.call("GET", path)
    }

    /// POSTs to `path` without a body and decodes the JSON answer.
    pub fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call("POST", path)
    }

    fn call<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let sent = match method {
            "POST" => self.agent.post(&url).header("Authorization", &auth).send_empty(),
            _ => self.agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut resp =
            sent.map_err(|e| ClientError::Unreachable { url: url.clone(), source: Box::new(e) })?;
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
        base.push(format!("since={}", rfc3339(ns)));
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

/// Unix ns as the RFC 3339 time the API's `since`/`until` take.
fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
        .to_string()
}

/// The readiness as the API writes it (`recommend::Readiness`).
#[derive(Deserialize)]
struct ReadinessWire {
    ready: bool,
    reason: String,
    domains: BTreeMap<Domain, DomainWire>,
}

#[derive(Deserialize)]
struct DomainWire {
    ready: bool,
    new_rules: Vec<u64>,
}

/// `POST .../policy/versions` as the API writes it (`recommend::Review`).
#[derive(Deserialize)]
struct ReviewWire {
    workload: String,
    version: u32,
    origin: String,
    created_at: String,
    created: bool,
    policy: Policy,
    rules: Vec<RuleInfo>,
    proposed: Vec<RuleInfo>,
    readiness: ReadinessWire,
}

/// `stance policy WORKLOAD --server`: the daemon reviews (storing a new version when the behaviour
/// changed, as offline) and the answer becomes the same `Review` the offline command prints.
pub fn review(client: &Client, workload: &str) -> Result<Review, ClientError> {
    let w: ReviewWire = client.post(&format!("/api/v1/workloads/{}/policy/versions", segment(workload)))?;
    // The identity the exports select by; the review itself does not carry it.
    let info: WorkloadInfo = client.get(&format!("/api/v1/workloads/{}", segment(workload)))?;
    let domains = w
        .readiness
        .domains
        .into_iter()
        .map(|(d, r)| (d, DomainReadiness { ready: r.ready, new_rules: r.new_rules }))
        .collect();
    Ok(Review {
        workload: w.workload,
        info,
        version: w.version,
        origin: w.origin,
        created_at: w.created_at,
        created: w.created,
        policy: w.policy,
        rules: w.rules,
        proposed: w.proposed,
        readiness: Readiness { ready: w.readiness.ready, reason: w.readiness.reason, domains },
    })
}

#[derive(Deserialize)]
struct DiffWire {
    workload: String,
    from: u32,
    to: u32,
    added: Vec<RuleInfo>,
    removed: Vec<RuleInfo>,
}

/// `stance policy diff --server`.
pub fn diff(client: &Client, workload: &str, versions: Option<(u32, u32)>) -> Result<Diff, ClientError> {
    let query = versions.map(|(from, to)| format!("?from={from}&to={to}")).unwrap_or_default();
    let w: DiffWire = client.get(&format!("/api/v1/workloads/{}/policy/diff{query}", segment(workload)))?;
    Ok(Diff { workload: w.workload, from: w.from, to: w.to, added: w.added, removed: w.removed })
}

#[derive(Deserialize)]
struct DenialWire {
    domain: Domain,
    object: String,
    access: String,
    actor: String,
    hits: u64,
    first_seen: String,
    last_seen: String,
}

#[derive(Deserialize)]
struct CheckWire {
    workload: String,
    version: Option<u32>,
    checked: u64,
    denied: Vec<DenialWire>,
}

/// `stance policy check --server`. Like offline, a workload without a stored version is refused
/// (the API would replay the recommendation instead).
pub fn check(
    client: &Client,
    workload: &str,
    version: Option<u32>,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Check, ClientError> {
    let mut query = Vec::new();
    if let Some(v) = version {
        query.push(format!("version={v}"));
    }
    if let Some(ns) = since {
        query.push(format!("since={}", rfc3339(ns)));
    }
    if let Some(ns) = until {
        query.push(format!("until={}", rfc3339(ns)));
    }
    let path = format!("/api/v1/workloads/{}/policy/check?{}", segment(workload), query.join("&"));
    let w: CheckWire = client.get(&path)?;
    let Some(version) = w.version else {
        return Err(ClientError::Refused {
            status: 404,
            message: format!("workload '{workload}' has no policy version 1"),
        });
    };
    let denied = w
        .denied
        .into_iter()
        .map(|d| Denial {
            domain: d.domain,
            object: d.object,
            access: d.access,
            actor: d.actor,
            hits: d.hits,
            first_seen: d.first_seen,
            last_seen: d.last_seen,
        })
        .collect();
    Ok(Check { workload: w.workload, version, checked: w.checked, denied })
}

/// `stance policy accept --server`.
pub fn accept(client: &Client, workload: &str, id: &str) -> Result<Accepted, ClientError> {
    client.post(&format!("/api/v1/workloads/{}/proposals/{}/accept", segment(workload), segment(id)))
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
