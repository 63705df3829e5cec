//! Network endpoints → network rules: one per destination, port and protocol, aggregated only where
//! the observations justify it.
//!
//! Thresholds, and why:
//!
//! - **Ports**: contiguous observed ports of one destination and protocol become one range (it
//!   admits nothing unobserved). Unprivileged ports (1024 and up) of one destination also join into
//!   a range when at least `MIN_GROUP` (4) were used and the range is at most twice as long as the
//!   number used (a pool of backend ports, passive FTP): privileged ports are distinct services
//!   and are never joined with gaps.
//! - **Addresses**: destinations with the same ports and protocol aggregate into a prefix when at
//!   least `MIN_GROUP` of them fall in it and the prefix holds at most `MAX_SPREAD` (4) addresses
//!   per observed one (a replica set behind one service, a small address pool). Never wider than
//!   /24 for IPv4 or /64 for IPv6, so no rule ever reaches 0.0.0.0/0 or ::/0.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::paths::Breadth;
use crate::enforce::policy::NetRule;

pub(super) const MIN_GROUP: usize = 4;
/// A prefix may hold at most this many addresses per observed one.
pub(super) const MAX_SPREAD: u128 = 4;
const WIDEST_V4: u8 = 24;
const WIDEST_V6: u8 = 64;
const FIRST_UNPRIVILEGED: u16 = 1024;

/// One observed destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Dest<'a> {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Option<&'a str>,
}

/// A rule, its breadth when it admits something unobserved, and the indices of the destinations
/// (in the input) it holds.
pub(super) type Collapsed = (NetRule, Option<Breadth>, Vec<usize>);

/// The rules for `dests`, sorted.
pub(super) fn collapse(dests: &[Dest<'_>]) -> Vec<Collapsed> {
    // Step 1: per address and protocol, ports → ranges.
    let mut ports: BTreeMap<(IpAddr, Option<&str>), Vec<u16>> = BTreeMap::new();
    for d in dests {
        ports.entry((d.addr, d.protocol)).or_default().push(d.port);
    }
    // Step 2: per (range, protocol), addresses → prefixes.
    type Group<'a> = (u16, u16, Option<&'a str>);
    let mut by_range: BTreeMap<Group<'_>, Vec<IpAddr>> = BTreeMap::new();
    let mut port_breadth: BTreeMap<Group<'_>, u64> = BTreeMap::new();
    let mut range_of: HashMap<(IpAddr, Option<&str>, u16), (u16, u16)> = HashMap::new();
    for ((addr, protocol), mut list) in ports {
        list.sort_unstable();
        list.dedup();
        for (lo, hi, observed) in port_ranges(&list) {
            by_range.entry((lo, hi, protocol)).or_default().push(addr);
            let unseen = port_breadth.entry((lo, hi, protocol)).or_default();
            *unseen = (*unseen).max(u64::from(hi - lo) + 1 - observed);
            for p in list.iter().filter(|p| (lo..=hi).contains(*p)) {
                range_of.insert((addr, protocol, *p), (lo, hi));
            }
        }
    }
    // (rule, breadth, the addresses of its group it holds)
    let mut out: Vec<(NetRule, Option<Breadth>, Vec<IpAddr>)> = Vec::new();
    for ((lo, hi, protocol), mut addrs) in by_range {
        addrs.sort_unstable();
        addrs.dedup();
        let unseen_ports = port_breadth.get(&(lo, hi, protocol)).copied().unwrap_or(0);
        // Prefixes come in address order, each holding the next `observed` addresses.
        let mut rest = addrs.as_slice();
        for (net, observed) in prefixes(&addrs) {
            let (held, after) = rest.split_at((observed as usize).min(rest.len()));
            rest = after;
            let size = net_size(&net);
            let unseen_addrs = size.saturating_sub(u128::from(observed));
            let rule = NetRule { net, port_lo: lo, port_hi: hi, protocol: protocol.map(str::to_owned) };
            let breadth = (unseen_addrs > 0 || unseen_ports > 0).then(|| {
                let ports_in = u128::from(hi - lo) + 1;
                let admitted = size.saturating_mul(ports_in);
                let observed_pairs = u128::from(observed) * (ports_in - u128::from(unseen_ports));
                Breadth {
                    observed: observed_pairs as u64,
                    unobserved: Some(
                        u64::try_from(admitted.saturating_sub(observed_pairs)).unwrap_or(u64::MAX),
                    ),
                    basis: format!("address and port pairs in {net} ports {lo}-{hi}"),
                }
            });
            out.push((rule, breadth, held.to_vec()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rule_of: HashMap<(u16, u16, Option<&str>, IpAddr), usize> = HashMap::new();
    for (i, (r, _, held)) in out.iter().enumerate() {
        for addr in held {
            rule_of.insert((r.port_lo, r.port_hi, r.protocol.as_deref(), *addr), i);
        }
    }
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); out.len()];
    for (d_index, d) in dests.iter().enumerate() {
        let found = range_of
            .get(&(d.addr, d.protocol, d.port))
            .and_then(|(lo, hi)| rule_of.get(&(*lo, *hi, d.protocol, d.addr)));
        if let Some(i) = found {
            members[*i].push(d_index);
        }
    }
    out.into_iter().zip(members).map(|((r, b, _), m)| (r, b, m)).collect()
}

/// Sorted distinct ports → (lo, hi, ports observed in it).
fn port_ranges(ports: &[u16]) -> Vec<(u16, u16, u64)> {
    let mut out: Vec<(u16, u16, u64)> = Vec::new();
    for &p in ports {
        if let Some(last) = out.last_mut() {
            let contiguous = u32::from(p) == u32::from(last.1) + 1;
            let n = last.2 + 1;
            let dense = last.0 >= FIRST_UNPRIVILEGED && u64::from(p - last.0) < 2 * n;
            if contiguous || dense {
                last.1 = p;
                last.2 = n;
                continue;
            }
        }
        out.push((p, p, 1));
    }
    // A gapped range of fewer than MIN_GROUP ports is not a pool: back to single ports.
    let mut result = Vec::new();
    for (lo, hi, n) in out {
        let span = u64::from(hi - lo) + 1;
        if span == n || n >= MIN_GROUP as u64 {
            result.push((lo, hi, n));
        } else {
            result.extend(ports.iter().filter(|p| (lo..=hi).contains(*p)).map(|p| (*p, *p, 1)));
        }
    }
    result
}

/// Sorted distinct addresses → (prefix, addresses observed in it).
fn prefixes(addrs: &[IpAddr]) -> Vec<(IpNet, u64)> {
    let mut out = Vec::new();
    // Group by the widest allowed prefix, then split each group until its parts are dense.
    let mut groups: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
    for a in addrs {
        let widest = match a {
            IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new(*v4, WIDEST_V4).expect("valid length").trunc()),
            IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new(*v6, WIDEST_V6).expect("valid length").trunc()),
        };
        groups.entry(widest).or_default().push(*a);
    }
    for list in groups.into_values() {
        split(&list, &mut out);
    }
    out
}

/// The smallest prefix holding every address of `list`, if it is dense enough; else each half of
/// it on its own.
fn split(list: &[IpAddr], out: &mut Vec<(IpNet, u64)>) {
    if list.len() == 1 {
        out.push((IpNet::from(list[0]), 1));
        return;
    }
    let net = covering(list[0], list[list.len() - 1]);
    if list.len() >= MIN_GROUP && net_size(&net) <= MAX_SPREAD * list.len() as u128 {
        out.push((net, list.len() as u64));
        return;
    }
    // Halves by the first bit after the common prefix: the list is sorted, so they are contiguous.
    let Some(subnets) = net.subnets(net.prefix_len() + 1).ok() else { return };
    for sub in subnets {
        let part: Vec<IpAddr> = list.iter().copied().filter(|a| sub.contains(a)).collect();
        if !part.is_empty() {
            split(&part, out);
        }
    }
}

/// The smallest prefix containing both (sorted) addresses of one family.
fn covering(first: IpAddr, last: IpAddr) -> IpNet {
    match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let len = (u32::from(a) ^ u32::from(b)).leading_zeros() as u8;
            IpNet::V4(Ipv4Net::new(a, len).expect("valid length").trunc())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len = (u128::from(a) ^ u128::from(b)).leading_zeros() as u8;
            IpNet::V6(Ipv6Net::new(a, len).expect("valid length").trunc())
        }
        // Groups are per family (by their widest prefix), so this is never reached.
        (a, _) => IpNet::from(a),
    }
}

fn net_size(net: &IpNet) -> u128 {
    let bits = match net {
        IpNet::V4(_) => 32,
        IpNet::V6(_) => 128,
    };
    let host_bits = bits - u32::from(net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn dest(addr: &str, port: u16) -> Dest<'static> {
        Dest { addr: addr.parse().unwrap(), port, protocol: Some("tcp") }
    }

    fn texts(rules: &[Collapsed]) -> Vec<String> {
        rules.iter().map(|(r, _, _)| crate::recommend::Rule::Net(r.clone()).text()).collect()
    }

    #[test]
    fn single_destinations_stay_hosts() {
        let rules = collapse(&[dest("10.0.0.5", 5432), dest("10.0.0.9", 5432), dest("192.0.2.1", 443)]);
        assert_eq!(
            texts(&rules),
            ["net 10.0.0.5/32 tcp 5432", "net 10.0.0.9/32 tcp 5432", "net 192.0.2.1/32 tcp 443"]
        );
        assert!(rules.iter().all(|(_, b, _)| b.is_none()));
    }

    #[test]
    fn a_dense_group_becomes_a_prefix_with_its_breadth() {
        let rules = collapse(&[
            dest("10.1.2.1", 6379),
            dest("10.1.2.2", 6379),
            dest("10.1.2.3", 6379),
            dest("10.1.2.6", 6379),
            dest("10.1.2.200", 6379),
        ]);
        assert_eq!(texts(&rules), ["net 10.1.2.0/29 tcp 6379", "net 10.1.2.200/32 tcp 6379"]);
        assert_eq!((rules[0].2.as_slice(), rules[1].2.as_slice()), ([0, 1, 2, 3].as_slice(), [4].as_slice()));
        let b = rules[0].1.as_ref().unwrap();
        assert_eq!((b.observed, b.unobserved), (4, Some(4)));
    }

    #[test]
    fn scattered_addresses_never_reach_a_wide_prefix() {
        let many: Vec<Dest> = (0..=255u8)
            .map(|i| Dest { addr: IpAddr::V4(Ipv4Addr::new(10, i, i, 1)), port: 53, protocol: Some("udp") })
            .collect();
        let rules = collapse(&many);
        assert_eq!(rules.len(), 256, "one per /24: none dense");
        let full: Vec<Dest> = (0..=255u8)
            .flat_map(|a| {
                (0..=255u8).map(move |b| Dest {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 9, a, b)),
                    port: 80,
                    protocol: Some("tcp"),
                })
            })
            .collect();
        let rules = collapse(&full);
        assert!(rules.iter().all(|(r, _, _)| r.net.prefix_len() >= 24), "never wider than /24");
        assert_eq!(rules.len(), 256);
        let v6: Vec<Dest> = (1..=8u16)
            .map(|i| Dest {
                addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                port: 443,
                protocol: Some("tcp"),
            })
            .collect();
        let rules = collapse(&v6);
        assert_eq!(texts(&rules), ["net 2001:db8::/124 tcp 443"]);
        assert!(rules.iter().all(|(r, _, _)| r.net.prefix_len() >= 64));
    }

    #[test]
    fn ports_join_only_when_contiguous_or_a_dense_unprivileged_pool() {
        let rules = collapse(&[dest("127.0.0.1", 80), dest("127.0.0.1", 81), dest("127.0.0.1", 443)]);
        assert_eq!(texts(&rules), ["net 127.0.0.1/32 tcp 80-81", "net 127.0.0.1/32 tcp 443"]);
        assert!(rules.iter().all(|(_, b, _)| b.is_none()), "contiguous ports admit nothing new");
        let pool = [30000, 30002, 30003, 30005, 30007].map(|p| dest("127.0.0.1", p));
        let rules = collapse(&pool);
        assert_eq!(texts(&rules), ["net 127.0.0.1/32 tcp 30000-30007"]);
        assert_eq!(rules[0].1.as_ref().unwrap().unobserved, Some(3));
        assert_eq!(rules[0].2, [0, 1, 2, 3, 4], "ports inside the range are found too");
        // Privileged ports with gaps stay apart; so do fewer than four unprivileged ones.
        assert_eq!(collapse(&[22, 25, 80, 110].map(|p| dest("127.0.0.1", p))).len(), 4);
        assert_eq!(collapse(&[8000, 8002, 8004].map(|p| dest("127.0.0.1", p))).len(), 3);
    }
}
