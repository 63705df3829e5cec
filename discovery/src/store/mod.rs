//! SQLite behaviour graph. (stub: being written)
use std::path::Path;
use serde::Serialize;
use crate::model::Batch;
pub mod render;
#[derive(Debug, thiserror::Error)]
pub enum StoreError { #[error("not implemented")] NotImplemented }
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
#[derive(Debug, Serialize)] pub struct WorkloadSummary { pub name: String }
#[derive(Debug, Serialize)] pub struct Graph { pub nodes: Vec<()>, pub edges: Vec<()> }
pub struct Store;
impl Store {
    pub async fn open(_p: &Path) -> Result<Store> { Err(StoreError::NotImplemented) }
    pub async fn open_read_only(_p: &Path) -> Result<Store> { Err(StoreError::NotImplemented) }
    pub async fn write_batch(&self, _b: &Batch) -> Result<()> { Err(StoreError::NotImplemented) }
    pub async fn workloads(&self) -> Result<Vec<WorkloadSummary>> { Err(StoreError::NotImplemented) }
    pub async fn graph(&self, _w: &str) -> Result<Graph> { Err(StoreError::NotImplemented) }
    pub async fn close(self) {}
}
