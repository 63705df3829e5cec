//! Daemon configuration: CLI flags and environment → optional TOML file → one validated struct.
//! Every default is written once, here.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::paths;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Keys of the TOML file. Unknown keys are an error, so a typo is never silently ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// Size of the kernel→user ring buffer in bytes (power of two, multiple of the page size).
    /// 16 MiB holds several hundred thousand events if the reader stalls briefly.
    pub ringbuf_bytes: u32,
    /// How long the kernel suppresses a repeat of the same (cgroup, kind, object, actor) before
    /// emitting it again with the number of suppressed repeats. Keeps the ring buffer quiet for
    /// repeated behaviour while `last_seen` and counts stay fresh.
    pub dedup_window_ms: u64,
    /// Capacity of the userspace queue between the ring-buffer reader and the aggregator.
    pub queue_capacity: usize,
    /// How often aggregated behaviour is written to SQLite in one transaction.
    pub flush_interval_ms: u64,
    /// Distinct edges held in memory before an early flush; bounds memory whatever the event rate.
    pub max_pending_edges: usize,
    /// Longest argv kept per exec, in bytes (the kernel's own bound is the hard limit).
    pub argv_bytes: usize,
    /// Unix socket the CLI reaches the daemon through (`stance mode`). Its directory is created
    /// 0700 when missing; the socket is 0600. `stance run --control` overrides it.
    pub control_socket: PathBuf,
    /// bpffs directory where enforcement is pinned (survives a daemon crash; adopted at restart).
    /// One daemon per directory: tests give each daemon its own.
    pub pin_dir: PathBuf,
    /// Address the REST API and dashboard listen on (`stance run --listen` overrides it). Loopback
    /// by default: the API changes what the kernel enforces, so exposing it is a deliberate choice.
    pub listen: SocketAddr,
    /// PEM certificate chain for the API; with `tls_key`, the API speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Directory of the built dashboard (`web/dist`, made by `make build`). The default is the one
    /// in the source tree this binary was built from.
    pub web_dir: PathBuf,
    /// Readiness (recommend::readiness): length of one observation window, in seconds. 10 minutes:
    /// long against the 10 s de-duplication, short enough that a server's usual work shows up in
    /// every window.
    pub readiness_window_secs: u64,
    /// Readiness: consecutive windows without a new rule (and without lost events) before a
    /// workload is ready. 6 × 10 minutes: an hour of quiet.
    pub readiness_quiet_windows: u32,
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            ringbuf_bytes: 16 << 20,
            dedup_window_ms: 10_000,
            queue_capacity: 65_536,
            flush_interval_ms: 1_000,
            max_pending_edges: 100_000,
            argv_bytes: 512,
            control_socket: PathBuf::from(paths::CONTROL_SOCKET),
            pin_dir: PathBuf::from(paths::BPF_PIN_DIR),
            listen: SocketAddr::from(([127, 0, 0, 1], paths::API_PORT)),
            tls_cert: None,
            tls_key: None,
            web_dir: PathBuf::from(paths::WEB_DIR),
            readiness_window_secs: 600,
            readiness_quiet_windows: 6,
        }
    }
}

/// HTTPS material: both files, or neither (plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When learning counts as done (see recommend::readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessConfig {
    pub window: Duration,
    pub quiet_windows: u32,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        FileConfig::default().readiness().expect("the defaults are valid")
    }
}

impl FileConfig {
    /// The optional file's keys, or the defaults without a file.
    pub fn load(file: Option<&Path>) -> Result<FileConfig, ConfigError> {
        match file {
            None => Ok(FileConfig::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.message().to_owned(),
                })
            }
        }
    }

    /// The readiness keys, validated: the query commands need only these.
    pub fn readiness(&self) -> Result<ReadinessConfig, ConfigError> {
        if self.readiness_window_secs == 0 || self.readiness_quiet_windows == 0 {
            return Err(ConfigError::Invalid(
                "readiness_window_secs and readiness_quiet_windows must be positive".into(),
            ));
        }
        Ok(ReadinessConfig {
            window: Duration::from_secs(self.readiness_window_secs),
            quiet_windows: self.readiness_quiet_windows,
        })
    }
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: PathBuf,
    pub ringbuf_bytes: u32,
    pub dedup_window: Duration,
    pub queue_capacity: usize,
    pub flush_interval: Duration,
    pub max_pending_edges: usize,
    pub argv_bytes: usize,
    pub control_socket: PathBuf,
    pub pin_dir: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub web_dir: PathBuf,
    pub readiness: ReadinessConfig,
}

/// Longest path a unix socket address holds (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

impl Config {
    /// Reads the optional file, applies the command line's `control` over it, and validates
    /// everything in one step.
    pub fn load(file: Option<&Path>, db: PathBuf, control: Option<PathBuf>) -> Result<Config, ConfigError> {
        Config::load_with_listen(file, db, control, None)
    }

    /// `load`, with `stance run --listen` applied over the file's `listen`.
    pub fn load_with_listen(
        file: Option<&Path>,
        db: PathBuf,
        control: Option<PathBuf>,
        listen: Option<SocketAddr>,
    ) -> Result<Config, ConfigError> {
        let mut fc = FileConfig::load(file)?;
        if let Some(control) = control {
            fc.control_socket = control;
        }
        if let Some(listen) = listen {
            fc.listen = listen;
        }
        Config::from_file_config(fc, db)
    }

    pub fn from_file_config(fc: FileConfig, db: PathBuf) -> Result<Config, ConfigError> {
        let page = 4096u32;
        if !fc.ringbuf_bytes.is_power_of_two() || fc.ringbuf_bytes < page {
            return Err(ConfigError::Invalid(format!(
                "ringbuf_bytes must be a power of two of at least {page}, got {}",
                fc.ringbuf_bytes
            )));
        }
        if fc.queue_capacity == 0 || fc.max_pending_edges == 0 {
            return Err(ConfigError::Invalid("queue_capacity and max_pending_edges must be positive".into()));
        }
        if fc.flush_interval_ms == 0 {
            return Err(ConfigError::Invalid("flush_interval_ms must be positive".into()));
        }
        if db.as_os_str().is_empty() {
            return Err(ConfigError::Invalid("--db must not be empty".into()));
        }
        let control = &fc.control_socket;
        if !control.is_absolute() || control.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ConfigError::Invalid(format!(
                "control_socket must be an absolute path of at most {MAX_SOCKET_PATH} bytes, got {}",
                control.display()
            )));
        }
        let readiness = fc.readiness()?;
        let tls = match (fc.tls_cert, fc.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("tls_cert and tls_key must be given together".into())),
        };
        Ok(Config {
            readiness,
            db,
            ringbuf_bytes: fc.ringbuf_bytes,
            dedup_window: Duration::from_millis(fc.dedup_window_ms),
            queue_capacity: fc.queue_capacity,
            flush_interval: Duration::from_millis(fc.flush_interval_ms),
            max_pending_edges: fc.max_pending_edges,
            argv_bytes: fc.argv_bytes,
            control_socket: fc.control_socket,
            pin_dir: fc.pin_dir,
            listen: fc.listen,
            tls,
            web_dir: fc.web_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_rejected() {
        let err = toml::from_str::<FileConfig>("ringbuf_byte = 4096").unwrap_err();
        assert!(err.message().contains("unknown field"), "{err}");
    }

    #[test]
    fn ringbuf_must_be_power_of_two() {
        let fc = FileConfig { ringbuf_bytes: 5000, ..FileConfig::default() };
        assert!(Config::from_file_config(fc, "/tmp/x.db".into()).is_err());
        assert!(Config::from_file_config(FileConfig::default(), "/tmp/x.db".into()).is_ok());
    }

    #[test]
    fn control_socket_from_file_then_flag() {
        let fc: FileConfig = toml::from_str("control_socket = \"/tmp/s/c.sock\"").unwrap();
        let cfg = Config::from_file_config(fc, "/tmp/x.db".into()).unwrap();
        assert_eq!(cfg.control_socket, Path::new("/tmp/s/c.sock"));
        let cfg = Config::load(None, "/tmp/x.db".into(), Some("/tmp/flag.sock".into())).unwrap();
        assert_eq!(cfg.control_socket, Path::new("/tmp/flag.sock"));
        let long = format!("/tmp/{}", "x".repeat(120));
        assert!(Config::load(None, "/tmp/x.db".into(), Some(long.into())).is_err());
        assert!(Config::load(None, "/tmp/x.db".into(), Some("rel.sock".into())).is_err());
    }

    #[test]
    fn listen_and_tls() {
        let cfg = Config::load(None, "/tmp/x.db".into(), None).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7070".parse().unwrap());
        assert_eq!(cfg.tls, None);
        let fc: FileConfig =
            toml::from_str("listen = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"").unwrap();
        let cfg = Config::from_file_config(fc, "/tmp/x.db".into()).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(cfg.tls, Some(TlsFiles { cert: "/c.pem".into(), key: "/k.pem".into() }));
        let cfg =
            Config::load_with_listen(None, "/tmp/x.db".into(), None, Some("127.0.0.1:0".parse().unwrap()))
                .unwrap();
        assert_eq!(cfg.listen.port(), 0);
        let half: FileConfig = toml::from_str("tls_cert = \"/c.pem\"").unwrap();
        let err = Config::from_file_config(half, "/tmp/x.db".into()).unwrap_err();
        assert_eq!(err.to_string(), "invalid config: tls_cert and tls_key must be given together");
        assert!(toml::from_str::<FileConfig>("listen = \"nowhere\"").is_err());
    }

    #[test]
    fn readiness_keys() {
        let fc: FileConfig =
            toml::from_str("readiness_window_secs = 60\nreadiness_quiet_windows = 3").unwrap();
        let cfg = Config::from_file_config(fc, "/tmp/x.db".into()).unwrap();
        assert_eq!(cfg.readiness, ReadinessConfig { window: Duration::from_secs(60), quiet_windows: 3 });
        assert_eq!(ReadinessConfig::default().quiet_windows, 6);
        let fc: FileConfig = toml::from_str("readiness_quiet_windows = 0").unwrap();
        assert!(Config::from_file_config(fc, "/tmp/x.db".into()).is_err());
    }
}
