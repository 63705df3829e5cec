//! `enforce-probe ACTION ARGS...`: one thing a workload might try, through a chosen kernel entry
//! point, for the enforcement scenarios. Prints `ok` (exit 0), `EPERM` (exit 1) or another error
//! (exit 2); usage errors exit 64.
//!
//! Actions:
//!   open PATH [r|w|rw|creat|trunc]   open(2), then read or write one byte
//!   deep-make DIR SEG N              mkdir+chdir SEG N times below DIR (relative steps: the whole
//!                                    path may exceed PATH_MAX), then create the file `f` there
//!   deep-open DIR SEG N              chdir the same way, then open `f` for reading
//!   openat2 PATH                     openat2(2) for reading
//!   uring-open PATH                  io_uring IORING_OP_OPENAT for reading (raw syscalls)
//!   uring-connect ADDR PORT          io_uring IORING_OP_CONNECT (TCP)
//!   uring-rename FROM TO             io_uring IORING_OP_RENAMEAT
//!   uring-sendmsg ADDR PORT          io_uring IORING_OP_SENDMSG of a UDP datagram to ADDR (no connect)
//!   uring-sendto ADDR PORT           io_uring IORING_OP_SEND with a destination (UDP, no connect)
//!   rename FROM TO | link FROM TO    rename(2), link(2)
//!   unlink PATH | truncate PATH      unlink(2), truncate(2) to 0 bytes by path
//!   mkfifo PATH                      mknod(2) of a FIFO
//!   exec PATH                        execve(PATH, ["probe", "true"])
//!   execveat DIR NAME                execveat(dirfd, NAME)
//!   fexecve PATH                     execveat(fd, "", AT_EMPTY_PATH)
//!   memfd-exec SRC NAME [ACTION...]  copy SRC into memfd NAME, execveat(memfd, "", AT_EMPTY_PATH) with
//!                                    argv ["probe", ACTION...] (default `true`): the memfd then acts
//!   connect ADDR PORT                TCP connect (ADDR may be IPv6, e.g. ::ffff:127.0.0.1)
//!   udp-send ADDR PORT               sendto without connect
//!   udp-sendmsg-compat-flag ADDR PORT
//!                                    sendmsg(2) to ADDR with MSG_CMSG_COMPAT set by a 64-bit caller,
//!                                    which the kernel refuses (EINVAL); its message is in the
//!                                    64-bit layout all the same
//!   unix-connect PATH|@NAME          unix stream connect
//!   unix-sendto PATH|@NAME           one datagram from an unbound, unconnected unix datagram socket
//!   unix-dgram-later PATH|@NAME FILE connect a unix datagram socket, print `connected`, wait until
//!                                    FILE exists, then send one datagram on it
//!   raw-socket                       socket(AF_INET, SOCK_RAW, IPPROTO_ICMP): CAP_NET_RAW
//!   chown PATH UID                   chown(2) to another owner: CAP_CHOWN
//!   ptrace PID                       PTRACE_ATTACH (then detach)
//!   serve-tcp PORT | serve-unix PATH|@NAME   accept connections until killed
//!   serve-unix-dgram PATH|@NAME      receive datagrams until killed
//!   flood-open PATH N                N opens whatever each returns; prints `ok=A eperm=B other=C`
//!   bench-open PATH N                N × (open + close), prints `ns-per-op: X`
//!   bench-exec PATH N                N × (fork + exec PATH true + wait), prints `ns-per-op: X`
//!   bench-ab open|exec TARGET N ROUNDS CG_A CG_B
//!                                    ROUNDS × (N ops in CG_A, N ops in CG_B), each batch in a child
//!                                    moved there (interleaved A/B); per-round ns, median ratio
//!   true                             exit 0 (the target of the exec actions)

use std::{
    ffi::{CString, OsString},
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::net::{SocketAddr as UnixAddr, UnixDatagram, UnixListener, UnixStream},
    process::ExitCode,
    time::Instant,
};

type Outcome = io::Result<()>;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("argument without NUL bytes")
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(last_err())
    } else {
        Ok(rc)
    }
}

/// The argv and envp every exec action uses: the target (this program's copy) runs `true`.
fn exec_args() -> ([*const libc::c_char; 3], [*const libc::c_char; 1], [CString; 2]) {
    let strs = [cstr("probe"), cstr("true")];
    let argv = [strs[0].as_ptr(), strs[1].as_ptr(), std::ptr::null()];
    (argv, [std::ptr::null()], strs)
}

fn open(path: &str, how: &str) -> Outcome {
    let flags = match how {
        "r" => libc::O_RDONLY,
        "w" => libc::O_WRONLY,
        "rw" => libc::O_RDWR,
        "creat" => libc::O_WRONLY | libc::O_CREAT,
        "trunc" => libc::O_WRONLY | libc::O_TRUNC,
        _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "mode is r, w, rw, creat or trunc")),
    };
    let p = cstr(path);
    // SAFETY: a valid NUL-terminated path; the fd is closed below.
    let fd = check(unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644) } as libc::c_long)? as i32;
    // SAFETY: fd is ours; one byte to and from a stack buffer.
    unsafe {
        let mut b = [0u8; 1];
        if how == "r" || how == "rw" {
            libc::read(fd, b.as_mut_ptr().cast(), 1);
        }
        libc::close(fd);
    }
    Ok(())
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(path: &str) -> Outcome {
    let p = cstr(path);
    let how = OpenHow { flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64, mode: 0, resolve: 0 };
    // SAFETY: openat2 with a valid path and open_how of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: closing the fd just opened.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// io_uring without liburing: one ring of one entry, one IORING_OP_OPENAT, one completion.
/// A socket of `to`'s family and `kind` (SOCK_STREAM, SOCK_DGRAM), and `to` as a sockaddr.
fn socket_for(to: SocketAddr, kind: i32) -> io::Result<(i32, libc::sockaddr_storage, usize)> {
    // SAFETY: socket(2) with constant arguments; the caller closes the fd.
    let fd = check(unsafe {
        let family = if to.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        libc::socket(family, kind | libc::SOCK_CLOEXEC, 0)
    } as libc::c_long)? as i32;
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sa) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sa) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    Ok((fd, storage, len))
}

/// One datagram of one byte to `to`, on an unconnected UDP socket of its family, with `to` as the
/// msghdr's name: `send` gets the socket, the message, the address and its length, and the byte.
/// The socket is closed afterwards.
fn with_dgram_msg<T>(
    to: SocketAddr,
    send: impl FnOnce(i32, &libc::msghdr, &libc::sockaddr_storage, usize, &[u8; 1]) -> io::Result<T>,
) -> io::Result<T> {
    let (fd, mut storage, len) = socket_for(to, libc::SOCK_DGRAM)?;
    let mut byte = *b"x";
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: an all-zero msghdr is a valid value; its pointers are set to live locals below.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    hdr.msg_namelen = len as u32;
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    let res = send(fd, &hdr, &storage, len, &byte);
    // SAFETY: closing the socket made above.
    unsafe { libc::close(fd) };
    res
}

mod uring {
    use super::*;

    #[repr(C)]
    #[derive(Default)]
    struct SqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        flags: u32,
        dropped: u32,
        array: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct CqOffsets {
        head: u32,
        tail: u32,
        ring_mask: u32,
        ring_entries: u32,
        overflow: u32,
        cqes: u32,
        flags: u32,
        resv1: u32,
        user_addr: u64,
    }

    #[repr(C)]
    #[derive(Default)]
    struct Params {
        sq_entries: u32,
        cq_entries: u32,
        flags: u32,
        sq_thread_cpu: u32,
        sq_thread_idle: u32,
        features: u32,
        wq_fd: u32,
        resv: [u32; 3],
        sq_off: SqOffsets,
        cq_off: CqOffsets,
    }

    #[repr(C)]
    struct Sqe {
        opcode: u8,
        flags: u8,
        ioprio: u16,
        fd: i32,
        off: u64,
        addr: u64,
        len: u32,
        open_flags: u32,
        user_data: u64,
        pad: [u64; 3],
    }

    #[repr(C)]
    struct Cqe {
        user_data: u64,
        res: i32,
        flags: u32,
    }

    const IORING_OP_SENDMSG: u8 = 9;
    const IORING_OP_CONNECT: u8 = 16;
    const IORING_OP_SEND: u8 = 26;
    const IORING_OP_OPENAT: u8 = 18;
    const IORING_OP_RENAMEAT: u8 = 35;
    const IORING_OFF_SQ_RING: i64 = 0;
    const IORING_OFF_CQ_RING: i64 = 0x800_0000;
    const IORING_OFF_SQES: i64 = 0x1000_0000;
    const IORING_ENTER_GETEVENTS: u32 = 1;

    unsafe fn map(fd: i32, len: usize, off: i64) -> io::Result<*mut u8> {
        // SAFETY: the caller passes a ring fd and a length/offset from io_uring_setup's params.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                off,
            )
        };
        if p == libc::MAP_FAILED {
            Err(last_err())
        } else {
            Ok(p.cast())
        }
    }

    /// Submits one SQE on a fresh ring of one entry and returns its completion's result.
    fn submit_one(sqe: Sqe) -> io::Result<i32> {
        let mut params = Params::default();
        // SAFETY: every pointer below comes from mmaps of the ring fd at the offsets and sizes the
        // kernel reported in `params`; the ring has one entry, used once; volatile accesses stand in
        // for the atomics liburing uses (single-threaded, and io_uring_enter is a full barrier).
        unsafe {
            let fd = check(libc::syscall(libc::SYS_io_uring_setup, 1u32, &mut params as *mut Params))? as i32;
            let sq = map(fd, (params.sq_off.array + params.sq_entries * 4) as usize, IORING_OFF_SQ_RING)?;
            let cq = map(fd, (params.cq_off.cqes + params.cq_entries * 16) as usize, IORING_OFF_CQ_RING)?;
            let sqes = map(fd, params.sq_entries as usize * 64, IORING_OFF_SQES)?.cast::<Sqe>();
            sqes.write(sqe);
            let tail = sq.add(params.sq_off.tail as usize).cast::<u32>();
            let mask = *sq.add(params.sq_off.ring_mask as usize).cast::<u32>();
            let t = tail.read_volatile();
            sq.add(params.sq_off.array as usize).cast::<u32>().add((t & mask) as usize).write_volatile(0);
            tail.write_volatile(t.wrapping_add(1));
            check(libc::syscall(
                libc::SYS_io_uring_enter,
                fd,
                1u32,
                1u32,
                IORING_ENTER_GETEVENTS,
                0usize,
                0usize,
            ))?;
            let head = cq.add(params.cq_off.head as usize).cast::<u32>();
            let cmask = *cq.add(params.cq_off.ring_mask as usize).cast::<u32>();
            let h = head.read_volatile();
            let cqe =
                cq.add(params.cq_off.cqes as usize).cast::<Cqe>().add((h & cmask) as usize).read_volatile();
            head.write_volatile(h.wrapping_add(1));
            libc::close(fd);
            if cqe.user_data != 7 {
                return Err(io::Error::other("unexpected completion"));
            }
            if cqe.res < 0 {
                return Err(io::Error::from_raw_os_error(-cqe.res));
            }
            Ok(cqe.res)
        }
    }

    fn sqe(opcode: u8, fd: i32, addr: u64, off: u64, open_flags: u32) -> Sqe {
        Sqe { opcode, flags: 0, ioprio: 0, fd, off, addr, len: 0, open_flags, user_data: 7, pad: [0; 3] }
    }

    pub fn open(path: &str) -> Outcome {
        let p = cstr(path);
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u32;
        let fd = submit_one(sqe(IORING_OP_OPENAT, libc::AT_FDCWD, p.as_ptr() as u64, 0, flags))?;
        // SAFETY: closing the file the ring opened for us.
        unsafe { libc::close(fd) };
        Ok(())
    }

    /// A rename through IORING_OP_RENAMEAT: the old directory fd in `fd`, the old path in `addr`,
    /// the new directory fd in `len`, the new path in `addr2` (`off`), the flags in `rename_flags`.
    pub fn rename(from: &str, to: &str) -> Outcome {
        let (f, t) = (cstr(from), cstr(to));
        let mut e = sqe(IORING_OP_RENAMEAT, libc::AT_FDCWD, f.as_ptr() as u64, t.as_ptr() as u64, 0);
        e.len = libc::AT_FDCWD as u32;
        submit_one(e).map(drop)
    }

    /// A TCP connect through IORING_OP_CONNECT (the address length travels in `off`).
    pub fn connect(to: SocketAddr) -> Outcome {
        let (fd, storage, len) = socket_for(to, libc::SOCK_STREAM)?;
        let res = submit_one(sqe(IORING_OP_CONNECT, fd, &storage as *const _ as u64, len as u64, 0));
        // SAFETY: closing the socket made above.
        unsafe { libc::close(fd) };
        res.map(drop)
    }

    /// One UDP datagram to `to` on an unconnected socket: IORING_OP_SENDMSG with the destination as
    /// the msghdr's name, or IORING_OP_SEND with it in `addr2` (`off`) and its length in the SQE's
    /// `addr_len` (bytes 44-45, the low half of `pad[0]`'s upper word).
    pub fn sendto(to: SocketAddr, msg: bool) -> Outcome {
        with_dgram_msg(to, |fd, hdr, storage, len, byte| {
            let e = if msg {
                let mut e = sqe(IORING_OP_SENDMSG, fd, hdr as *const _ as u64, 0, 0);
                e.len = 1;
                e
            } else {
                let mut e = sqe(IORING_OP_SEND, fd, byte.as_ptr() as u64, storage as *const _ as u64, 0);
                e.len = 1;
                e.pad[0] = (len as u64) << 32;
                e
            };
            submit_one(e)
        })
        .map(drop)
    }
}

fn exec(path: &str) -> Outcome {
    let p = cstr(path);
    let (argv, envp, _keep) = exec_args();
    // SAFETY: valid NUL-terminated path and NULL-terminated argv/envp; returns only on failure.
    unsafe { libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(last_err())
}

fn execveat(dirfd: i32, name: &str, flags: i32) -> Outcome {
    let n = cstr(name);
    let (argv, envp, _keep) = exec_args();
    // SAFETY: as for execve; dirfd is an open descriptor.
    unsafe { libc::syscall(libc::SYS_execveat, dirfd, n.as_ptr(), argv.as_ptr(), envp.as_ptr(), flags) };
    Err(last_err())
}

fn open_fd(path: &str, flags: i32) -> io::Result<i32> {
    let p = cstr(path);
    // SAFETY: a valid NUL-terminated path.
    Ok(check(unsafe { libc::open(p.as_ptr(), flags) } as libc::c_long)? as i32)
}

fn memfd_exec(src: &str, name: &str, action: &[&str]) -> Outcome {
    let bytes = std::fs::read(src)?;
    let n = cstr(name);
    // SAFETY: memfd_create with a valid name; the fd is written and exec'ed below.
    let fd = check(unsafe { libc::memfd_create(n.as_ptr(), libc::MFD_CLOEXEC) } as libc::c_long)? as i32;
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: writing from a live buffer of the given length.
        let w = check(
            unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) } as libc::c_long
        )?;
        off += w as usize;
    }
    if action.is_empty() {
        return execveat(fd, "", libc::AT_EMPTY_PATH);
    }
    let strs: Vec<CString> = std::iter::once("probe").chain(action.iter().copied()).map(cstr).collect();
    let mut argv: Vec<*const libc::c_char> = strs.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp = [std::ptr::null::<libc::c_char>()];
    let empty = cstr("");
    // SAFETY: NUL-terminated strings that outlive the call, NULL-terminated argv and envp; fd is the
    // memfd written above. Returns only on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(last_err())
}

fn addr(host: &str, port: &str) -> io::Result<SocketAddr> {
    let ip: IpAddr = host.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad address"))?;
    let port: u16 = port.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad port"))?;
    Ok(SocketAddr::new(ip, port))
}

fn unix_addr(name: &str) -> io::Result<UnixAddr> {
    use std::os::linux::net::SocketAddrExt;
    match name.strip_prefix('@') {
        Some(abs) => UnixAddr::from_abstract_name(abs.as_bytes()),
        None => UnixAddr::from_pathname(name),
    }
}

fn raw_socket() -> Outcome {
    // SAFETY: socket(2) with constant arguments; closed below.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) } as libc::c_long)?;
    // SAFETY: closing the socket just created.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn chown(path: &str, uid: &str) -> Outcome {
    let p = cstr(path);
    let uid: u32 = uid.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad uid"))?;
    // SAFETY: a valid path; gid -1 leaves the group.
    check(unsafe { libc::chown(p.as_ptr(), uid, u32::MAX) } as libc::c_long)?;
    Ok(())
}

fn ptrace(pid: &str) -> Outcome {
    let pid: i32 = pid.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad pid"))?;
    // SAFETY: attach, wait for the stop, detach: the tracee continues as before.
    unsafe {
        check(libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0))?;
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0);
    }
    Ok(())
}

fn serve_tcp(port: &str) -> Outcome {
    let l = TcpListener::bind(addr("127.0.0.1", port)?)?;
    println!("listening");
    io::stdout().flush()?;
    for s in l.incoming() {
        drop(s);
    }
    Ok(())
}

fn unix_dgram_later(name: &str, go: &str) -> Outcome {
    let s = UnixDatagram::unbound()?;
    s.connect_addr(&unix_addr(name)?)?;
    println!("connected");
    io::stdout().flush()?;
    while !std::path::Path::new(go).exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    s.send(b"x").map(drop)
}

fn serve_unix_dgram(name: &str) -> Outcome {
    let s = UnixDatagram::bind_addr(&unix_addr(name)?)?;
    println!("listening");
    io::stdout().flush()?;
    let mut buf = [0u8; 64];
    loop {
        s.recv(&mut buf)?;
    }
}

fn serve_unix(name: &str) -> Outcome {
    let l = UnixListener::bind_addr(&unix_addr(name)?)?;
    println!("listening");
    io::stdout().flush()?;
    for s in l.incoming() {
        let _ = s.map(|mut s| s.read(&mut [0u8; 1]));
    }
    Ok(())
}

/// Walks (or, with `make`, builds) DIR/SEG/SEG/... N levels deep by relative steps.
fn deep(dir: &str, seg: &str, n: &str, make: bool) -> Outcome {
    let n: u32 = n.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad depth"))?;
    std::env::set_current_dir(dir)?;
    for _ in 0..n {
        if make {
            match std::fs::create_dir(seg) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        std::env::set_current_dir(seg)?;
    }
    if make {
        std::fs::write("f", b"deep\n")?;
        return Ok(());
    }
    open("f", "r")
}

fn flood_open(path: &str, n: &str) -> Outcome {
    let n: u32 = n.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad count"))?;
    let (mut ok, mut eperm, mut other) = (0u32, 0u32, 0u32);
    for _ in 0..n {
        match open(path, "r") {
            Ok(()) => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => eperm += 1,
            Err(_) => other += 1,
        }
    }
    print!("ok={ok} eperm={eperm} other={other} ");
    Ok(())
}

fn bench(n: &str, mut op: impl FnMut() -> Outcome) -> Outcome {
    let n: u32 = n.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad count"))?;
    let t = Instant::now();
    for _ in 0..n {
        op()?;
    }
    println!("ns-per-op: {}", t.elapsed().as_nanos() / u128::from(n.max(1)));
    Ok(())
}

fn bench_exec(path: &str) -> Outcome {
    let p = cstr(path);
    let (argv, envp, _keep) = exec_args();
    // SAFETY: the child only execs (or _exits); the parent waits for it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(last_err());
        }
        if pid == 0 {
            libc::execve(p.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
            return Err(io::Error::other(format!("child status {st}")));
        }
    }
    Ok(())
}

/// N operations timed inside cgroup `cg`, in a forked child that this process (outside every
/// workload) moves there: a process of an enforced workload may not move itself out of it.
fn batch_in(cg: &str, n: u32, op: &mut dyn FnMut() -> Outcome) -> io::Result<f64> {
    let mut go = [0i32; 2];
    let mut result = [0i32; 2];
    // SAFETY: pipes into arrays of two fds; fork of this single-threaded process; the child only
    // reads, runs the ops, writes 8 bytes and _exits.
    unsafe {
        if libc::pipe(go.as_mut_ptr()) != 0 || libc::pipe(result.as_mut_ptr()) != 0 {
            return Err(last_err());
        }
        let pid = libc::fork();
        if pid < 0 {
            return Err(last_err());
        }
        if pid == 0 {
            let mut b = [0u8; 1];
            libc::read(go[0], b.as_mut_ptr().cast(), 1);
            let t = Instant::now();
            let mut failed = false;
            for _ in 0..n {
                failed |= op().is_err();
            }
            let ns: f64 = if failed { -1.0 } else { t.elapsed().as_nanos() as f64 / f64::from(n.max(1)) };
            libc::write(result[1], ns.to_le_bytes().as_ptr().cast(), 8);
            libc::_exit(0);
        }
        let moved = std::fs::write(format!("{cg}/cgroup.procs"), pid.to_string());
        libc::write(go[1], b"g".as_ptr().cast(), 1);
        let mut buf = [0u8; 8];
        let got = libc::read(result[0], buf.as_mut_ptr().cast(), 8);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        for fd in go.into_iter().chain(result) {
            libc::close(fd);
        }
        moved?;
        let ns = f64::from_le_bytes(buf);
        if got != 8 || ns < 0.0 {
            return Err(io::Error::other(format!("an operation failed inside {cg}")));
        }
        Ok(ns)
    }
}

fn bench_ab(kind: &str, target: &str, n: &str, rounds: &str, a: &str, b: &str) -> Outcome {
    let bad = |what| io::Error::new(io::ErrorKind::InvalidInput, what);
    let n: u32 = n.parse().map_err(|_| bad("bad count"))?;
    let rounds: u32 = rounds.parse().map_err(|_| bad("bad rounds"))?;
    let mut op: Box<dyn FnMut() -> Outcome> = match kind {
        "open" => Box::new(|| open(target, "r")),
        "exec" => Box::new(|| bench_exec(target)),
        _ => return Err(bad("kind is open or exec")),
    };
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let (x, y) = (batch_in(a, n, &mut op)?, batch_in(b, n, &mut op)?);
        println!("round {r}: a {x:.0} ns  b {y:.0} ns  ratio {:.3}", x / y);
        ratios.push(x / y);
    }
    ratios.sort_by(|p, q| p.total_cmp(q));
    println!("ratio-median: {:.3}", ratios.get(ratios.len() / 2).copied().unwrap_or(f64::NAN));
    Ok(())
}

fn act(args: &[String]) -> Option<Outcome> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Some(match a.as_slice() {
        ["true"] => Ok(()),
        ["open", p] => open(p, "r"),
        ["open", p, how] => open(p, how),
        ["deep-make", dir, seg, n] => deep(dir, seg, n, true),
        ["deep-open", dir, seg, n] => deep(dir, seg, n, false),
        ["openat2", p] => openat2(p),
        ["rename", from, to] => std::fs::rename(from, to),
        ["link", from, to] => std::fs::hard_link(from, to),
        ["unlink", p] => std::fs::remove_file(p),
        ["truncate", p] => {
            let c = cstr(p);
            // SAFETY: c is a valid NUL-terminated path for the duration of the call.
            check(unsafe { libc::truncate(c.as_ptr(), 0) }.into()).map(drop)
        }
        ["mkfifo", p] => {
            let c = cstr(p);
            // SAFETY: as above.
            check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }.into()).map(drop)
        }
        ["uring-open", p] => uring::open(p),
        ["uring-connect", h, p] => addr(h, p).and_then(uring::connect),
        ["uring-rename", from, to] => uring::rename(from, to),
        ["uring-sendmsg", h, p] => addr(h, p).and_then(|a| uring::sendto(a, true)),
        ["uring-sendto", h, p] => addr(h, p).and_then(|a| uring::sendto(a, false)),
        ["exec", p] => exec(p),
        ["execveat", dir, name] => {
            open_fd(dir, libc::O_RDONLY | libc::O_DIRECTORY).and_then(|fd| execveat(fd, name, 0))
        }
        ["fexecve", p] => {
            open_fd(p, libc::O_RDONLY | libc::O_CLOEXEC).and_then(|fd| execveat(fd, "", libc::AT_EMPTY_PATH))
        }
        ["memfd-exec", src, name, action @ ..] => memfd_exec(src, name, action),
        ["connect", h, p] => addr(h, p).and_then(|a| TcpStream::connect(a).map(drop)),
        ["udp-send", h, p] => addr(h, p).and_then(|a| {
            let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            UdpSocket::bind(bind)?.send_to(b"x", a).map(drop)
        }),
        ["udp-sendmsg-compat-flag", h, p] => addr(h, p).and_then(sendmsg_compat_flag),
        ["unix-connect", n] => unix_addr(n).and_then(|a| UnixStream::connect_addr(&a).map(drop)),
        ["unix-dgram-later", n, go] => unix_dgram_later(n, go),
        ["unix-sendto", n] => {
            unix_addr(n).and_then(|a| UnixDatagram::unbound()?.send_to_addr(b"x", &a).map(drop))
        }
        ["raw-socket"] => raw_socket(),
        ["chown", p, uid] => chown(p, uid),
        ["ptrace", pid] => ptrace(pid),
        ["serve-tcp", port] => serve_tcp(port),
        ["serve-unix", n] => serve_unix(n),
        ["serve-unix-dgram", n] => serve_unix_dgram(n),
        ["flood-open", p, n] => flood_open(p, n),
        ["bench-open", p, n] => bench(n, || open(p, "r")),
        ["bench-exec", p, n] => bench(n, || bench_exec(p)),
        ["bench-ab", kind, target, n, rounds, a, b] => bench_ab(kind, target, n, rounds, a, b),
        _ => return None,
    })
}

/// A 64-bit sendmsg that sets MSG_CMSG_COMPAT, the kernel's own mark of a 32-bit caller's call.
fn sendmsg_compat_flag(to: SocketAddr) -> Outcome {
    const MSG_CMSG_COMPAT: libc::c_int = 0x8000_0000_u32 as libc::c_int;
    with_dgram_msg(to, |fd, hdr, _, _, _| {
        // SAFETY: the message points at an address and a buffer that outlive the call.
        check(unsafe { libc::sendmsg(fd, hdr, MSG_CMSG_COMPAT) } as libc::c_long)
    })
    .map(drop)
}

fn main() -> ExitCode {
    let args: Vec<String> =
        std::env::args_os().skip(1).map(|a: OsString| a.to_string_lossy().into_owned()).collect();
    match act(&args) {
        None => {
            eprintln!("usage: enforce-probe ACTION ARGS... (see the source's header)");
            ExitCode::from(64)
        }
        Some(Ok(())) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Some(Err(e)) if e.raw_os_error() == Some(libc::EPERM) => {
            println!("EPERM");
            ExitCode::from(1)
        }
        Some(Err(e)) => {
            println!("error: {e}");
            ExitCode::from(2)
        }
    }
}
