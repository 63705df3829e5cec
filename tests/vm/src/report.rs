//! Judges each VM run against the scenarios it was meant to run and prints the verdicts.
//!
//! A run counts kernel × scenario. A problem with the VM itself (no boot, no DONE marker, BPF-LSM
//! not active) fails every scenario of that kernel that did not already fail, so the final
//! `N passed, M failed` line can never look green when the tier did not really test anything.

use std::time::Duration;

use crate::{
    initramfs::Scenario,
    kernels::Kernel,
    vm::{Ending, VmOutcome},
};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Ran to its END marker with a non-zero rc.
    Failed {
        rc: i32,
    },
    /// Did not finish, or passed in a VM whose problem makes the pass meaningless.
    VmProblem,
}

#[derive(Debug)]
pub struct ScenarioResult {
    pub name: String,
    pub verdict: Verdict,
    pub output: Vec<String>,
    /// How long it ran, when it ran to its END marker.
    pub elapsed: Option<Duration>,
}

#[derive(Debug)]
pub struct KernelReport {
    pub label: &'static str,
    pub package: String,
    pub version: String,
    pub release: Option<String>,
    pub elapsed: Duration,
    /// Problems with the VM as a whole, one clear sentence each.
    pub problems: Vec<String>,
    pub scenarios: Vec<ScenarioResult>,
}

impl KernelReport {
    pub fn passed(&self) -> usize {
        self.scenarios.iter().filter(|s| s.verdict == Verdict::Pass).count()
    }

    pub fn failed(&self) -> usize {
        self.scenarios.len() - self.passed()
    }
}

pub fn judge(kernel: &Kernel, expected: &[Scenario], outcome: VmOutcome, timeout: Duration) -> KernelReport {
    let t = outcome.transcript;
    let mut problems = Vec::new();
    if t.kernel_release.is_none() {
        problems
            .push(format!("the VM did not boot to /init ({})", describe_ending(&outcome.ending, timeout)));
    } else if !t.bpf_lsm_active() {
        problems.push(format!(
            "BPF-LSM is not active: /sys/kernel/security/lsm is {:?} (needs `bpf`)",
            t.lsm.as_deref().unwrap_or("unreadable")
        ));
    }
    if t.kernel_release.is_some() && !t.done {
        let during = t.running.as_ref().map(|(name, _)| format!(" during {name}")).unwrap_or_default();
        problems.push(format!(
            "the DONE marker never came{during} ({})",
            describe_ending(&outcome.ending, timeout)
        ));
    }
    let tail: Vec<String> = t.tail.iter().cloned().collect();

    let scenarios = expected
        .iter()
        .map(|scenario| {
            let finished = t.finished.iter().find(|r| r.name == scenario.name);
            let elapsed = finished.map(|run| run.elapsed);
            let (verdict, output) = match finished {
                Some(run) if run.rc != 0 => (Verdict::Failed { rc: run.rc }, run.output.clone()),
                Some(run) if problems.is_empty() => (Verdict::Pass, run.output.clone()),
                Some(run) => (Verdict::VmProblem, run.output.clone()),
                None => match &t.running {
                    Some((name, output)) if *name == scenario.name => (Verdict::VmProblem, output.clone()),
                    _ => (Verdict::VmProblem, Vec::new()),
                },
            };
            ScenarioResult { name: scenario.name.clone(), verdict, output, elapsed }
        })
        .collect();
    let mut report = KernelReport {
        label: kernel.series.label(),
        package: kernel.package.clone(),
        version: kernel.version.clone(),
        release: t.kernel_release.clone(),
        elapsed: outcome.elapsed,
        problems,
        scenarios,
    };
    if t.kernel_release.is_none() {
        // Without /init there are no scenario outputs; the console tail is the only evidence.
        report.problems.push(format!("last console lines:\n{}", indent(&tail)));
    }
    report
}

fn describe_ending(ending: &Ending, timeout: Duration) -> String {
    match ending {
        Ending::Exited(status) => format!("qemu exited: {status}"),
        Ending::TimedOut => format!("timed out after {} s; qemu killed", timeout.as_secs()),
        Ending::KilledAfterDone => "qemu did not power off; killed".into(),
    }
}

fn indent(lines: &[String]) -> String {
    lines.iter().map(|l| format!("    | {l}")).collect::<Vec<_>>().join("\n")
}

/// The human-readable verdicts for one kernel.
pub fn render(r: &KernelReport) -> String {
    let mut out = format!(
        "== [{}] {} {} (uname -r: {}), {:.1} s\n",
        r.label,
        r.package,
        r.version,
        r.release.as_deref().unwrap_or("?"),
        r.elapsed.as_secs_f64()
    );
    for problem in &r.problems {
        out.push_str(&format!("[{}] VM PROBLEM: {problem}\n", r.label));
    }
    for s in &r.scenarios {
        let secs = s.elapsed.map(|d| format!("{:.1} s", d.as_secs_f64()));
        match s.verdict {
            Verdict::Pass => {
                let took = secs.map(|t| format!(" ({t})")).unwrap_or_default();
                out.push_str(&format!("[{}] PASS {}{took}\n", r.label, s.name))
            }
            Verdict::Failed { rc } => {
                let hint = if rc == 137 { ", killed: scenario timeout?" } else { "" };
                let took = secs.map(|t| format!(", {t}")).unwrap_or_default();
                out.push_str(&format!(
                    "[{}] FAIL {} (rc={rc}{hint}{took})\n{}\n",
                    r.label,
                    s.name,
                    indent(&s.output)
                ));
            }
            Verdict::VmProblem => {
                out.push_str(&format!("[{}] FAIL {} (VM problem, see above)\n", r.label, s.name));
                if !s.output.is_empty() {
                    out.push_str(&indent(&s.output));
                    out.push('\n');
                }
            }
        }
    }
    out.push_str(&format!("[{}] {} passed, {} failed\n", r.label, r.passed(), r.failed()));
    out
}

/// The closing line CI reads: `N passed, M failed` over every kernel × scenario.
pub fn summary_line(reports: &[KernelReport]) -> String {
    let passed: usize = reports.iter().map(KernelReport::passed).sum();
    let failed: usize = reports.iter().map(KernelReport::failed).sum();
    format!("{passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernels::Series, markers::Transcript};
    use std::{os::unix::process::ExitStatusExt, path::PathBuf, process::ExitStatus};

    fn kernel() -> Kernel {
        Kernel {
            series: Series::V6_12,
            package: "linux-image-x".into(),
            version: "1".into(),
            vmlinuz: PathBuf::from("/k"),
            downloaded: false,
        }
    }

    fn scenarios() -> Vec<Scenario> {
        ["00-a", "10-b"].map(|n| Scenario { name: n.into(), timeout_secs: None }).to_vec()
    }

    fn outcome(lines: &[&str], ending: Ending) -> VmOutcome {
        let mut transcript = Transcript::default();
        lines.iter().for_each(|l| transcript.feed(l));
        VmOutcome { transcript, ending, elapsed: Duration::from_secs(3) }
    }

    const BOOT: [&str; 2] = ["@@STANCE-KERNEL 6.12.0@@", "@@STANCE-LSM capability,bpf@@"];

    #[test]
    fn clean_run_passes_and_failures_keep_rc_and_output() {
        let lines = [
            &BOOT[..],
            &["@@STANCE-SCENARIO-BEGIN 00-a@@", "@@STANCE-SCENARIO-END 00-a rc=0@@"],
            &["@@STANCE-SCENARIO-BEGIN 10-b@@", "FAIL: why", "@@STANCE-SCENARIO-END 10-b rc=1@@"],
            &["@@STANCE-VM-DONE@@"],
        ]
        .concat();
        let r = judge(
            &kernel(),
            &scenarios(),
            outcome(&lines, Ending::Exited(ExitStatus::from_raw(0))),
            Duration::ZERO,
        );
        assert!(r.problems.is_empty());
        assert_eq!(r.scenarios[0].verdict, Verdict::Pass);
        assert_eq!(r.scenarios[1].verdict, Verdict::Failed { rc: 1 });
        assert_eq!(r.scenarios[1].output, ["FAIL: why"]);
        let text = render(&r);
        assert!(
            text.contains("[6.12] PASS 00-a (0.0 s)\n")
                && text.contains("[6.12] FAIL 10-b (rc=1, 0.0 s)\n    | FAIL: why")
        );
        assert_eq!(summary_line(&[r]), "1 passed, 1 failed");
    }

    #[test]
    fn missing_bpf_lsm_fails_even_passing_scenarios() {
        let lines = [
            "@@STANCE-KERNEL 6.1.0@@",
            "@@STANCE-LSM capability,yama@@",
            "@@STANCE-SCENARIO-BEGIN 00-a@@",
            "@@STANCE-SCENARIO-END 00-a rc=0@@",
            "@@STANCE-SCENARIO-BEGIN 10-b@@",
            "@@STANCE-SCENARIO-END 10-b rc=0@@",
            "@@STANCE-VM-DONE@@",
        ];
        let r = judge(
            &kernel(),
            &scenarios(),
            outcome(&lines, Ending::Exited(ExitStatus::from_raw(0))),
            Duration::ZERO,
        );
        assert!(r.problems[0].contains("BPF-LSM is not active"));
        assert_eq!(r.failed(), 2);
    }

    #[test]
    fn timeout_fails_the_running_and_unstarted_scenarios() {
        let lines = [&BOOT[..], &["@@STANCE-SCENARIO-BEGIN 00-a@@", "stuck"]].concat();
        let r = judge(&kernel(), &scenarios(), outcome(&lines, Ending::TimedOut), Duration::from_secs(9));
        assert_eq!(r.problems, ["the DONE marker never came during 00-a (timed out after 9 s; qemu killed)"]);
        assert_eq!(r.scenarios[0].output, ["stuck"]);
        assert_eq!(r.failed(), 2);
    }

    #[test]
    fn no_boot_shows_the_console_tail() {
        let r = judge(
            &kernel(),
            &scenarios(),
            outcome(&["Kernel panic - not syncing"], Ending::Exited(ExitStatus::from_raw(0))),
            Duration::ZERO,
        );
        assert!(r.problems[0].starts_with("the VM did not boot to /init"));
        assert!(r.problems[1].contains("Kernel panic"));
        assert_eq!(summary_line(&[r]), "0 passed, 2 failed");
    }
}
