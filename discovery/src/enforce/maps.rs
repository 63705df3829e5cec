//! Typed handles on the enforcement maps, and the map-level steps of an update: write a revision,
//! swap a cgroup, wait for running programs (an RCU grace period), delete a revision, and read back
//! what is pinned after a restart.

use std::collections::{BTreeMap, BTreeSet};

use aya::{
    maps::{lpm_trie::Key, Array, ArrayOfMaps, HashMap, LpmTrie, MapData, MapError},
    Ebpf,
};

use super::{abi, rules::CompiledRules, EnforceError};

/// The maps that are pinned, so that rules, modes, verdicts and hash keys survive a daemon restart.
/// (Caches, loss counters and scratch space are per program load.)
pub const PINNED: &[&str] = &[
    "cgroup_policy",
    "policy_info",
    "file_rules",
    "exec_rules",
    "net_rules",
    "unix_rules",
    "verdicts",
    "enforce_meta",
];

/// How a pinned map must look to be reused: (name, BPF map type, key size, value size, max entries).
pub fn expected_layout() -> Vec<(&'static str, u32, u32, u32, u32)> {
    use std::mem::size_of;
    let hash = aya::maps::MapType::Hash as u32;
    vec![
        ("cgroup_policy", hash, 8, size_of::<abi::stance_cgroup_policy>() as u32, abi::STANCE_MAX_CGROUPS),
        (
            "policy_info",
            hash,
            size_of::<abi::stance_policy_key>() as u32,
            size_of::<abi::stance_policy_info>() as u32,
            abi::STANCE_MAX_POLICY_REVS,
        ),
        (
            "file_rules",
            hash,
            size_of::<abi::stance_file_key>() as u32,
            size_of::<abi::stance_file_rule>() as u32,
            abi::STANCE_MAX_FILE_RULES,
        ),
        (
            "exec_rules",
            hash,
            size_of::<abi::stance_exec_key>() as u32,
            size_of::<abi::stance_exec_rule>() as u32,
            abi::STANCE_MAX_EXEC_RULES,
        ),
        (
            "net_rules",
            aya::maps::MapType::LpmTrie as u32,
            size_of::<abi::stance_net_key>() as u32,
            size_of::<abi::stance_net_rule>() as u32,
            abi::STANCE_MAX_NET_RULES,
        ),
        (
            "unix_rules",
            hash,
            size_of::<abi::stance_unix_key>() as u32,
            size_of::<abi::stance_unix_rule>() as u32,
            abi::STANCE_MAX_UNIX_RULES,
        ),
        ("verdicts", aya::maps::MapType::RingBuf as u32, 0, 0, abi::STANCE_VERDICT_RINGBUF_BYTES),
        (
            "enforce_meta",
            aya::maps::MapType::Array as u32,
            4,
            size_of::<abi::stance_enforce_meta>() as u32,
            1,
        ),
    ]
}

/// The keys one revision of one policy wrote (so it can be deleted without scanning the maps).
#[derive(Debug, Clone, Default)]
pub struct RevEntries {
    pub file: Vec<abi::stance_file_key>,
    pub exec: Vec<abi::stance_exec_key>,
    pub net: Vec<(u32, abi::net_key_data)>,
    pub unix: Vec<abi::stance_unix_key>,
    /// Whether its policy_info entry (the completion mark) was written.
    pub info: bool,
}

impl RevEntries {
    pub fn is_empty(&self) -> bool {
        self.file.is_empty()
            && self.exec.is_empty()
            && self.net.is_empty()
            && self.unix.is_empty()
            && !self.info
    }
}

/// Entries in use per map, to refuse an update that would not fit before writing anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub file: usize,
    pub exec: usize,
    pub net: usize,
    pub unix: usize,
    pub info: usize,
    pub cgroups: usize,
}

impl Usage {
    pub fn add(&mut self, e: &RevEntries) {
        self.file += e.file.len();
        self.exec += e.exec.len();
        self.net += e.net.len();
        self.unix += e.unix.len();
        self.info += usize::from(e.info);
    }

    pub fn sub(&mut self, e: &RevEntries) {
        self.file = self.file.saturating_sub(e.file.len());
        self.exec = self.exec.saturating_sub(e.exec.len());
        self.net = self.net.saturating_sub(e.net.len());
        self.unix = self.unix.saturating_sub(e.unix.len());
        self.info = self.info.saturating_sub(usize::from(e.info));
    }

    /// The first map that cannot take `extra` more entries: (what, needed, free).
    pub fn first_overflow(&self, extra: &Usage) -> Option<(&'static str, usize, usize)> {
        let rows = [
            ("file rules", self.file, extra.file, abi::STANCE_MAX_FILE_RULES),
            ("executable rules", self.exec, extra.exec, abi::STANCE_MAX_EXEC_RULES),
            ("network rules", self.net, extra.net, abi::STANCE_MAX_NET_RULES),
            ("unix socket rules", self.unix, extra.unix, abi::STANCE_MAX_UNIX_RULES),
            ("policy revisions", self.info, extra.info, abi::STANCE_MAX_POLICY_REVS),
            ("cgroups", self.cgroups, extra.cgroups, abi::STANCE_MAX_CGROUPS),
        ];
        rows.into_iter().find_map(|(what, used, needed, max)| {
            let free = (max as usize).saturating_sub(used);
            (needed > free).then_some((what, needed, free))
        })
    }
}

/// What the pinned maps hold, grouped per policy and revision (read once when a daemon adopts them).
#[derive(Debug, Default)]
pub struct Scanned {
    pub cgroups: BTreeMap<u64, abi::stance_cgroup_policy>,
    pub infos: BTreeMap<(u32, u32), abi::stance_policy_info>,
    pub revs: BTreeMap<(u32, u32), RevEntries>,
}

pub struct KernelMaps {
    pub cgroup_policy: HashMap<MapData, u64, abi::stance_cgroup_policy>,
    pub policy_info: HashMap<MapData, abi::stance_policy_key, abi::stance_policy_info>,
    file_rules: HashMap<MapData, abi::stance_file_key, abi::stance_file_rule>,
    exec_rules: HashMap<MapData, abi::stance_exec_key, abi::stance_exec_rule>,
    net_rules: LpmTrie<MapData, abi::net_key_data, abi::stance_net_rule>,
    unix_rules: HashMap<MapData, abi::stance_unix_key, abi::stance_unix_rule>,
    pub meta: Array<MapData, abi::stance_enforce_meta>,
    pub losses: Array<MapData, u64>,
    barrier: ArrayOfMaps<MapData, Array<MapData, u32>>,
    barrier_inner: Array<MapData, u32>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EnforceError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(EnforceError::MissingMap(name))?;
    T::try_from(map).map_err(|source| EnforceError::Map { name, source })
}

impl KernelMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<KernelMaps, EnforceError> {
        let barrier_inner = Array::<MapData, u32>::create(1, 0)
            .map_err(|source| EnforceError::Map { name: "rcu_barrier inner map", source })?;
        Ok(KernelMaps {
            cgroup_policy: take(ebpf, "cgroup_policy")?,
            policy_info: take(ebpf, "policy_info")?,
            file_rules: take(ebpf, "file_rules")?,
            exec_rules: take(ebpf, "exec_rules")?,
            net_rules: take(ebpf, "net_rules")?,
            unix_rules: take(ebpf, "unix_rules")?,
            meta: take(ebpf, "enforce_meta")?,
            losses: take(ebpf, "verdict_losses")?,
            barrier: take(ebpf, "rcu_barrier")?,
            barrier_inner,
        })
    }

    /// Returns once no program that could have read the maps before this call is still running:
    /// replacing an entry of a map-in-map makes the kernel wait for an RCU grace period, and every
    /// enforcement program runs inside an RCU read-side section.
    pub fn grace_period(&mut self) -> Result<(), MapError> {
        self.barrier.set(0, &self.barrier_inner, 0)
    }

    /// Writes every rule of `rev`, its policy_info entry last (the mark that the revision is
    /// complete). Every entry written is recorded in `done`, so that on error the caller can delete
    /// exactly what this wrote.
    pub fn write_revision(
        &mut self,
        policy_id: u32,
        rev: u32,
        rules: &CompiledRules,
        modes: [u8; 4],
        done: &mut RevEntries,
    ) -> Result<(), MapError> {
        for (&(kind, path), &access) in &rules.files {
            let key = abi::stance_file_key { policy_id, rev, kind, _pad: 0, path: path.into() };
            let value = abi::stance_file_rule { access, _pad: 0 };
            self.file_rules.insert(key, value, 0)?;
            done.file.push(key);
        }
        for (&path, e) in &rules.execs {
            let key = abi::stance_exec_key { policy_id, rev, path: path.into(), source: Default::default() };
            let flags = if e.from_only { abi::STANCE_EXEC_FROM_ONLY } else { 0 };
            let value = abi::stance_exec_rule { ino: e.ino, dev: e.dev, flags, _pad: 0 };
            self.exec_rules.insert(key, value, 0)?;
            done.exec.push(key);
        }
        for &(path, source) in &rules.exec_sources {
            let key = abi::stance_exec_key { policy_id, rev, path: path.into(), source: source.into() };
            self.exec_rules.insert(key, abi::stance_exec_rule::default(), 0)?;
            done.exec.push(key);
        }
        for (&(bits, addr), ranges) in &rules.net {
            let data = abi::net_key_data { policy_id, rev, addr };
            let mut value = abi::stance_net_rule { n: ranges.len() as u32, ..Default::default() };
            for (slot, r) in value.ports.iter_mut().zip(ranges) {
                *slot = abi::stance_port_range { lo: r.lo, hi: r.hi, protocol: r.protocol, _pad: 0 };
            }
            let prefix = 64 + bits;
            self.net_rules.insert(&Key::new(prefix, data), value, 0)?;
            done.net.push((prefix, data));
        }
        for &path in &rules.unix {
            let key = abi::stance_unix_key { policy_id, rev, path: path.into() };
            self.unix_rules.insert(key, abi::stance_unix_rule { allowed: 1, _pad: 0 }, 0)?;
            done.unix.push(key);
        }
        let info =
            abi::stance_policy_info { caps_allowed: rules.caps_allowed, ptrace: rules.ptrace, mode: modes };
        self.policy_info.insert(abi::stance_policy_key { policy_id, rev }, info, 0)?;
        done.info = true;
        Ok(())
    }

    /// Deletes a revision's entries; what could not be deleted is returned (to be retried).
    pub fn delete_revision(&mut self, policy_id: u32, rev: u32, e: &RevEntries) -> RevEntries {
        let gone = |r: Result<(), MapError>| matches!(r, Ok(()) | Err(MapError::KeyNotFound));
        let mut left = RevEntries::default();
        // The completion mark first: a half-deleted revision must not look complete to a restart.
        if e.info && !gone(self.policy_info.remove(&abi::stance_policy_key { policy_id, rev })) {
            left.info = true;
        }
        for k in &e.file {
            if !gone(self.file_rules.remove(k)) {
                left.file.push(*k);
            }
        }
        for k in &e.exec {
            if !gone(self.exec_rules.remove(k)) {
                left.exec.push(*k);
            }
        }
        for (prefix, data) in &e.net {
            if !gone(self.net_rules.remove(&Key::new(*prefix, *data))) {
                left.net.push((*prefix, *data));
            }
        }
        for k in &e.unix {
            if !gone(self.unix_rules.remove(k)) {
                left.unix.push(*k);
            }
        }
        left
    }

    /// Everything the maps hold, grouped by (policy id, revision).
    pub fn scan(&self) -> Result<Scanned, EnforceError> {
        let err = |name| move |source| EnforceError::Map { name, source };
        let mut s = Scanned::default();
        for item in self.cgroup_policy.iter() {
            let (cg, v) = item.map_err(err("cgroup_policy"))?;
            s.cgroups.insert(cg, v);
        }
        for item in self.policy_info.iter() {
            let (k, v) = item.map_err(err("policy_info"))?;
            s.infos.insert((k.policy_id, k.rev), v);
            s.revs.entry((k.policy_id, k.rev)).or_default().info = true;
        }
        for k in self.file_rules.keys() {
            let k = k.map_err(err("file_rules"))?;
            s.revs.entry((k.policy_id, k.rev)).or_default().file.push(k);
        }
        for k in self.exec_rules.keys() {
            let k = k.map_err(err("exec_rules"))?;
            s.revs.entry((k.policy_id, k.rev)).or_default().exec.push(k);
        }
        for k in self.net_rules.keys() {
            let k = k.map_err(err("net_rules"))?;
            let data = k.data();
            s.revs.entry((data.policy_id, data.rev)).or_default().net.push((k.prefix_len(), data));
        }
        for k in self.unix_rules.keys() {
            let k = k.map_err(err("unix_rules"))?;
            s.revs.entry((k.policy_id, k.rev)).or_default().unix.push(k);
        }
        Ok(s)
    }

    /// Every cgroup entry (explicit and inherited).
    pub fn cgroup_entries(&self) -> Result<Vec<(u64, abi::stance_cgroup_policy)>, MapError> {
        self.cgroup_policy.iter().collect()
    }

    /// Verdicts lost since load: (ring buffer full, record not built).
    pub fn verdict_losses(&self) -> (u64, u64) {
        let get = |i| self.losses.get(&i, 0).unwrap_or(0);
        (get(abi::STANCE_VLOSS_RINGBUF), get(abi::STANCE_VLOSS_READ))
    }
}

/// Revisions a policy has in a scan, split into the one to keep and the rest.
pub fn live_revision(policy_id: u32, scanned: &Scanned) -> (Option<u32>, BTreeSet<u32>) {
    let revs: BTreeSet<u32> = scanned.revs.keys().filter(|(p, _)| *p == policy_id).map(|(_, r)| *r).collect();
    let referenced: BTreeSet<u32> =
        scanned.cgroups.values().filter(|v| v.policy_id == policy_id).map(|v| v.rev).collect();
    let complete: BTreeSet<u32> =
        scanned.infos.keys().filter(|(p, _)| *p == policy_id).map(|(_, r)| *r).collect();
    // The newest revision some cgroup uses (a crash between two cgroup swaps leaves two); else the
    // newest complete one (a policy with no cgroup at the moment).
    let live =
        referenced.iter().rfind(|r| complete.contains(r)).or_else(|| complete.iter().next_back()).copied();
    let rest = revs.into_iter().filter(|r| Some(*r) != live).collect();
    (live, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(policy_id: u32, rev: u32) -> abi::stance_cgroup_policy {
        abi::stance_cgroup_policy { policy_id, rev, ..Default::default() }
    }

    #[test]
    fn adoption_keeps_the_newest_used_complete_revision() {
        let mut s = Scanned::default();
        for (p, r) in [(1, 5), (1, 6), (1, 7), (2, 3)] {
            s.revs.entry((p, r)).or_default().file.push(Default::default());
        }
        // 7 was being written when the daemon died (no policy_info): incomplete.
        s.infos.insert((1, 5), Default::default());
        s.infos.insert((1, 6), Default::default());
        s.infos.insert((2, 3), Default::default());
        // A crash between swaps: one cgroup on 5, one on 6.
        s.cgroups.insert(10, cg(1, 5));
        s.cgroups.insert(11, cg(1, 6));
        let (live, rest) = live_revision(1, &s);
        assert_eq!(live, Some(6));
        assert_eq!(rest, [5, 7].into_iter().collect());
        // No cgroups: the newest complete revision.
        assert_eq!(live_revision(2, &s), (Some(3), BTreeSet::new()));
        assert_eq!(live_revision(9, &s), (None, BTreeSet::new()));
    }

    #[test]
    fn usage_reports_the_first_map_that_overflows() {
        let used = Usage { file: abi::STANCE_MAX_FILE_RULES as usize - 10, ..Default::default() };
        assert_eq!(used.first_overflow(&Usage { file: 10, ..Default::default() }), None);
        assert_eq!(
            used.first_overflow(&Usage { file: 11, ..Default::default() }),
            Some(("file rules", 11, 10))
        );
    }
}
