//! The `stance` binary: the daemon (`run`) and the commands people and tests use around it.
//! Errors from the library are typed; here, at the edge, they become one line on stderr and a
//! non-zero exit.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use stance::{config, daemon, launch, paths, store};

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
    },
    /// Print a workload's behaviour graph.
    Graph {
        /// Workload name as shown by `stance workloads`.
        workload: String,
        #[arg(long, env = "STANCE_DB", default_value = paths::DEFAULT_DB)]
        db: PathBuf,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = GraphFormat::Json)]
        output: GraphFormat,
    },
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
            eprintln!("stance: {}", chain(&err));
            ExitCode::FAILURE
        }
    }
}

fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { db, config } => {
            let cfg = config::Config::load(config.as_deref(), db)?;
            daemon::init_tracing();
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(daemon::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Launch { workload, cmd } => match launch::run(&workload, &cmd) {
            Ok(status) => Ok(ExitCode::from(status)),
            // Like a shell: a command that cannot be found or run exits 127 / 126.
            Err(e @ launch::LaunchError::Spawn { .. }) => {
                eprintln!("stance: {}", chain(&anyhow::Error::new(e)));
                Ok(ExitCode::from(127))
            }
            Err(e) => Err(e.into()),
        },
        Command::Workloads { db, output } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let store = store::Store::open_read_only(&db).await?;
                let list = store.workloads().await?;
                match output {
                    ListFormat::Table => print!("{}", store::render::workloads_table(&list)),
                    ListFormat::Json => println!("{}", serde_json::to_string_pretty(&list)?),
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        Command::Graph { workload, db, output } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let store = store::Store::open_read_only(&db).await?;
                let graph = store.graph(&workload).await?;
                match output {
                    GraphFormat::Json => println!("{}", serde_json::to_string_pretty(&graph)?),
                    GraphFormat::Dot => print!("{}", store::render::graph_dot(&graph)),
                }
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
    }
}
