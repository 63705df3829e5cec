//! The harness's one error type. Each variant's message is meant to be the single line a user sees.

use std::{path::PathBuf, process::ExitStatus};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} not found (package {package}): run `stance-vmtest --install-deps`")]
    MissingTool { tool: &'static str, package: &'static str },
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: ExitStatus, stderr: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no Debian kernel package matches {pattern} (apt-get update was tried); \
         run `stance-vmtest --install-deps` or check the apt sources"
    )]
    KernelNotFound { pattern: String },
    #[error("cannot download kernel package {package} {version}: {detail}")]
    KernelDownload { package: String, version: String, detail: String },
    #[error("kernel package {package} has no boot/vmlinuz-*")]
    NoVmlinuz { package: String },
    #[error("{} is dynamically linked: pass --lib-from-ldd to copy the libraries ldd lists", path.display())]
    NeedsLibraries { path: PathBuf },
    #[error("no scenario (*.sh) in {}", dir.display())]
    NoScenarios { dir: PathBuf },
    #[error("no scenario in {} has a name containing {filter:?}", dir.display())]
    FilterMatchesNothing { dir: PathBuf, filter: String },
    #[error("apt has no 6.12 cloud kernel and no bookworm suite to add bookworm-backports next to")]
    NoBookwormSuite,
    #[error("{}: `# vmtest-timeout:` needs a number of seconds, not {value:?}", path.display())]
    BadTimeoutHeader { path: PathBuf, value: String },
    #[error("scenario name {name:?} may use only letters, digits, '.', '_' and '-'")]
    BadScenarioName { name: String },
}

impl Error {
    /// `map_err` adapter that records which path an I/O error was about.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
