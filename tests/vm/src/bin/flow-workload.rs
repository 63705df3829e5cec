//! `flow-workload ACTION...`: the workload of the daemon-flow scenarios (tests/vm/scenarios/4x-*).
//! It does its actions in order, in one process, printing `ACTION TARGET: ok`, `... EPERM` or
//! `... error: <why>` for each, and exits 0 when every action succeeded, 1 when any was refused
//! with EPERM (and nothing else went wrong), 2 otherwise; usage errors exit 64.
//!
//! Actions:
//!   read PATH          open read-only and read
//!   write PATH         open write-only, create and truncate, and write a line
//!   exec PATH          run PATH with no arguments and stdin from /dev/null (fork + exec + wait);
//!                      the action fails unless PATH exits 0
//!   save PATH          write PATH.tmp (create, truncate), then rename it over PATH: how a database
//!                      or an editor saves a file it also reads
//!   connect ADDR:PORT  TCP connect, then close
//!   unix PATH          unix stream connect to PATH, then close
//!   dgram PATH         one unix datagram to PATH with sendto(2) on an unbound, unconnected socket
//!   sendto ADDR:PORT   one UDP datagram with sendto(2) on an unconnected socket
//!   sendmmsg ADDR:PORT,ADDR:PORT,...
//!                      one sendmmsg(2) call on an unconnected UDP socket, a datagram to each
//!                      (IPv4) destination in turn; fails with "sent K of N" when the kernel sent
//!                      only the first K (it reports an error only when the first failed)
//!   tfo ADDR:PORT      TCP Fast Open: sendto(2) with MSG_FASTOPEN on a new TCP socket, then close
//!   raw                socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), which needs CAP_NET_RAW
//!   peek               fork a child and read its /proc/PID/environ (a ptrace read check on a
//!                      process of the same workload), then end it
//!   peek-pid PID       read /proc/PID/environ (a ptrace read check on process PID)
//!   ptrace PID         PTRACE_ATTACH to PID, wait for its stop, detach
//!
//! Without actions it exits 0 at once (the scenarios exec a copy of it as "a binary it runs").
//!
//! Why `#![no_main]`: the Rust runtime's start-up (`lang_start`) reads `/proc/self/maps` (glibc's
//! `pthread_getattr_np` for the main thread's stack guard), which the kernel resolves to
//! `/proc/<pid>/maps`: a new path in every run. The daemon's graph-compiled allowlist holds exact
//! paths only, so that open would be denied in every enforced run after the observed one. That is a
//! known limit of the graph-compiled policy (the recommender generalises `/proc/<pid>/`), not what
//! these scenarios test, so this program starts from a plain C `main` and never does that read.

#![no_main]

use std::{
    ffi::OsString,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Command, Stdio},
};

type Outcome = io::Result<()>;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn addr(s: &str) -> io::Result<SocketAddr> {
    s.parse().map_err(|_| invalid(format!("{s:?} is not ADDR:PORT")))
}

fn read(path: &str) -> Outcome {
    File::open(path)?.read(&mut [0u8; 64]).map(drop)
}

fn write(path: &str) -> Outcome {
    OpenOptions::new().write(true).create(true).truncate(true).open(path)?.write_all(b"flow\n")
}

fn save(path: &str) -> Outcome {
    let tmp = format!("{path}.tmp");
    write(&tmp)?;
    std::fs::rename(&tmp, path)
}

fn exec(path: &str) -> Outcome {
    let status = Command::new(path).stdin(Stdio::null()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("{path} exited with {status}")))
    }
}

fn connect(target: &str) -> Outcome {
    TcpStream::connect(addr(target)?).map(drop)
}

fn unix(path: &str) -> Outcome {
    std::os::unix::net::UnixStream::connect(path).map(drop)
}

/// An IPv4 ADDR:PORT as the kernel takes it, for the actions that call libc directly.
fn sockaddr_v4(action: &str, target: &str) -> io::Result<libc::sockaddr_in> {
    let SocketAddr::V4(v4) = addr(target)? else {
        return Err(invalid(format!("{target}: {action} takes an IPv4 address")));
    };
    Ok(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
        sin_zero: [0; 8],
    })
}

fn tfo(target: &str) -> Outcome {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let sin = sockaddr_v4("tfo", target)?;
    // SAFETY: socket(2) with constant arguments; the fd is owned (and closed) by `fd`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sendto on the owned fd with a buffer and a sockaddr_in of the sizes given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            b"flow".as_ptr().cast(),
            4,
            libc::MSG_FASTOPEN,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn dgram(path: &str) -> Outcome {
    std::os::unix::net::UnixDatagram::unbound()?.send_to(b"flow", path).map(drop)
}

fn sendto(target: &str) -> Outcome {
    let to = addr(target)?;
    let any: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    UdpSocket::bind(any)?.send_to(b"flow", to).map(drop)
}

fn sendmmsg(targets: &str) -> Outcome {
    let sins = targets.split(',').map(|t| sockaddr_v4("sendmmsg", t)).collect::<io::Result<Vec<_>>>()?;
    let payload = *b"flow";
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths); the fields used are set below.
    let mut msgs: Vec<libc::mmsghdr> = sins.iter().map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, sin) in msgs.iter_mut().zip(&sins) {
        m.msg_hdr.msg_name = (sin as *const libc::sockaddr_in).cast_mut().cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    use std::os::fd::AsRawFd;
    // SAFETY: the messages point at addresses and a buffer that outlive the call.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != msgs.len() {
        return Err(io::Error::other(format!("sent {n} of {}", msgs.len())));
    }
    Ok(())
}

/// `raw` takes no target; the others take one.
fn raw(_: &str) -> Outcome {
    // SAFETY: socket(2) with constant arguments; the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: closing the fd just opened.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `peek` takes no target.
fn peek(_: &str) -> Outcome {
    // SAFETY: fork(2); the child only pauses until the signal below ends it.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    if child == 0 {
        loop {
            // SAFETY: pause(2) has no arguments.
            unsafe { libc::pause() };
        }
    }
    let read = std::fs::read(format!("/proc/{child}/environ")).map(drop);
    // SAFETY: ending and reaping the child made above.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    read
}

fn pid(s: &str) -> io::Result<libc::pid_t> {
    s.parse().map_err(|_| invalid(format!("{s:?} is not a pid")))
}

fn peek_pid(target: &str) -> Outcome {
    std::fs::read(format!("/proc/{}/environ", pid(target)?)).map(drop)
}

fn ptrace(target: &str) -> Outcome {
    let pid = pid(target)?;
    // SAFETY: attach, wait for the stop, detach: the tracee continues as before.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

type Action<'a> = (&'a str, &'a str, fn(&str) -> Outcome);

/// The actions as (name, target, what to do), or a usage error.
fn parse(args: &[String]) -> Result<Vec<Action<'_>>, String> {
    let mut actions = Vec::new();
    let mut rest = args;
    while let Some((name, tail)) = rest.split_first() {
        let run: fn(&str) -> Outcome = match name.as_str() {
            "raw" => raw,
            "peek" => peek,
            "peek-pid" => peek_pid,
            "ptrace" => ptrace,
            "read" => read,
            "write" => write,
            "save" => save,
            "exec" => exec,
            "connect" => connect,
            "unix" => unix,
            "dgram" => dgram,
            "tfo" => tfo,
            "sendto" => sendto,
            "sendmmsg" => sendmmsg,
            other => return Err(format!("unknown action {other:?}")),
        };
        rest = tail;
        let target = match name.as_str() {
            "raw" | "peek" => "",
            _ => {
                let (target, tail) = rest.split_first().ok_or_else(|| format!("{name} needs an argument"))?;
                rest = tail;
                target.as_str()
            }
        };
        actions.push((name.as_str(), target, run));
    }
    Ok(actions)
}

/// The program's entry point, called by the C runtime (see the module comment for why).
#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // std reads argv itself on glibc (from its .init_array hook), also without `lang_start`.
    let args: Vec<String> =
        std::env::args_os().skip(1).map(|a: OsString| a.to_string_lossy().into_owned()).collect();
    let actions = match parse(&args) {
        Ok(actions) => actions,
        Err(e) => {
            eprintln!("flow-workload: {e} (see the source's header for the actions)");
            return 64;
        }
    };
    let (mut refused, mut failed) = (false, false);
    for (name, target, run) in actions {
        let sep = if target.is_empty() { "" } else { " " };
        match run(target) {
            Ok(()) => println!("{name}{sep}{target}: ok"),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                println!("{name}{sep}{target}: EPERM");
                refused = true;
            }
            Err(e) => {
                println!("{name}{sep}{target}: error: {e}");
                failed = true;
            }
        }
    }
    let _ = io::stdout().flush();
    match (failed, refused) {
        (true, _) => 2,
        (false, true) => 1,
        (false, false) => 0,
    }
}
