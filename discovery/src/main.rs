//! The `stance` binary: the daemon (`run`) and the commands people and tests use around it.
//! Errors from the library are typed; here, at the edge, they become one line on stderr and a
//! non-zero exit.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum};

use stance::{
    api, config,
    control::{self, protocol},
    daemon,
    enforce::{Domain, Mode},
    export, launch, paths, recommend, store,
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
    /// List observed workloads, with whether learning is done (READY) and why.
    Workloads {
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        /// TOML configuration file: its readiness keys decide READY.
        #[arg(long, env = "STANCE_CONFIG")]
        config: Option<PathBuf>,
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
    /// A workload's recommended policy: `stance policy WORKLOAD` shows the latest version (writing a
    /// new one when behaviour changed); `diff`, `accept` and `check` review it.
    Policy(PolicyArgs),
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

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct PolicyArgs {
    #[command(subcommand)]
    action: Option<PolicyAction>,
    /// Workload name as shown by `stance workloads`.
    #[arg(required = true)]
    workload: Option<String>,
    /// native (what the enforcer loads; docs/policy-format.md), or an export (docs/exports.md).
    #[arg(long, value_enum, default_value_t = PolicyFormat::Native)]
    format: PolicyFormat,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = DocFormat::Yaml)]
    output: DocFormat,
    /// Add every rule's evidence (first and last seen, hits, executables) and breadth, and the
    /// workload's readiness.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    db: DbArg,
    /// TOML configuration file (readiness keys; with --server the daemon's own apply).
    #[arg(long, env = "STANCE_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args, Debug)]
struct DbArg {
    /// The daemon's database.
    #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
    db: PathBuf,
}

#[derive(Subcommand, Debug)]
enum PolicyAction {
    /// Rules added and removed between two versions (default: the latest and the one before).
    Diff {
        workload: String,
        /// Older version (0: the empty policy).
        #[arg(requires = "v2")]
        v1: Option<u32>,
        /// Newer version.
        v2: Option<u32>,
        #[command(flatten)]
        db: DbArg,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Adopt a proposed addition (from deny / would-deny events) into a new version.
    Accept {
        workload: String,
        /// The proposal's id, as listed under `proposed` by `stance policy WORKLOAD`.
        rule_id: String,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replay stored behaviour against a version and list what it would deny.
    Check {
        workload: String,
        /// The version to evaluate (default: the latest).
        #[arg(long)]
        version: Option<u32>,
        /// Only behaviour seen since an RFC 3339 time or for a duration back (10m, 2h).
        #[arg(long, value_parser = parse_since)]
        since: Option<i64>,
        /// Only behaviour seen until an RFC 3339 time or a duration back.
        #[arg(long, value_parser = parse_since)]
        until: Option<i64>,
        #[command(flatten)]
        db: DbArg,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = ListFormat::Table)]
        output: ListFormat,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PolicyFormat {
    Native,
    Kubearmor,
    KubearmorHost,
    Cilium,
    Networkpolicy,
}

impl PolicyFormat {
    /// The export of a non-native format.
    fn export(self) -> Option<export::ExportFormat> {
        match self {
            PolicyFormat::Native => None,
            PolicyFormat::Kubearmor => Some(export::ExportFormat::Kubearmor),
            PolicyFormat::KubearmorHost => Some(export::ExportFormat::KubearmorHost),
            PolicyFormat::Cilium => Some(export::ExportFormat::Cilium),
            PolicyFormat::Networkpolicy => Some(export::ExportFormat::NetworkPolicy),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DocFormat {
    Yaml,
    Json,
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
        Command::Workloads { db, config, output, server } => {
            if let Some(c) = server.client(&db)? {
                // Through the daemon's API: the same rows as offline, with the API's modes and warnings.
                let rows: Vec<serde_json::Value> = c.get("/api/v1/workloads")?;
                match output {
                    ListFormat::Table => {
                        let list: Vec<store::WorkloadSummary> = rows
                            .iter()
                            .map(|r| serde_json::from_value(r.clone()))
                            .collect::<Result<_, _>>()?;
                        print!("{}", store::render::workloads_table(&list))
                    }
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let readiness_cfg = config::FileConfig::load(config.as_deref())?.readiness()?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let store = store::Store::open_read_only(&db).await?;
                let list = store.workloads().await?;
                let mut readiness = Vec::with_capacity(list.len());
                for w in &list {
                    let graph = store.graph(&w.workload.name).await?;
                    readiness.push(
                        recommend::review::readiness_of(&store, &graph, &recommend::RealFs, &readiness_cfg)
                            .await?,
                    );
                }
                match output {
                    ListFormat::Table => print!("{}", recommend::render::workloads_table(&list, &readiness)),
                    ListFormat::Json => {
                        let rows: Vec<serde_json::Value> = list
                            .iter()
                            .zip(&readiness)
                            .map(|(w, r)| {
                                let mut row = serde_json::to_value(w)?;
                                row["readiness"] = serde_json::to_value(r)?;
                                Ok(row)
                            })
                            .collect::<Result<_, serde_json::Error>>()?;
                        println!("{}", serde_json::to_string_pretty(&rows)?)
                    }
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        Command::Policy(args) => policy(args),
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

/// `stance policy ...`: offline on `--db`, or through the daemon's API with `--server`.
fn policy(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        match args.action {
            None => {
                let workload = args.workload.expect("clap requires it without a subcommand");
                let review = match args.server.client(&args.db.db)? {
                    Some(c) => api::client::review(&c, &workload)?,
                    None => {
                        let readiness_cfg = config::FileConfig::load(args.config.as_deref())?.readiness()?;
                        let store = store::Store::open_for_review(&args.db.db).await?;
                        recommend::review(&store, &workload, &recommend::RealFs, &readiness_cfg).await?
                    }
                };
                let doc = match args.format.export() {
                    None => recommend::render::native(&review, args.explain),
                    Some(format) => export::render(format, &review.policy, &review.info)?,
                };
                match args.output {
                    DocFormat::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
                    DocFormat::Yaml => print!("{}", export::to_yaml(&doc)?),
                }
                if review.created {
                    eprintln!("stance: behaviour changed: wrote version {} of {workload}", review.version);
                }
            }
            Some(PolicyAction::Diff { workload, v1, v2, db, output, server }) => {
                let d = match server.client(&db.db)? {
                    Some(c) => api::client::diff(&c, &workload, v1.zip(v2))?,
                    None => {
                        let store = store::Store::open_read_only(&db.db).await?;
                        recommend::diff(&store, &workload, v1.zip(v2)).await?
                    }
                };
                match output {
                    ListFormat::Table => print!("{}", recommend::render::diff_table(&d)),
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&d)?),
                }
            }
            Some(PolicyAction::Check { workload, version, since, until, db, output, server }) => {
                let check = match server.client(&db.db)? {
                    Some(c) => api::client::check(&c, &workload, version, since, until)?,
                    None => {
                        let store = store::Store::open_read_only(&db.db).await?;
                        recommend::replay::check(&store, &workload, version, since, until).await?
                    }
                };
                match output {
                    ListFormat::Table => print!("{}", recommend::replay::table(&check)),
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&check)?),
                }
            }
            Some(PolicyAction::Accept { workload, rule_id, db, server }) => {
                let (version, rule) = match server.client(&db.db)? {
                    Some(c) => {
                        let a = api::client::accept(&c, &workload, &rule_id)?;
                        (a.version, a.rule)
                    }
                    None => {
                        let store = store::Store::open_for_review(&db.db).await?;
                        recommend::accept(&store, &workload, &rule_id, &recommend::RealFs).await?
                    }
                };
                println!("{workload}: accepted {} ({}) into version {version}", rule.id, rule.text);
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
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
    fn policy_commands_parse() {
        let cli =
            Cli::try_parse_from(["stance", "policy", "web", "-o", "json", "--explain", "--db", "/tmp/s.db"])
                .unwrap();
        let Command::Policy(args) = cli.command else { panic!() };
        assert_eq!(args.workload.as_deref(), Some("web"));
        assert!(args.explain && args.action.is_none());
        assert_eq!((args.output, args.format), (DocFormat::Json, PolicyFormat::Native));
        assert_eq!(args.db.db, Path::new("/tmp/s.db"));

        let cli = Cli::try_parse_from(["stance", "policy", "diff", "web", "1", "3"]).unwrap();
        let Command::Policy(PolicyArgs {
            action: Some(PolicyAction::Diff { workload, v1, v2, db, .. }), ..
        }) = cli.command
        else {
            panic!()
        };
        assert_eq!((workload.as_str(), v1, v2), ("web", Some(1), Some(3)));
        assert_eq!(db.db, Path::new(paths::DEFAULT_DB));
        assert!(
            Cli::try_parse_from(["stance", "policy", "diff", "web", "1"]).is_err(),
            "two versions or none"
        );

        let cli =
            Cli::try_parse_from(["stance", "policy", "accept", "web", "f12345678", "--db", "/x.db"]).unwrap();
        let Command::Policy(PolicyArgs { action: Some(PolicyAction::Accept { rule_id, .. }), .. }) =
            cli.command
        else {
            panic!()
        };
        assert_eq!(rule_id, "f12345678");
        let cli = Cli::try_parse_from([
            "stance",
            "policy",
            "check",
            "web",
            "--server",
            "http://127.0.0.1:7070",
            "--token-file",
            "/t",
        ])
        .unwrap();
        let Command::Policy(PolicyArgs { action: Some(PolicyAction::Check { server, .. }), .. }) =
            cli.command
        else {
            panic!()
        };
        assert_eq!(server.server.as_deref(), Some("http://127.0.0.1:7070"));
        assert_eq!(server.token_file.as_deref(), Some(Path::new("/t")));
        let cli = Cli::try_parse_from(["stance", "policy", "web", "--server", "http://h:1"]).unwrap();
        let Command::Policy(args) = cli.command else { panic!() };
        assert_eq!(
            (args.workload.as_deref(), args.server.server.as_deref()),
            (Some("web"), Some("http://h:1"))
        );
        assert!(Cli::try_parse_from(["stance", "policy"]).is_err(), "a workload is needed");

        let cli = Cli::try_parse_from([
            "stance",
            "policy",
            "check",
            "web",
            "--version",
            "2",
            "--since",
            "2h",
            "-o",
            "json",
        ])
        .unwrap();
        let Command::Policy(PolicyArgs {
            action: Some(PolicyAction::Check { version, since, until, .. }),
            ..
        }) = cli.command
        else {
            panic!()
        };
        assert_eq!((version, since.is_some(), until), (Some(2), true, None));
        for (name, format) in [
            ("native", PolicyFormat::Native),
            ("kubearmor", PolicyFormat::Kubearmor),
            ("kubearmor-host", PolicyFormat::KubearmorHost),
            ("cilium", PolicyFormat::Cilium),
            ("networkpolicy", PolicyFormat::Networkpolicy),
        ] {
            let cli = Cli::try_parse_from(["stance", "policy", "web", "--format", name]).unwrap();
            let Command::Policy(args) = cli.command else { panic!() };
            assert_eq!(args.format, format);
            assert_eq!(format.export().map(|f| f.as_str()).unwrap_or("native"), name);
        }
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
