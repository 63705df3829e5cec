//! The `stance` binary: the daemon (`run`) and the commands people and tests use around it.
//! Errors from the library are typed; here, at the edge, they become one line on stderr and a
//! non-zero exit.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use stance::{
    api, config,
    control::{self, protocol},
    daemon,
    enforce::{Domain, Mode},
    launch, paths, store,
};

#[derive(Parser, Debug)]
#[command(
    name = "stance",
    version,
    about = "Learn each workload's behaviour; turn it into least-privilege policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon: load the probes, observe every workload, write the behaviour graph.
    Run {
        /// SQLite database to write.
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        /// TOML configuration file (see README for the keys and their defaults).
        #[arg(long, env = "STANCE_CONFIG")]
        config: Option<PathBuf>,
        /// Control socket to listen on (default: the file's `control_socket`, else /run/stance/control.sock).
        #[arg(long, env = "STANCE_CONTROL")]
        control: Option<PathBuf>,
        /// Address of the REST API and dashboard (default: the file's `listen`, else 127.0.0.1:7070).
        #[arg(long, env = "STANCE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run CMD inside the workload NAME (cgroup `stance/NAME`), wait, and exit with its status.
    Launch {
        /// Workload name: letters, digits, `.`, `_`, `-`; at most 64 characters.
        #[arg(long)]
        workload: String,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        cmd: Vec<OsString>,
    },
    /// List observed workloads.
    Workloads {
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print a workload's behaviour graph.
    Graph {
        /// Workload name as shown by `stance workloads`.
        workload: String,
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = GraphFormat::Json)]
        output: GraphFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Put a workload's domains into observe, audit (report would-deny) or enforce (deny). Audit and
    /// enforce load the workload's policy, compiled from its behaviour graph as it is now.
    Mode {
        /// Workload name as shown by `stance workloads`.
        workload: String,
        /// observe, audit or enforce.
        mode: Mode,
        /// process, file, network or capabilities; repeatable. Without it: all four.
        #[arg(long = "domain")]
        domains: Vec<Domain>,
        /// The running daemon's control socket.
        #[arg(long, env = "STANCE_CONTROL", default_value = paths::CONTROL_SOCKET)]
        control: PathBuf,
    },
    /// List deny and would-deny events, newest first.
    Events {
        /// Only this workload's events.
        #[arg(long)]
        workload: Option<String>,
        /// deny or would-deny.
        #[arg(long)]
        kind: Option<store::VerdictKind>,
        /// Only events since an RFC 3339 time (2024-05-01T12:00:00Z) or for a duration back (10m, 2h).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// At most this many events.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Query commands read the database directly (`--db`), or ask a running daemon's API instead.
#[derive(clap::Args, Debug)]
struct ServerArgs {
    /// Ask the daemon's REST API at this URL (e.g. http://127.0.0.1:7070) instead of reading --db.
    #[arg(long, env = "STANCE_SERVER")]
    server: Option<String>,
    /// The API token file (default: api.token beside --db, where the daemon writes it).
    #[arg(long, env = "STANCE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ServerArgs {
    /// A client when `--server` was given.
    fn client(&self, db: &std::path::Path) -> anyhow::Result<Option<api::client::Client>> {
        let Some(server) = &self.server else { return Ok(None) };
        let token_file =
            self.token_file.clone().unwrap_or_else(|| api::client::Client::default_token_file(db));
        Ok(Some(api::client::Client::new(server, &token_file)?))
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ListFormat {
    Table,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum GraphFormat {
    Json,
    Dot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // One clear line: the error and its causes, joined.
            eprintln!("stance: {}", control::one_line(&*err));
            ExitCode::FAILURE
        }
    }
}

/// `--since`: an RFC 3339 time, or a duration back from now; unix nanoseconds (as the API reads it).
fn parse_since(s: &str) -> Result<i64, String> {
    api::events::parse_since(s)
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { db, config, control, listen } => {
            let cfg = config::Config::load_with_listen(config.as_deref(), db, control, listen)?;
            daemon::init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(daemon::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Launch { workload, cmd } => match launch::run(&workload, &cmd) {
            Ok(status) => Ok(ExitCode::from(status)),
            // Like a shell: a command that cannot be found or run exits 127 / 126.
            Err(e @ launch::LaunchError::Spawn { .. }) => {
                eprintln!("stance: {}", control::one_line(&e));
                Ok(ExitCode::from(127))
            }
            Err(e) => Err(e.into()),
        },
        Command::Workloads { db, output, server } => {
            let client = server.client(&db)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let list: Vec<store::WorkloadSummary> = match &client {
                    Some(c) => c.get("/api/v1/workloads")?,
                    None => store::Store::open_read_only(&db).await?.workloads().await?,
                };
                match output {
                    ListFormat::Table => print!("{}", store::render::workloads_table(&list)),
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        Command::Graph { workload, db, output, server } => {
            let client = server.client(&db)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let graph = match &client {
                    Some(c) => {
                        c.get(&format!("/api/v1/workloads/{}/graph", api::client::segment(&workload)))?
                    }
                    None => store::Store::open_read_only(&db).await?.graph(&workload).await?,
                };
                match output {
                    GraphFormat::Json => println!("{}", serde_json::to_string_pretty(&graph)?),
                    GraphFormat::Dot => print!("{}", store::render::graph_dot(&graph)),
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        Command::Mode { workload, mode, domains, control } => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                anyhow::bail!("stance mode must run as root (it changes what the kernel enforces)");
            }
            let request = protocol::Request::Mode { workload, mode, domains };
            match control::client::call(&control, &request)? {
                protocol::Response::Mode(reply) => println!("{reply}"),
                protocol::Response::Error(e) => anyhow::bail!(e.message),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Events { workload, kind, since, limit, db, output, server } => {
            let client = server.client(&db)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let events = match &client {
                    Some(c) => api::client::events(c, workload.as_deref(), kind, since, limit)?,
                    None => {
                        let store = store::Store::open_read_only(&db).await?;
                        store.events(&store::EventFilter { workload, kind, since, limit }).await?
                    }
                };
                match output {
                    ListFormat::Table => print!("{}", store::render::events_table(&events)),
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&events)?),
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn mode_takes_a_mode_and_repeatable_domains() {
        let cli = Cli::try_parse_from([
            "stance", "mode", "web", "audit", "--domain", "file", "--domain", "network",
        ])
        .unwrap();
        let Command::Mode { workload, mode, domains, control } = cli.command else { panic!() };
        assert_eq!((workload.as_str(), mode), ("web", Mode::Audit));
        assert_eq!(domains, [Domain::File, Domain::Network]);
        assert_eq!(control, Path::new(paths::CONTROL_SOCKET));

        let cli =
            Cli::try_parse_from(["stance", "mode", "web", "enforce", "--control", "/tmp/c.sock"]).unwrap();
        let Command::Mode { domains, control, .. } = cli.command else { panic!() };
        assert!(domains.is_empty(), "no --domain: all four");
        assert_eq!(control, Path::new("/tmp/c.sock"));

        let err = Cli::try_parse_from(["stance", "mode", "web", "block"]).unwrap_err();
        assert!(err.to_string().contains("unknown mode 'block'"), "{err}");
        let err = Cli::try_parse_from(["stance", "mode", "web", "audit", "--domain", "disk"]).unwrap_err();
        assert!(err.to_string().contains("unknown domain 'disk'"), "{err}");
    }

    #[test]
    fn events_filters_parse() {
        let cli =
            Cli::try_parse_from(["stance", "events", "--kind", "would-deny", "--limit", "5", "-o", "json"])
                .unwrap();
        let Command::Events { kind, limit, workload, since, .. } = cli.command else { panic!() };
        assert_eq!((kind, limit, workload, since), (Some(store::VerdictKind::WouldDeny), 5, None, None));
        assert!(Cli::try_parse_from(["stance", "events", "--kind", "allow"]).is_err());
        assert!(Cli::try_parse_from(["stance", "events", "--limit", "0"]).is_err());
    }

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        assert_eq!(parse_since("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000_000_000));
        let now = i64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
        )
        .unwrap();
        let ten_minutes_ago = parse_since("10m").unwrap();
        assert!((now - 600_000_000_000 - ten_minutes_ago).abs() < 5_000_000_000, "{ten_minutes_ago}");
        assert!(parse_since("yesterday").unwrap_err().contains("neither an RFC 3339 time"));
    }
}
