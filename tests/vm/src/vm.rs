//! Boots one kernel with the initramfs under QEMU (TCG: KVM guests hung at boot on these machines),
//! streams the serial console to stdout prefixed with the kernel's label, and folds it into a
//! [`Transcript`]. QEMU is always killed by its own pid when the run ends, however it ends.

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{cmd, kernels::Kernel, markers::Transcript, Error, Result};

/// After the DONE marker, `poweroff -f` should end QEMU at once; past this it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// How a VM run ended, besides what its console said.
#[derive(Debug)]
pub enum Ending {
    /// QEMU exited by itself (after poweroff, a panic with `-no-reboot`, or an error).
    Exited(ExitStatus),
    /// The overall timeout passed; QEMU was killed.
    TimedOut,
    /// DONE came but QEMU did not exit within the grace period; it was killed.
    KilledAfterDone,
}

#[derive(Debug)]
pub struct VmOutcome {
    pub transcript: Transcript,
    pub ending: Ending,
    pub elapsed: Duration,
}

/// How the guest's clock runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    /// The host's clock: an emulated guest's timings then move with everything else the host
    /// runs, by tens of percent between runs on a shared machine.
    #[default]
    Host,
    /// QEMU's icount mode with `shift=0,sleep=off`: the guest clock advances exactly 1 ns per
    /// executed guest instruction, and jumps over idle time to the next timer, so a loop's time
    /// per operation is its instruction count, the same in every run (benchmarks compare runs
    /// to a few tenths of a percent). TCG then runs single-threaded, which one vCPU is anyway.
    Instructions,
}

pub fn qemu_command(kernel: &Path, initrd: &Path, clock: Clock) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nographic", "-no-reboot"])
        // No NIC: the scenarios use loopback only, and an emulated NIC only slows the boot.
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        // The Debian cloud kernels' built-in CONFIG_LSM already lists bpf, so no `lsm=` here.
        .args(["-append", "console=ttyS0 quiet panic=-1"]);
    if clock == Clock::Instructions {
        qemu.args(["-icount", "shift=0,sleep=off"]);
    }
    qemu
}

enum Event {
    Line(String),
    /// One of QEMU's two output streams closed.
    Closed,
}

/// Boots `kernel` and waits for the DONE marker, QEMU's exit or `timeout`, whichever is first.
pub fn run(kernel: &Kernel, initrd: &Path, clock: Clock, timeout: Duration) -> Result<VmOutcome> {
    let label = kernel.series.label();
    let started = Instant::now();
    let mut qemu = qemu_command(&kernel.vmlinuz, initrd, clock);
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { cmd: cmd::describe(&qemu), source })?;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        forward_lines(stdout, tx.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        forward_lines(stderr, tx);
    }

    let mut transcript = Transcript::default();
    let mut open_streams = 2;
    let mut deadline = started + timeout;
    let ending = loop {
        let now = Instant::now();
        if now >= deadline {
            break if transcript.done { Ending::KilledAfterDone } else { Ending::TimedOut };
        }
        match rx.recv_timeout(deadline - now) {
            Ok(Event::Line(line)) => {
                println!("[{label}] {line}");
                let was_done = transcript.done;
                transcript.feed(&line);
                if transcript.done && !was_done {
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                }
            }
            Ok(Event::Closed) => {
                open_streams -= 1;
                if open_streams == 0 {
                    break Ending::Exited(wait(&mut child)?);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ending::Exited(wait(&mut child)?),
        }
    };
    stop(&mut child);
    Ok(VmOutcome { transcript, ending, elapsed: started.elapsed() })
}

/// Reads `stream` line by line on its own thread; serial output is `\r\n`-terminated and may hold
/// escape sequences from the firmware, which are dropped.
fn forward_lines(stream: impl Read + Send + 'static, tx: mpsc::Sender<Event>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(Event::Line(clean_line(&buf))).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// Drops line endings, ANSI escape sequences and other control characters.
pub fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI `ESC [ params final` or a two-character `ESC x`.
            if chars.next_if_eq(&'[').is_some() {
                while chars.next().is_some_and(|c| !c.is_ascii_alphabetic()) {}
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

fn wait(child: &mut Child) -> Result<ExitStatus> {
    child.wait().map_err(Error::io("qemu-system-x86_64"))
}

/// Kills QEMU by its pid if it is still running and reaps it.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_line_strips_endings_and_escapes() {
        assert_eq!(clean_line(b"\x1b[2J\x1b[01;01Hhello\r\n"), "hello");
        assert_eq!(clean_line(b"@@STANCE-VM-DONE@@\r\n"), "@@STANCE-VM-DONE@@");
        assert_eq!(clean_line(b"a\tb\x1bcd"), "a\tbd");
    }

    fn qemu_args(clock: Clock) -> String {
        let args: Vec<String> = qemu_command(Path::new("/k"), Path::new("/i"), clock)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn qemu_uses_tcg_and_the_serial_console() {
        let joined = qemu_args(Clock::Host);
        assert!(joined.starts_with("-accel tcg -cpu max -m 1024 -smp 1 -nographic -no-reboot"));
        assert!(joined.contains("-kernel /k -initrd /i"));
        assert!(joined.ends_with("-append console=ttyS0 quiet panic=-1"));
        assert!(!joined.contains("-icount"), "the host clock unless asked: {joined}");
    }

    #[test]
    fn instruction_clock_is_icount_with_shift_0_and_no_sleep() {
        let joined = qemu_args(Clock::Instructions);
        assert!(joined.starts_with("-accel tcg "), "icount needs TCG: {joined}");
        assert!(joined.ends_with("-icount shift=0,sleep=off"), "{joined}");
        assert_eq!(joined.matches("-icount").count(), 1);
    }
}
