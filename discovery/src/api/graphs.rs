//! Behaviour graphs the API has read, kept until their workload's graph changes.
//!
//! Reading a graph of 10,000 edges takes tens of milliseconds and gives 4 MB of JSON, and the
//! dashboard asks for it whenever a workload is opened; the readiness in the workload list, the
//! recommendation served before any version is stored and the replay check are all computed from
//! it. The writer counts every batch that touches a workload (`workloads.graph_changes`, migration
//! 0005), so one indexed row tells whether a kept graph is still the one in the database.
//!
//! When the stamp moved on, the kept graph is brought up to date from the nodes and edges written
//! since (`Store::refresh_graph`) rather than read again: a workload that is still learning changes
//! with nearly every batch, and a batch touches few of its edges. A graph and its stamp are always
//! read in one transaction, so a kept graph is never older than its stamp says.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::body::Bytes;
use lru::LruCache;

use crate::store::{Graph, GraphStamp, Result, Store};

/// Nodes plus edges kept at most, over all cached graphs. A graph of 10,000 edges (and as many
/// nodes) takes about 10 MB between its parsed form and its JSON, so this is some 30 MB at most. A
/// larger graph than this is served but not kept: one request for a huge graph must not leave the
/// daemon that much bigger for good.
pub const DEFAULT_BUDGET: usize = 60_000;

/// Workloads kept at most, whatever their size.
const MAX_GRAPHS: usize = 64;

/// One graph as read at `stamp`, and its JSON once someone asked for it.
pub struct CachedGraph {
    pub stamp: GraphStamp,
    pub graph: Graph,
    json: OnceLock<Bytes>,
    etag: String,
}

impl CachedGraph {
    /// The graph as the graph endpoint serves it, serialised once.
    pub fn json(&self) -> std::result::Result<Bytes, serde_json::Error> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(&self.graph)?);
        // Two requests may both serialise; either result is the same bytes.
        Ok(self.json.get_or_init(|| json).clone())
    }

    /// The HTTP entity tag of this graph: equal only for the same state of the same workload, read by
    /// this process (the instance part keeps a browser's tag from matching after a restart on
    /// another database).
    pub fn etag(&self) -> &str {
        &self.etag
    }

    fn size(&self) -> usize {
        self.graph.nodes.len() + self.graph.edges.len()
    }
}

pub struct GraphCache {
    entries: Mutex<Entries>,
    budget: usize,
    /// Distinguishes this process's entity tags from another's.
    instance: u64,
}

struct Entries {
    lru: LruCache<String, Arc<CachedGraph>>,
    /// Sum of `CachedGraph::size` over `lru`.
    size: usize,
}

impl GraphCache {
    /// A cache holding at most `budget` nodes plus edges.
    pub fn new(budget: usize) -> GraphCache {
        let instance = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        GraphCache { entries: Mutex::new(Entries { lru: LruCache::unbounded(), size: 0 }), budget, instance }
    }

    /// The workload's graph as the database holds it now: the kept one while its stamp is current;
    /// brought up to date from what changed since when it is not; else read in full. Each is kept.
    pub async fn get(&self, store: &Store, name: &str) -> Result<Arc<CachedGraph>> {
        let stamp = store.graph_stamp(name).await?;
        let kept = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            match entries.lru.get(name) {
                Some(hit) if hit.stamp == stamp => return Ok(hit.clone()),
                // Out of the cache while it is updated, so that it is not cloned if nobody else
                // holds it; a request meanwhile reads the graph in full.
                Some(old)
                    if old.stamp.workload_id == stamp.workload_id && old.stamp.changes < stamp.changes =>
                {
                    let old = entries.lru.pop(name).expect("the entry was just found");
                    entries.size -= old.size();
                    Some(old)
                }
                _ => None,
            }
        };
        if let Some(old) = kept {
            let since = old.stamp;
            let mut graph =
                Arc::try_unwrap(old).map_or_else(|shared| shared.graph.clone(), |only| only.graph);
            if let Some(now) = store.refresh_graph(&mut graph, since).await? {
                return Ok(self.insert(name, graph, now));
            }
        }
        let (graph, stamp) = store.graph_at(name).await?;
        Ok(self.insert(name, graph, stamp))
    }

    fn insert(&self, name: &str, graph: Graph, stamp: GraphStamp) -> Arc<CachedGraph> {
        let etag = format!("\"{:x}-{}-{}\"", self.instance, stamp.workload_id, stamp.changes);
        let fresh = Arc::new(CachedGraph { stamp, graph, json: OnceLock::new(), etag });
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Two requests that missed together both insert; keep the newer state.
        if let Some(old) = entries.lru.peek(name) {
            if old.stamp.workload_id == stamp.workload_id && old.stamp.changes > stamp.changes {
                return fresh;
            }
        }
        let size = fresh.size();
        if size > self.budget {
            if let Some(old) = entries.lru.pop(name) {
                entries.size -= old.size();
            }
            return fresh;
        }
        if let Some(old) = entries.lru.put(name.to_owned(), fresh.clone()) {
            entries.size -= old.size();
        }
        entries.size += size;
        while entries.size > self.budget || entries.lru.len() > MAX_GRAPHS {
            match entries.lru.pop_lru() {
                Some((_, evicted)) => entries.size -= evicted.size(),
                None => break,
            }
        }
        fresh
    }

    /// How many graphs are kept, and their nodes plus edges.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        (entries.lru.len(), entries.size)
    }
}

impl Default for GraphCache {
    fn default() -> GraphCache {
        GraphCache::new(DEFAULT_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Batch, EdgeKey, EdgeKind, EdgeStats, NodeKind, NodeRef};

    /// `files` opens by one executable: 2 + files nodes (workload, executable, files) and `files` edges.
    fn opens(workload: &str, files: usize, count: u64) -> Batch {
        let edges = (0..files)
            .map(|i| {
                let key = EdgeKey {
                    workload: workload.into(),
                    kind: EdgeKind::Open,
                    source: NodeRef::new(NodeKind::Executable, "/usr/bin/cat"),
                    target: NodeRef::new(NodeKind::File, format!("/srv/{i}")),
                    access: "read".into(),
                    result: "ok".into(),
                };
                (key, EdgeStats { count, first_seen: 1, last_seen: 2 })
            })
            .collect();
        Batch { edges, ..Batch::default() }
    }

    #[tokio::test]
    async fn graphs_are_kept_within_the_budget_and_dropped_least_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("stance.db")).await.unwrap();
        for w in ["a", "b", "c"] {
            store.write_batch(&opens(w, 2, 1)).await.unwrap(); // 4 nodes + 2 edges
        }
        store.write_batch(&opens("huge", 10, 1)).await.unwrap(); // 12 nodes + 10 edges
        let cache = GraphCache::new(12);

        let a = cache.get(&store, "a").await.unwrap();
        cache.get(&store, "b").await.unwrap();
        assert_eq!(cache.held(), (2, 12));
        // Unchanged: the very graph kept, its JSON serialised once.
        let again = cache.get(&store, "a").await.unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(a.json().unwrap(), again.json().unwrap());
        // `b` is now the least recently used: `c` takes its place.
        cache.get(&store, "c").await.unwrap();
        assert_eq!(cache.held(), (2, 12));
        assert!(Arc::ptr_eq(&a, &cache.get(&store, "a").await.unwrap()));
        // Larger than the whole budget: served, not kept, and nothing else dropped for it.
        let huge = cache.get(&store, "huge").await.unwrap();
        assert_eq!(huge.graph.edges.len(), 10);
        assert_eq!(cache.held(), (2, 12));

        // A change to `a`: brought up to date (a new state, a new tag), still within the budget.
        store.write_batch(&opens("a", 2, 5)).await.unwrap();
        let changed = cache.get(&store, "a").await.unwrap();
        assert!(!Arc::ptr_eq(&a, &changed));
        assert_ne!(a.etag(), changed.etag());
        assert_eq!(changed.graph.edges.iter().map(|e| e.count).collect::<Vec<_>>(), [6, 6]);
        assert_eq!(changed.graph, store.graph("a").await.unwrap());
        assert_eq!(cache.held(), (2, 12));
        assert!(matches!(
            cache.get(&store, "nope").await.err().unwrap(),
            crate::store::StoreError::UnknownWorkload { .. }
        ));
    }
}
