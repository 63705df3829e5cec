//! The guest → host protocol: marker lines that the generated `/init` prints on the serial console,
//! and [`Transcript`], which folds a console stream into what happened.
//!
//! Markers are found anywhere in a line, because kernel messages can land on the same line as a
//! marker on a serial console.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

pub const KERNEL: &str = "STANCE-KERNEL";
pub const LSM: &str = "STANCE-LSM";
pub const BEGIN: &str = "STANCE-SCENARIO-BEGIN";
pub const END: &str = "STANCE-SCENARIO-END";
pub const DONE: &str = "STANCE-VM-DONE";

/// Console lines kept for showing when the VM failed before or between scenarios.
const TAIL_LINES: usize = 40;

#[derive(Debug, PartialEq, Eq)]
pub enum Marker {
    /// `uname -r` inside the guest: /init is running.
    Kernel(String),
    /// Contents of `/sys/kernel/security/lsm`.
    Lsm(String),
    Begin(String),
    End {
        name: String,
        rc: i32,
    },
    Done,
}

/// `@@KEYWORD rest@@` anywhere in `line`.
pub fn parse(line: &str) -> Option<Marker> {
    let start = line.find("@@STANCE-")? + 2;
    let body = &line[start..];
    let body = &body[..body.find("@@")?];
    let (keyword, rest) = body.split_once(' ').unwrap_or((body, ""));
    match keyword {
        KERNEL => Some(Marker::Kernel(rest.trim().to_owned())),
        LSM => Some(Marker::Lsm(rest.trim().to_owned())),
        BEGIN => Some(Marker::Begin(rest.trim().to_owned())),
        END => {
            let (name, rc) = rest.rsplit_once(" rc=")?;
            Some(Marker::End { name: name.trim().to_owned(), rc: rc.trim().parse().ok()? })
        }
        DONE => Some(Marker::Done),
        _ => None,
    }
}

/// One scenario that ran to its END marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRun {
    pub name: String,
    pub rc: i32,
    pub output: Vec<String>,
    /// From its BEGIN marker to its END marker, as the host saw them (zero without a BEGIN).
    pub elapsed: Duration,
}

/// What a console stream has shown so far.
#[derive(Debug, Default)]
pub struct Transcript {
    pub kernel_release: Option<String>,
    pub lsm: Option<String>,
    pub finished: Vec<ScenarioRun>,
    /// The scenario that began and has not ended, with its output so far.
    pub running: Option<(String, Vec<String>)>,
    pub done: bool,
    pub tail: VecDeque<String>,
    /// When the running scenario's BEGIN marker arrived.
    began_at: Option<Instant>,
}

impl Transcript {
    pub fn feed(&mut self, line: &str) {
        self.feed_at(line, Instant::now());
    }

    /// `feed`, with the time the line arrived.
    pub fn feed_at(&mut self, line: &str, now: Instant) {
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
        match parse(line) {
            Some(Marker::Kernel(release)) => self.kernel_release = Some(release),
            Some(Marker::Lsm(lsm)) => self.lsm = Some(lsm),
            Some(Marker::Begin(name)) => {
                self.running = Some((name, Vec::new()));
                self.began_at = Some(now);
            }
            Some(Marker::End { name, rc }) => {
                let began_at = self.began_at.take();
                let (output, elapsed) = match self.running.take() {
                    Some((began, output)) if began == name => {
                        (output, began_at.map(|t| now.saturating_duration_since(t)).unwrap_or_default())
                    }
                    _ => (Vec::new(), Duration::ZERO),
                };
                self.finished.push(ScenarioRun { name, rc, output, elapsed });
            }
            Some(Marker::Done) => self.done = true,
            None => {
                if let Some((_, output)) = &mut self.running {
                    output.push(line.to_owned());
                }
            }
        }
    }

    /// Whether `/sys/kernel/security/lsm` listed `bpf`.
    pub fn bpf_lsm_active(&self) -> bool {
        self.lsm.as_deref().is_some_and(|l| l.split(',').any(|m| m.trim() == "bpf"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_marker() {
        assert_eq!(
            parse("@@STANCE-KERNEL 6.1.0-57-cloud-amd64@@"),
            Some(Marker::Kernel("6.1.0-57-cloud-amd64".into()))
        );
        assert_eq!(
            parse("@@STANCE-LSM lockdown,capability,bpf@@"),
            Some(Marker::Lsm("lockdown,capability,bpf".into()))
        );
        assert_eq!(parse("@@STANCE-SCENARIO-BEGIN 00-a@@"), Some(Marker::Begin("00-a".into())));
        assert_eq!(
            parse("[   3.1] audit: x @@STANCE-SCENARIO-END 10-b rc=137@@"),
            Some(Marker::End { name: "10-b".into(), rc: 137 })
        );
        assert_eq!(parse("@@STANCE-VM-DONE@@"), Some(Marker::Done));
        assert_eq!(parse("@@STANCE-LSM @@"), Some(Marker::Lsm(String::new())));
    }

    #[test]
    fn ignores_non_markers() {
        assert_eq!(parse("echo @@STANCE-SCENARIO-END broken"), None);
        assert_eq!(parse("@@STANCE-OTHER x@@"), None);
        assert_eq!(parse("plain output"), None);
    }

    #[test]
    fn transcript_collects_output_per_scenario() {
        let mut t = Transcript::default();
        let t0 = Instant::now();
        for (secs, line) in [
            (0, "Linux version noise"),
            (1, "@@STANCE-KERNEL 6.12.117+deb12-cloud-amd64@@"),
            (1, "@@STANCE-LSM lockdown,capability,landlock,yama,bpf@@"),
            (2, "@@STANCE-SCENARIO-BEGIN 00-a@@"),
            (3, "ok: a"),
            (9, "@@STANCE-SCENARIO-END 00-a rc=0@@"),
            (9, "@@STANCE-SCENARIO-BEGIN 10-b@@"),
            (10, "FAIL: b"),
        ] {
            t.feed_at(line, t0 + Duration::from_secs(secs));
        }
        assert!(t.bpf_lsm_active());
        assert_eq!(
            t.finished,
            [ScenarioRun {
                name: "00-a".into(),
                rc: 0,
                output: vec!["ok: a".into()],
                elapsed: Duration::from_secs(7)
            }]
        );
        assert_eq!(t.running, Some(("10-b".into(), vec!["FAIL: b".into()])));
        assert!(!t.done);
    }

    #[test]
    fn bpf_must_be_a_whole_lsm_name() {
        let t = Transcript { lsm: Some("capability,bpfx,yama".into()), ..Default::default() };
        assert!(!t.bpf_lsm_active());
        assert!(!Transcript::default().bpf_lsm_active());
    }
}
