//! The kernel's repeat suppression as userspace sees it: the key every suppressed event is counted
//! under (`DedupKey`, carried by each record that passed the check), and, at a clean stop, the
//! counts the kernel still holds for keys whose next record will now never come.
//!
//! observe.bpf.c keeps, per CPU, a direct-mapped cache (`dedup_cache`) in front of an LRU hash
//! (`dedup`). A key sitting in a CPU's cache slot has its only live state there: that CPU's LRU
//! value for the same key is a stale copy from before the key moved into the slot, and is skipped.

use std::collections::HashMap;

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};

use super::{abi, ProbeError};

/// A dedup key, compared and never interpreted (see `struct stance_dedup_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupKey {
    pub cgroup_id: u64,
    pub obj_a: u64,
    pub obj_b: u64,
    pub exe_ino: u64,
    pub exe_dev: u32,
    pub kind_bits: u32,
}

impl DedupKey {
    /// `None` for the all-zero key of records that passed no dedup check (kind_bits is never 0 in
    /// a real key).
    pub fn from_abi(k: &abi::stance_dedup_key) -> Option<DedupKey> {
        (k.kind_bits != 0).then_some(DedupKey {
            cgroup_id: k.cgroup_id,
            obj_a: k.obj_a,
            obj_b: k.obj_b,
            exe_ino: k.exe_ino,
            exe_dev: k.exe_dev,
            kind_bits: k.kind_bits,
        })
    }

    pub fn to_abi(self) -> abi::stance_dedup_key {
        abi::stance_dedup_key {
            cgroup_id: self.cgroup_id,
            obj_a: self.obj_a,
            obj_b: self.obj_b,
            exe_ino: self.exe_ino,
            exe_dev: self.exe_dev,
            kind_bits: self.kind_bits,
        }
    }
}

/// How many distinct keys the kernel can hold at once: the LRU's keys plus every CPU's cache slots.
/// The LRU's keys are shared by all CPUs (only its values are per CPU), but userspace learns keys
/// in emission order while the kernel evicts in its own; counting the LRU once per CPU leaves that
/// much room for the two orders to differ.
pub fn kernel_key_capacity(cpus: usize) -> usize {
    (abi::STANCE_DEDUP_ENTRIES as usize + abi::STANCE_DEDUP_SLOTS as usize) * cpus.max(1)
}

/// The possible CPUs, as the per-CPU maps count them (1 when that cannot be read).
pub fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1)
}

/// The two dedup maps, taken from the loaded object so they outlive its programs.
pub struct DedupMaps {
    cache: PerCpuArray<MapData, abi::stance_dedup_slot>,
    lru: PerCpuHashMap<MapData, abi::stance_dedup_key, abi::stance_dedup_val>,
}

impl DedupMaps {
    pub(super) fn new(
        cache: PerCpuArray<MapData, abi::stance_dedup_slot>,
        lru: PerCpuHashMap<MapData, abi::stance_dedup_key, abi::stance_dedup_val>,
    ) -> Self {
        DedupMaps { cache, lru }
    }

    /// Every suppressed count the kernel holds, summed per key over CPUs. Call it only once the
    /// programs are detached: a program running meanwhile could move a count between the cache
    /// and the LRU while they are read.
    pub fn held_repeats(&self) -> Result<HashMap<DedupKey, u64>, ProbeError> {
        let err = |name| move |source| ProbeError::Map { name, source };
        let mut slots = Vec::new();
        for idx in 0..self.cache.len() {
            let per_cpu = self.cache.get(&idx, 0).map_err(err("dedup_cache"))?;
            slots.extend(per_cpu.iter().enumerate().map(|(cpu, s)| (cpu, *s)));
        }
        let mut entries = Vec::new();
        for item in self.lru.iter() {
            // An entry the LRU evicts between listing and reading is simply gone: its count was
            // lost when it was evicted, like any other eviction.
            let Ok((key, per_cpu)) = item else { continue };
            entries.extend(per_cpu.iter().enumerate().map(|(cpu, v)| (cpu, key, *v)));
        }
        Ok(sum_held(slots, entries))
    }
}

/// Sums the counts of cache slots and LRU values per key, leaving out an LRU value whose key sits
/// in the same CPU's cache (the slot holds its state; the LRU value is an older copy).
pub fn sum_held(
    slots: impl IntoIterator<Item = (usize, abi::stance_dedup_slot)>,
    lru: impl IntoIterator<Item = (usize, abi::stance_dedup_key, abi::stance_dedup_val)>,
) -> HashMap<DedupKey, u64> {
    let mut held: HashMap<DedupKey, u64> = HashMap::new();
    let mut cached = std::collections::HashSet::new();
    for (cpu, slot) in slots {
        let Some(key) = DedupKey::from_abi(&slot.key) else { continue };
        cached.insert((cpu, key));
        if slot.suppressed > 0 {
            *held.entry(key).or_default() += u64::from(slot.suppressed);
        }
    }
    for (cpu, key, val) in lru {
        let Some(key) = DedupKey::from_abi(&key) else { continue };
        if val.suppressed > 0 && !cached.contains(&(cpu, key)) {
            *held.entry(key).or_default() += u64::from(val.suppressed);
        }
    }
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(obj: u64) -> DedupKey {
        DedupKey { cgroup_id: 7, obj_a: obj, obj_b: 0, exe_ino: 1, exe_dev: 2, kind_bits: 4 << 16 | 1 }
    }

    fn slot(k: DedupKey, suppressed: u32) -> abi::stance_dedup_slot {
        abi::stance_dedup_slot { key: k.to_abi(), last_emit: 1, suppressed, _pad: 0 }
    }

    fn val(suppressed: u32) -> abi::stance_dedup_val {
        abi::stance_dedup_val { last_emit: 1, suppressed, _pad: 0 }
    }

    #[test]
    fn counts_are_summed_over_cpus_and_stale_lru_copies_are_skipped() {
        let (a, b) = (key(1), key(2));
        let held = sum_held(
            [(0, slot(a, 10)), (1, slot(a, 5)), (1, abi::stance_dedup_slot::default())],
            [
                // CPU 0's cache holds a: its LRU value there is the copy from before, not a count.
                (0, a.to_abi(), val(99)),
                // CPU 2 has a only in its LRU: a count of its own.
                (2, a.to_abi(), val(3)),
                (0, b.to_abi(), val(4)),
                (1, b.to_abi(), val(0)),
            ],
        );
        assert_eq!(held.get(&a), Some(&18));
        assert_eq!(held.get(&b), Some(&4));
        assert_eq!(held.len(), 2);
    }

    #[test]
    fn empty_slots_and_zero_counts_hold_nothing() {
        let held = sum_held([(0, abi::stance_dedup_slot::default()), (0, slot(key(3), 0))], []);
        assert!(held.is_empty());
        assert_eq!(DedupKey::from_abi(&abi::stance_dedup_key::default()), None);
    }
}
