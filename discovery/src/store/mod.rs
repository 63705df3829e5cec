//! The SQLite behaviour graph: the pipeline's batches go in (`write_batch`), the query commands'
//! answers come out (`workloads`, `graph`), and `render` turns those answers into text.
//!
//! The daemon owns the database and writes one transaction per batch; the query commands open the
//! same file read-only while it runs. WAL journaling is what makes that work: readers see the last
//! committed batch and never block the writer. The schema lives in `migrations/` at the top of the
//! repository and is applied by the daemon only; a reader refuses a file whose schema differs from the
//! one it was built with rather than guess at columns.

use std::{
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{
    migrate::{MigrateError, Migrator},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
    ConnectOptions,
};

use crate::model::Batch;

mod enforcement;
mod loss_events;
mod query;
pub mod render;
mod versions;
mod write;

#[cfg(test)]
mod tests;

pub use enforcement::{
    EnforcementEvent, EventFilter, PolicySource, StoredPolicy, VerdictKind, VerdictRecord,
    WorkloadEnforcement, SOURCE_GRAPH, SOURCE_RECOMMEND,
};
pub use loss_events::{LossEvent, LOSS_KIND};
pub use query::{
    Graph, GraphEdge, GraphLosses, GraphNode, GraphStamp, LossBucket, LossSummary, WorkloadInfo,
    WorkloadSummary,
};
pub use versions::{AcceptedRule, NewVersion, PolicyVersion, ORIGIN_ACCEPT, ORIGIN_RECOMMEND};
pub use write::WriteError;

/// The schema this binary reads and writes, embedded at build time.
static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// How long a connection waits for a lock held by another connection before giving up. With WAL a
/// reader meets one only in brief moments (log recovery, the log being reset); the writer only when
/// another writer (a second daemon) is active, which is worth an error rather than an endless wait.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How every writing transaction starts. The daemon and `stance policy` write the same file; a
/// deferred transaction that reads before it writes cannot wait for the other writer (SQLite
/// answers SQLITE_BUSY at once, without the busy timeout, when its read snapshot is stale), so
/// writers take the write lock up front and wait their turn instead.
pub(crate) const WRITE_TX: &str = "BEGIN IMMEDIATE";

/// Size the WAL file is truncated back to after a checkpoint.
const WAL_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// Errors of the store. Each names the database or workload it is about, so the CLI can print it as one
/// line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The daemon cannot create or write its database (directory, permissions, read-only filesystem).
    #[error("database {} is not writable", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A query command cannot read the database (typically: not root, and the daemon's directory is
    /// private).
    #[error("database {} is not readable", path.display())]
    NotReadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A query command was pointed at a file that does not exist.
    #[error("no database at {}: is `stance run` running? (use --db)", path.display())]
    NoDatabase { path: PathBuf },
    /// SQLite refused to open the file or to set up the connection (not a database, locked, I/O).
    #[error("cannot open database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// The daemon could not bring the schema up to date.
    #[error("cannot update the schema of database {}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: MigrateError,
    },
    /// A reader found a schema older than its own: the daemon that upgrades it has not run yet.
    #[error(
        "database {} has schema version {found}, this stance needs {expected}: run `stance run` on it once to upgrade it",
        path.display()
    )]
    SchemaOutdated { path: PathBuf, found: i64, expected: i64 },
    /// The file was written by a newer stance whose schema this binary does not know.
    #[error(
        "database {} has schema version {found}, newer than this stance understands ({expected}): use a newer stance",
        path.display()
    )]
    SchemaNewer { path: PathBuf, found: i64, expected: i64 },
    /// `graph NAME` for a name the database has never seen.
    #[error("unknown workload '{name}' (see `stance workloads`)")]
    UnknownWorkload { name: String },
    /// A batch could not be written; the transaction was rolled back, so nothing of it is stored.
    #[error("cannot write a batch to the database")]
    Write {
        #[source]
        source: WriteError,
    },
    /// A query failed; `what` says which.
    #[error("cannot read {what} from the database")]
    Read {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Enforcement state or events could not be written; the transaction was rolled back.
    #[error("cannot record {what} in the database")]
    Record {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A policy could not be turned into its stored JSON form, or a stored one read back.
    #[error("the stored policy of workload '{workload}' is not valid")]
    PolicyJson {
        workload: String,
        #[source]
        source: serde_json::Error,
    },
    /// A stored value is not one this binary can interpret (e.g. a node kind it does not know).
    #[error("database holds an unknown {column} '{value}'")]
    Unrecognised { column: &'static str, value: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the behaviour-graph database, opened either for the daemon (read-write) or for a query
/// command (read-only). Cheap to share by reference: the pool serialises what SQLite needs serialised.
/// A clone shares the connections: the daemon's pipeline writer and its enforcement actor write
/// through the one connection, one transaction after the other, instead of contending for the lock.
#[derive(Clone)]
pub struct Store {
    /// Connections to the one database file (one for the daemon, one for a query command).
    pool: SqlitePool,
}

/// Whether this process may read (and, with `write`, write) the file at `path`, asked without
/// opening it. Opening and closing a database file outside SQLite would be a bug here: closing any
/// descriptor of a file drops every POSIX lock the process holds on it, so another Store of this
/// process (the daemon's own connection) would silently lose the shared lock that keeps other
/// processes from deleting the WAL it is still appending to; its later commits would then be
/// invisible to every reader until it closed.
fn check_access(path: &Path, write: bool) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mode = if write { libc::R_OK | libc::W_OK } else { libc::R_OK };
    // SAFETY: c is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Access bits say nothing of what the file is (a socket or a directory passes for root).
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the daemon's database and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store> {
        let not_writable = |source| StoreError::NotWritable { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // 0700: the graph records what every process on the host does, which is not for every
            // local user to read. An existing directory keeps the mode its owner chose.
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(not_writable)?;
        }
        // SQLite reports an unopenable file as a bare "unable to open database file"; asking the
        // kernel ourselves first gets the operating system's reason (permission, read-only
        // filesystem). Only a missing file is created (and closed) here: see `check_access`.
        match check_access(path, true) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map(drop)
                    .or_else(|e| if e.kind() == io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                    .map_err(not_writable)?;
            }
            Err(e) => return Err(not_writable(e)),
        }

        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit does not wait for fsync; a power loss can lose the last batches
            // but never corrupts the file. Losing a second of observations is acceptable.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // A 100,000-edge batch grows the WAL by about 20 MiB; without a limit the file keeps that
            // size forever after the checkpoint has emptied it.
            .pragma("journal_size_limit", WAL_LIMIT_BYTES.to_string())
            // Batches are multi-kilobyte statements executed every second: logging them would drown
            // the daemon's own log.
            .disable_statement_logging();
        // One connection, kept for the daemon's life: SQLite allows one writer anyway, the page cache
        // stays warm between batches, and closing it is the last close, which checkpoints the WAL
        // into the database file (two connections closing together each leave that to the other).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;

        let store = Store { pool };
        // Check before migrating so a newer file gets the clear SchemaNewer instead of the migrator's
        // "previously applied but is missing".
        if let SchemaState::Newer { found, expected } = store.schema_state(path).await? {
            store.pool.close().await;
            return Err(StoreError::SchemaNewer { path: path.to_owned(), found, expected });
        }
        if let Err(source) = MIGRATOR.run(&store.pool).await {
            store.pool.close().await;
            return Err(StoreError::Migrate { path: path.to_owned(), source });
        }
        Ok(store)
    }

    /// Opens an existing database for queries, without ever writing to it, while a daemon may be
    /// writing it.
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        Store::open_existing(path, true).await
    }

    /// Opens an existing database of the current schema to add policy versions (`stance policy`)
    /// beside a running daemon: WAL lets both write, one transaction after the other. Never creates
    /// or migrates the file; that stays the daemon's.
    pub async fn open_for_review(path: &Path) -> Result<Store> {
        Store::open_existing(path, false).await
    }

    async fn open_existing(path: &Path, read_only: bool) -> Result<Store> {
        // Asking the kernel ourselves tells a missing database (the daemon never ran, or --db is
        // wrong) and an unreadable one apart, which SQLite reports alike.
        if let Err(source) = check_access(path, !read_only) {
            return Err(match source.kind() {
                io::ErrorKind::NotFound => StoreError::NoDatabase { path: path.to_owned() },
                _ if read_only => StoreError::NotReadable { path: path.to_owned(), source },
                _ => StoreError::NotWritable { path: path.to_owned(), source },
            });
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(read_only)
            .create_if_missing(false)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .disable_statement_logging();
        // Query commands run their queries one after another.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path: path.to_owned(), source })?;
        let store = Store { pool };
        let refusal = match store.schema_state(path).await? {
            SchemaState::Current => None,
            SchemaState::Outdated { found, expected } => {
                Some(StoreError::SchemaOutdated { path: path.to_owned(), found, expected })
            }
            SchemaState::Newer { found, expected } => {
                Some(StoreError::SchemaNewer { path: path.to_owned(), found, expected })
            }
        };
        match refusal {
            None => Ok(store),
            Some(err) => {
                store.pool.close().await;
                Err(err)
            }
        }
    }

    /// Stores one batch of observations in one transaction: either all of it is stored or none.
    pub async fn write_batch(&self, batch: &Batch) -> Result<()> {
        write::write_batch(&self.pool, batch).await.map_err(|source| StoreError::Write { source })
    }

    /// Every workload the database knows, by name, with counts of what it did.
    pub async fn workloads(&self) -> Result<Vec<WorkloadSummary>> {
        query::workloads(&self.pool).await
    }

    /// The behaviour graph of one workload.
    pub async fn graph(&self, workload: &str) -> Result<Graph> {
        query::graph(&self.pool, workload).await
    }

    /// Which state of the workload's graph the database holds now (`UnknownWorkload` for a name never
    /// seen): equal stamps mean equal graphs, so a graph read after a stamp is at least that new.
    pub async fn graph_stamp(&self, workload: &str) -> Result<GraphStamp> {
        query::graph_stamp(&self.pool, workload).await
    }

    /// One workload's identity and activity span (`UnknownWorkload` for a name never seen).
    pub async fn workload(&self, workload: &str) -> Result<WorkloadInfo> {
        query::workload_info(&self.pool, workload).await
    }

    /// The workload's graph and the stamp of the state it is (read in one transaction).
    pub async fn graph_at(&self, workload: &str) -> Result<(Graph, GraphStamp)> {
        query::graph_at(&self.pool, workload).await
    }

    /// Brings `graph`, read at `since`, up to date by reading only what changed after it; returns
    /// the stamp it is now at, or None when the workload's row is another than at `since` (read it
    /// in full then). On an error, `graph` may be half updated: drop it.
    pub async fn refresh_graph(&self, graph: &mut Graph, since: GraphStamp) -> Result<Option<GraphStamp>> {
        query::refresh_graph(&self.pool, graph, since).await
    }

    /// Losses that could not be attributed to any workload, which `workloads` cannot show.
    pub async fn unattributed_losses(&self) -> Result<LossSummary> {
        query::unattributed_losses(&self.pool).await
    }

    /// A workload's id, cgroups, modes and latest policy (`UnknownWorkload` for a name never seen).
    pub async fn workload_enforcement(&self, workload: &str) -> Result<WorkloadEnforcement> {
        enforcement::workload_enforcement(&self.pool, workload).await
    }

    /// Every workload with a domain in audit or enforce: what a restarted daemon re-applies.
    pub async fn enforced_workloads(&self) -> Result<Vec<WorkloadEnforcement>> {
        enforcement::enforced_workloads(&self.pool).await
    }

    /// Records a workload's new modes, and the policy loaded with them (`(revision, policy)`), in one
    /// transaction.
    pub async fn record_enforcement(
        &self,
        workload: &WorkloadEnforcement,
        modes: crate::enforce::Modes,
        loaded: Option<(u32, &crate::enforce::Policy, PolicySource)>,
    ) -> Result<()> {
        enforcement::record_enforcement(&self.pool, workload, modes, loaded).await
    }

    /// Stores deny / would-deny events in one transaction; returns how many were stored (those of
    /// workload ids the database does not know are skipped).
    pub async fn write_verdicts(&self, verdicts: &[VerdictRecord]) -> Result<u64> {
        enforcement::write_verdicts(&self.pool, verdicts).await
    }

    /// Enforcement events, newest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<EnforcementEvent>> {
        enforcement::events(&self.pool, filter).await
    }

    /// Every policy version number of a workload, oldest first.
    pub async fn policy_version_numbers(&self, workload: &str) -> Result<Vec<u32>> {
        versions::version_numbers(&self.pool, workload).await
    }

    /// One policy version of a workload, the latest when `version` is None.
    pub async fn policy_version(
        &self,
        workload: &str,
        version: Option<u32>,
    ) -> Result<Option<PolicyVersion>> {
        versions::version(&self.pool, workload, version).await
    }

    /// Writes the workload's next policy version (and the rule it adopts); returns its number.
    pub async fn add_policy_version(&self, workload: &str, new: NewVersion<'_>) -> Result<u32> {
        versions::add_version(&self.pool, workload, new).await
    }

    /// Rules adopted for a workload with `stance policy accept`.
    pub async fn accepted_rules(&self, workload: &str) -> Result<Vec<AcceptedRule>> {
        versions::accepted_rules(&self.pool, workload).await
    }

    /// Losses not attributed to any workload, per minute (unix seconds).
    pub async fn unattributed_loss_minutes(&self) -> Result<Vec<(i64, u64)>> {
        versions::unattributed_loss_minutes(&self.pool).await
    }

    /// Closes the connections. For the daemon's store this checkpoints the WAL into the database file
    /// and removes it, leaving one self-contained file (unless a reader still has the file open).
    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Compares the migrations applied to the file with those embedded in this binary.
    async fn schema_state(&self, path: &Path) -> Result<SchemaState> {
        let open_err = |source| StoreError::Open { path: path.to_owned(), source };
        let expected = MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .max()
            .unwrap_or(0);
        // A file that was never migrated (or is someone else's SQLite file) has no bookkeeping table.
        let tracked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(open_err)?;
        let found: i64 = if tracked == 0 {
            0
        } else {
            sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(open_err)?
        };
        Ok(match found.cmp(&expected) {
            std::cmp::Ordering::Equal => SchemaState::Current,
            std::cmp::Ordering::Less => SchemaState::Outdated { found, expected },
            std::cmp::Ordering::Greater => SchemaState::Newer { found, expected },
        })
    }
}

/// How a file's schema relates to this binary's.
enum SchemaState {
    Current,
    Outdated { found: i64, expected: i64 },
    Newer { found: i64, expected: i64 },
}
