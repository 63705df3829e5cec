//! Every filesystem path Stance uses by default, in one place.

/// Default SQLite database of `stance run` and the query commands.
pub const DEFAULT_DB: &str = "/var/lib/stance/stance.db";
/// Where the cgroup2 hierarchy is looked up (the mount point itself is read from here).
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// Directory under the cgroup2 mount that holds the cgroups of `stance launch`.
pub const LAUNCH_CGROUP_DIR: &str = "stance";
/// Where BPF objects are pinned so enforcement survives a daemon restart.
pub const BPF_PIN_DIR: &str = "/sys/fs/bpf/stance";
/// Where tracefs is mounted if it is not mounted yet (tracepoint attachment reads event ids there).
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// The daemon's control socket, through which `stance mode` reaches it (0600, in a 0700 directory).
pub const CONTROL_SOCKET: &str = "/run/stance/control.sock";
/// Port of the REST API and dashboard (on loopback unless configured otherwise).
pub const API_PORT: u16 = 7070;
/// File name of the API's bearer token, created 0600 in the database's directory.
pub const API_TOKEN_FILE: &str = "api.token";
/// The built dashboard in the source tree this binary was built from (`make build` builds it).
pub const WEB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dist");
