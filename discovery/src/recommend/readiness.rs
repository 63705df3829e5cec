//! Readiness: has learning converged? Decided from the behaviour itself, per workload and domain.
//!
//! Novelty is the number of rules of the recommended policy that first appeared in an observation
//! window (a rule's first appearance is the first observation it covers, so a new file under an
//! existing directory rule is not novelty). Windows are laid back from the workload's latest
//! observation, not from now: a workload that stopped is judged on the time it was observed, and
//! idle time never counts as quiet. A domain is ready when none of its rules appeared in the last K
//! windows; the workload is ready when every domain is, it was observed for at least K windows,
//! and no events were lost from the start of those windows on (its own losses, and losses no
//! workload could be charged with, which may have been its).
//!
//! Defaults (config.rs): 10-minute windows, 6 of them — an hour without a new rule. The window is
//! long compared with the kernel's 10 s de-duplication and the 1 s flush, so rule times are exact
//! enough, and short enough that a server's request mix shows up in every window; an hour catches
//! what a server does every few minutes (health checks, reloads, minutely jobs). Behaviour rarer
//! than that (daily rotation, backups) needs a longer `readiness_quiet_windows`.

use std::{
    collections::BTreeMap,
    time::{Duration, UNIX_EPOCH},
};

use serde::Serialize;

use crate::{config::ReadinessConfig, enforce::Domain};

/// A workload's readiness, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// "no new rule in the last 1h, no events lost", "3 new file rules in the last 10m", "events
    /// lost at 14:02 UTC", "observed for 12m of the 1h needed".
    pub reason: String,
    /// Per domain: new rules per window, newest window first.
    pub domains: BTreeMap<Domain, DomainReadiness>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainReadiness {
    pub ready: bool,
    /// New rules in each of the last K windows, the latest window first.
    pub new_rules: Vec<u64>,
}

const NS: i64 = 1_000_000_000;

/// `rules`: each rule's domain and first observation (unix ns). `losses`: lost events per minute
/// (start of the minute, unix ns). `first_ns`/`last_ns`: the workload's first and latest observation.
pub fn assess(
    rules: &[(Domain, i64)],
    losses: &[(i64, u64)],
    first_ns: i64,
    last_ns: i64,
    cfg: &ReadinessConfig,
) -> Readiness {
    let window = i64::try_from(cfg.window.as_nanos()).unwrap_or(i64::MAX).max(1);
    let k = cfg.quiet_windows.max(1);
    let span = window.saturating_mul(i64::from(k));
    let start = last_ns.saturating_sub(span);

    let mut domains: BTreeMap<Domain, DomainReadiness> = Domain::ALL
        .into_iter()
        .map(|d| (d, DomainReadiness { ready: true, new_rules: vec![0; k as usize] }))
        .collect();
    for (domain, first_seen) in rules {
        if *first_seen <= start {
            continue;
        }
        // Window 0 ends at the latest observation; a rule seen exactly at a boundary belongs to
        // the later window.
        let back = last_ns.saturating_sub(*first_seen).max(0);
        let i = usize::try_from(back / window).unwrap_or(usize::MAX).min(k as usize - 1);
        let d = domains.get_mut(domain).expect("every domain is present");
        d.new_rules[i] += 1;
        d.ready = false;
    }

    // Losses in a minute that overlaps the windows, or came after the latest observation (lost
    // events are exactly what would have moved it).
    let last_loss = losses
        .iter()
        .filter(|(minute, count)| *count > 0 && minute.saturating_add(60 * NS) > start)
        .map(|(minute, _)| *minute)
        .max();

    let (ready, reason) = if let Some(minute) = last_loss {
        (false, format!("events lost at {}", clock(minute)))
    } else if let Some(i) = latest_novel_window(&domains) {
        let mut parts: Vec<String> = Vec::new();
        for (domain, d) in &domains {
            let n: u64 = d.new_rules[..=i].iter().sum();
            if n > 0 {
                parts.push(format!("{n} new {} rule{}", noun(*domain), if n == 1 { "" } else { "s" }));
            }
        }
        let back = Duration::from_nanos(u64::try_from(window).unwrap_or(0) * (i as u64 + 1));
        (false, format!("{} in the last {}", parts.join(", "), humantime::format_duration(back)))
    } else if first_ns > start {
        let observed = Duration::from_secs(u64::try_from((last_ns - first_ns) / NS).unwrap_or(0));
        let needed = Duration::from_nanos(u64::try_from(span).unwrap_or(0));
        (
            false,
            format!(
                "observed for {} of the {} needed",
                humantime::format_duration(observed),
                humantime::format_duration(needed)
            ),
        )
    } else {
        let quiet = Duration::from_nanos(u64::try_from(span).unwrap_or(0));
        (true, format!("no new rule in the last {}, no events lost", humantime::format_duration(quiet)))
    };
    Readiness { ready, reason, domains }
}

/// Index of the most recent window in which some domain had a new rule.
fn latest_novel_window(domains: &BTreeMap<Domain, DomainReadiness>) -> Option<usize> {
    domains.values().filter_map(|d| d.new_rules.iter().position(|n| *n > 0)).min()
}

fn noun(domain: Domain) -> &'static str {
    match domain {
        Domain::Process => "process",
        Domain::File => "file",
        Domain::Network => "network",
        Domain::Capabilities => "capability",
    }
}

/// `14:02 UTC` of a unix-ns time (the date too when it is not today).
fn clock(unix_ns: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    if text[..10] == today[..10] {
        format!("{} UTC", &text[11..16])
    } else {
        format!("{} {} UTC", &text[..10], &text[11..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * NS;

    fn cfg() -> ReadinessConfig {
        ReadinessConfig { window: Duration::from_secs(600), quiet_windows: 6 }
    }

    #[test]
    fn quiet_for_k_windows_is_ready() {
        let last = 1_000_000 * MIN;
        let rules = [(Domain::File, last - 200 * MIN), (Domain::Process, last - 61 * MIN)];
        let r = assess(&rules, &[], last - 300 * MIN, last, &cfg());
        assert!(r.ready, "{r:?}");
        assert_eq!(r.reason, "no new rule in the last 1h, no events lost");
        assert!(r.domains.values().all(|d| d.ready && d.new_rules == [0; 6]));
    }

    #[test]
    fn new_rules_in_a_window_keep_it_learning_and_say_where() {
        let last = 1_000_000 * MIN;
        let rules = [
            (Domain::File, last - 5 * MIN),
            (Domain::File, last - 7 * MIN),
            (Domain::File, last - 9 * MIN),
            (Domain::Network, last - 25 * MIN),
            (Domain::Process, last - 3 * 60 * MIN),
        ];
        let r = assess(&rules, &[], last - 300 * MIN, last, &cfg());
        assert!(!r.ready);
        assert_eq!(r.reason, "3 new file rules in the last 10m");
        assert_eq!(r.domains[&Domain::File].new_rules, [3, 0, 0, 0, 0, 0]);
        assert_eq!(r.domains[&Domain::Network].new_rules, [0, 0, 1, 0, 0, 0]);
        assert!(r.domains[&Domain::Process].ready && r.domains[&Domain::Capabilities].ready);
        // Only the network rule, 25 minutes back: the reason names the span it falls in.
        let r = assess(&rules[3..], &[], last - 300 * MIN, last, &cfg());
        assert_eq!(r.reason, "1 new network rule in the last 30m");
    }

    #[test]
    fn losses_in_the_windows_or_after_block_readiness() {
        let last = 1_000_000 * MIN;
        let old = [(Domain::File, last - 200 * MIN)];
        let r = assess(&old, &[(last - 30 * MIN, 7)], last - 300 * MIN, last, &cfg());
        assert!(!r.ready);
        assert!(r.reason.starts_with("events lost at "), "{}", r.reason);
        assert!(assess(&old, &[(last + 5 * MIN, 1)], last - 300 * MIN, last, &cfg())
            .reason
            .starts_with("events lost"));
        // A loss before the windows does not matter any more.
        assert!(assess(&old, &[(last - 90 * MIN, 7)], last - 300 * MIN, last, &cfg()).ready);
    }

    #[test]
    fn too_short_an_observation_is_not_ready() {
        let last = 1_000_000 * MIN;
        let r = assess(&[], &[], last - 12 * MIN, last, &cfg());
        assert!(!r.ready);
        assert_eq!(r.reason, "observed for 12m of the 1h needed");
    }
}
