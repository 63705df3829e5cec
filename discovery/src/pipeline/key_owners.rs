//! Which edge each kernel dedup key was last emitted as, so that the repeats the kernel still holds
//! at a clean stop (`probes::dedup`) can be added to the edges they are repeats of.
//!
//! Bounded like the kernel's own dedup state (`probes::dedup::kernel_key_capacity`): the key least
//! recently emitted goes first. A key the kernel still holds but this map has let go of, or never
//! saw (its record was lost on the way), has no known edge: its count becomes an
//! `unattributed-repeats` loss of its cgroup, never a silent drop.

use std::{collections::HashSet, num::NonZeroUsize};

use lru::LruCache;

use super::aggregate::PendingEdge;
use crate::{model::LossReason, probes::dedup::DedupKey};

/// What the last record emitted under a key became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOwner {
    /// An edge; `at` is when that record was seen (unix ns), a time within what the edge already
    /// holds, for a late count that arrives in a window of its own.
    Edge { edge: PendingEdge, at: i64 },
    /// A loss (a truncated path): its repeats are lost observations of the same reason.
    Loss(LossReason),
    /// Nothing the graph keeps (an anonymous file reached through /proc/self/fd): neither are its
    /// repeats.
    Ignored,
}

/// Where a held count goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Attribution<'a> {
    Edge { edge: &'a PendingEdge, at: i64 },
    Loss { cgroup_id: u64, reason: LossReason },
    Ignored,
}

/// Dedup key → owner of its last emitted record, least recently emitted out first.
pub struct KeyOwners {
    owners: LruCache<DedupKey, KeyOwner>,
    /// Keys already noted since the aggregator's window began. Noting one again would only move
    /// it to the front of the LRU (a walk through scattered nodes and the edge's strings, several
    /// cache misses an event where the pipeline replays a hot key at full rate); a contiguous set
    /// answers in one probe. A key that changes edge within one window (the same inode reached by
    /// another hard link) keeps the first one: an edge of the same object either way.
    noted: HashSet<DedupKey>,
}

impl KeyOwners {
    pub fn new(capacity: NonZeroUsize) -> Self {
        KeyOwners { owners: LruCache::new(capacity), noted: HashSet::new() }
    }

    /// A new window: every key is noted again at its first record.
    pub fn start_window(&mut self) {
        self.noted.clear();
    }

    /// Whether the key still has to be noted in this window (and from now on, that it has been).
    fn first_in_window(&mut self, key: DedupKey) -> bool {
        // Bounded like the LRU itself, whatever the window's size.
        if self.noted.len() >= self.owners.cap().get() {
            self.noted.clear();
        }
        self.noted.insert(key)
    }

    /// Notes the edge a record emitted under `key` became. The edge is cloned only when it differs
    /// from the one already noted (a key keeps its edge in steady repeated behaviour).
    pub fn note_edge(&mut self, key: DedupKey, edge: &PendingEdge, at: i64) {
        if !self.first_in_window(key) {
            return;
        }
        if let Some(KeyOwner::Edge { edge: held, at: held_at }) = self.owners.get_mut(&key) {
            if held == edge {
                *held_at = at;
                return;
            }
        }
        self.owners.put(key, KeyOwner::Edge { edge: edge.clone(), at });
    }

    /// Notes an owner that is not an edge.
    pub fn note(&mut self, key: DedupKey, owner: KeyOwner) {
        if self.first_in_window(key) {
            self.owners.put(key, owner);
        }
    }

    /// Where the repeats held for `key` belong; an unknown key is an `unattributed-repeats` loss of
    /// the key's cgroup.
    pub fn attribute(&self, key: &DedupKey) -> Attribution<'_> {
        match self.owners.peek(key) {
            Some(KeyOwner::Edge { edge, at }) => Attribution::Edge { edge, at: *at },
            Some(KeyOwner::Loss(reason)) => Attribution::Loss { cgroup_id: key.cgroup_id, reason: *reason },
            Some(KeyOwner::Ignored) => Attribution::Ignored,
            None => Attribution::Loss { cgroup_id: key.cgroup_id, reason: LossReason::UnattributedRepeats },
        }
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EdgeKind, NodeKind, NodeRef};

    fn key(obj: u64) -> DedupKey {
        DedupKey { cgroup_id: 40 + obj, obj_a: obj, obj_b: 0, exe_ino: 1, exe_dev: 2, kind_bits: 4 << 16 | 1 }
    }

    fn edge(path: &str) -> PendingEdge {
        PendingEdge {
            cgroup_id: 41,
            kind: EdgeKind::Open,
            source: NodeRef::new(NodeKind::Executable, "/usr/bin/cat"),
            target: NodeRef::new(NodeKind::File, path),
            access: "read".to_owned(),
            result: "ok".to_owned(),
            target_cgroup: None,
        }
    }

    fn owners(n: usize) -> KeyOwners {
        KeyOwners::new(NonZeroUsize::new(n).unwrap())
    }

    #[test]
    fn a_key_belongs_to_the_edge_of_its_last_emitted_record() {
        let mut o = owners(4);
        o.note_edge(key(1), &edge("/etc/a"), 10);
        assert_eq!(o.attribute(&key(1)), Attribution::Edge { edge: &edge("/etc/a"), at: 10 });
        // Within one window a key is noted once.
        o.note_edge(key(1), &edge("/etc/b"), 15);
        assert_eq!(o.attribute(&key(1)), Attribution::Edge { edge: &edge("/etc/a"), at: 10 });
        // Same edge in a later window: only the time moves.
        o.start_window();
        o.note_edge(key(1), &edge("/etc/a"), 20);
        assert_eq!(o.attribute(&key(1)), Attribution::Edge { edge: &edge("/etc/a"), at: 20 });
        // The same object reached by another name (a hard link): the latest window's edge wins.
        o.start_window();
        o.note_edge(key(1), &edge("/etc/b"), 30);
        assert_eq!(o.attribute(&key(1)), Attribution::Edge { edge: &edge("/etc/b"), at: 30 });
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn the_bound_holds_and_the_least_recently_emitted_key_goes_first() {
        let mut o = owners(3);
        o.note_edge(key(1), &edge("/1"), 1);
        o.note_edge(key(2), &edge("/2"), 2);
        o.note_edge(key(3), &edge("/3"), 3);
        // Key 1 emits again in a later window: now key 2 is the least recently emitted.
        o.start_window();
        o.note_edge(key(1), &edge("/1"), 4);
        o.note_edge(key(4), &edge("/4"), 5);
        assert_eq!(o.len(), 3);
        assert!(matches!(
            o.attribute(&key(2)),
            Attribution::Loss { reason: LossReason::UnattributedRepeats, .. }
        ));
        for k in [1, 3, 4] {
            assert!(matches!(o.attribute(&key(k)), Attribution::Edge { .. }), "key {k}");
        }
        // Looking a key up does not make it recent: attribution happens once, at stop.
        o.attribute(&key(3));
        o.note_edge(key(5), &edge("/5"), 6);
        assert!(matches!(o.attribute(&key(3)), Attribution::Loss { .. }));
    }

    #[test]
    fn an_unknown_key_is_a_loss_of_its_cgroup() {
        let o = owners(2);
        assert_eq!(
            o.attribute(&key(9)),
            Attribution::Loss { cgroup_id: 49, reason: LossReason::UnattributedRepeats }
        );
    }

    #[test]
    fn owners_that_are_not_edges_keep_their_meaning() {
        let mut o = owners(2);
        o.note(key(1), KeyOwner::Loss(LossReason::PathTruncated));
        o.note(key(2), KeyOwner::Ignored);
        assert_eq!(
            o.attribute(&key(1)),
            Attribution::Loss { cgroup_id: 41, reason: LossReason::PathTruncated }
        );
        assert_eq!(o.attribute(&key(2)), Attribution::Ignored);
    }
}
