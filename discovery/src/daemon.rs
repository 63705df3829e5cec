//! `stance run`. (being written)
use crate::config::Config;
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("STANCE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
pub async fn run(_cfg: Config) -> anyhow::Result<()> { anyhow::bail!("not implemented") }
