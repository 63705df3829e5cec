//! Ring-buffer records → owned Rust events. Pure: bytes in, `Event` out, so it is unit-tested
//! without a kernel. Layouts come from `abi` (generated from the C header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{abi, dedup::DedupKey};

/// Why a record could not be decoded. Counted as a `malformed` loss, never silently skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the fixed part ({min} bytes)")]
    Short { len: usize, min: usize },
    #[error("record strings claim {claimed} bytes but only {available} follow the fixed part")]
    StringsOverrun { claimed: usize, available: usize },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown name operation {0} in an open record")]
    UnknownNameOp(u32),
}

/// What an open record stands for: an open, or a change to a name, which enforcement decides as a
/// write to that name (`STANCE_OP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameOp {
    Open,
    Unlink,
    RenameFrom,
    RenameTo,
    LinkFrom,
    LinkTo,
    /// truncate(2) by path
    Truncate,
    /// mknod(2) of a FIFO or regular file
    Mknod,
}

impl NameOp {
    pub fn from_abi(op: u32) -> Option<NameOp> {
        Some(match op {
            abi::STANCE_OP_OPEN => NameOp::Open,
            abi::STANCE_OP_UNLINK => NameOp::Unlink,
            abi::STANCE_OP_RENAME_FROM => NameOp::RenameFrom,
            abi::STANCE_OP_RENAME_TO => NameOp::RenameTo,
            abi::STANCE_OP_LINK_FROM => NameOp::LinkFrom,
            abi::STANCE_OP_LINK_TO => NameOp::LinkTo,
            abi::STANCE_OP_TRUNCATE => NameOp::Truncate,
            abi::STANCE_OP_MKNOD => NameOp::Mknod,
            _ => return None,
        })
    }

    /// The token the edge's access text carries after the access bits, for the operations an open's
    /// flags cannot express (a truncate by path is `write,truncate` and an mknod `write,create`, as
    /// the opens that do the same to a file).
    pub const fn token(self) -> Option<&'static str> {
        match self {
            NameOp::Open | NameOp::Truncate | NameOp::Mknod => None,
            NameOp::Unlink => Some("unlink"),
            NameOp::RenameFrom => Some("rename-from"),
            NameOp::RenameTo => Some("rename-to"),
            NameOp::LinkFrom => Some("link-from"),
            NameOp::LinkTo => Some("link-to"),
        }
    }
}

/// One observation, owned, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_BOOTTIME nanoseconds; the pipeline turns it into wall-clock time.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    /// The acting executable's path, resolved in the kernel (None for kernel threads and where the
    /// event does not carry it).
    pub exe: Option<String>,
    /// Device (stat(2) encoding) and inode of the acting executable.
    pub exe_dev: u64,
    pub exe_ino: u64,
    /// Identical events the kernel suppressed on its CPU since the last emission.
    pub repeat: u32,
    /// The key the kernel counts this event's repeats under (None for kinds never suppressed).
    pub dedup: Option<DedupKey>,
    /// STANCE_F_* bits as the kernel set them.
    pub flags: u32,
    /// 0 or -errno.
    pub ret: i32,
    pub body: Body,
}

impl Event {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// Where a connect or datagram went.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// IPv4-mapped IPv6 addresses are already normalised to IPv4 here.
    Inet { addr: IpAddr, port: u16 },
    /// A filesystem path (absolute, or joined with the caller's cwd as resolved in the kernel).
    UnixPath(String),
    /// An abstract-namespace name (without the leading NUL).
    UnixAbstract(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Exec {
        /// The binary as the kernel opened it (bprm->file), not the string the caller passed.
        path: String,
        /// Device in stat(2) encoding.
        dev: u64,
        ino: u64,
        argc: u32,
        argv: Vec<String>,
        parent_exe: Option<String>,
        /// The parent runs in another cgroup (for `stance launch`, the launcher itself).
        parent_outside: bool,
        /// memfd or another file with no path in any mount.
        anonymous: bool,
    },
    Fork {
        child_tgid: u32,
    },
    Exit {
        code: i32,
    },
    Open {
        /// Absolute path. For successful opens it comes from the opened file; for failed ones it
        /// is the caller's string, made absolute with the directory the kernel resolved.
        path: String,
        /// STANCE_ACC_* bits.
        access: u32,
        open_flags: u32,
        syscall_nr: u32,
        resolved: bool,
        /// An open, or the change to a name this record stands for.
        op: NameOp,
    },
    Connect {
        dest: Destination,
        sock_type: u16,
        protocol: u16,
        /// A datagram sent with an explicit destination, without connect.
        send: bool,
    },
    Capable {
        cap: u32,
        granted: bool,
        /// Checked against a user namespace other than the initial one.
        child_userns: bool,
        noaudit: bool,
    },
    /// A ptrace access check on another process.
    Ptrace {
        target_cgroup: u64,
        target_tgid: u32,
        /// PTRACE_MODE_ATTACH (else PTRACE_MODE_READ).
        attach: bool,
        /// PTRACE_MODE_NOAUDIT: a probe by the kernel (e.g. /proc/PID/stat's fields).
        noaudit: bool,
    },
    CgroupMkdir {
        id: u64,
        path: String,
    },
    CgroupRmdir {
        id: u64,
        path: String,
    },
}

/// Read a plain C struct from the front of `bytes`.
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: the length is checked above; T is a bindgen-generated #[repr(C)] struct of integers
    // and arrays, valid for any bit pattern; read_unaligned makes no alignment assumption.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// The kernel's internal device number (MKDEV: major << 20 | minor) in the encoding stat(2) uses,
/// so device numbers from the kernel and from userspace compare equal.
pub fn user_dev(kdev: u32) -> u64 {
    let (major, minor) = (u64::from(kdev >> 20), u64::from(kdev & 0xfffff));
    libc::makedev(major as u32, minor as u32)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Joins a relative path onto the absolute directory the kernel resolved, lexically (only for
/// strings the kernel could not resolve to an object: failed opens, unix socket names).
pub fn join_lexically(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for comp in base.split('/').chain(rel.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

pub fn decode(rec: &[u8]) -> Result<Event, DecodeError> {
    if rec.len() < abi::FIXED_LEN {
        return Err(DecodeError::Short { len: rec.len(), min: abi::FIXED_LEN });
    }
    let hdr: abi::stance_event_header = read(rec);
    let body_bytes = &rec[std::mem::size_of::<abi::stance_event_header>()..abi::FIXED_LEN];
    let mut rest = &rec[abi::FIXED_LEN..];
    let claimed: usize = hdr.len.iter().map(|&l| l as usize).sum();
    if claimed > rest.len() {
        return Err(DecodeError::StringsOverrun { claimed, available: rest.len() });
    }
    let mut strs: [&[u8]; abi::STANCE_NSTR as usize] = [&[]; abi::STANCE_NSTR as usize];
    for (i, &l) in hdr.len.iter().enumerate() {
        let (s, r) = rest.split_at(l as usize);
        strs[i] = s;
        rest = r;
    }
    let exe_s = strs[abi::STANCE_STR_EXE as usize];
    let obj = strs[abi::STANCE_STR_OBJECT as usize];
    let aux = strs[abi::STANCE_STR_AUX as usize];
    let argv = strs[abi::STANCE_STR_ARGV as usize];
    let flags = hdr.flags;
    let has = |f: u32| flags & f != 0;

    let comm_end = hdr.comm.iter().position(|&c| c == 0).unwrap_or(hdr.comm.len());
    let comm_bytes: Vec<u8> = hdr.comm[..comm_end].iter().map(|&c| c as u8).collect();

    let unresolved_path = |obj: &[u8]| {
        let s = text(obj);
        if s.starts_with('/') || aux.is_empty() {
            s
        } else {
            join_lexically(&text(aux), &s)
        }
    };

    let mut exe = if exe_s.is_empty() { None } else { Some(text(exe_s)) };
    let body = match hdr.kind {
        abi::STANCE_EV_EXEC => {
            let b: abi::stance_exec_body = read(body_bytes);
            let path = text(obj);
            exe = Some(path.clone());
            Body::Exec {
                path,
                dev: user_dev(b.dev),
                ino: b.ino,
                argc: b.argc,
                argv: argv.split(|&c| c == 0).filter(|a| !a.is_empty()).map(text).collect(),
                parent_exe: if aux.is_empty() { None } else { Some(text(aux)) },
                parent_outside: has(abi::STANCE_F_PARENT_OUTSIDE),
                anonymous: has(abi::STANCE_F_ANON),
            }
        }
        abi::STANCE_EV_FORK => {
            let b: abi::stance_proc_body = read(body_bytes);
            Body::Fork { child_tgid: b.child_tgid }
        }
        abi::STANCE_EV_EXIT => {
            let b: abi::stance_proc_body = read(body_bytes);
            Body::Exit { code: b.exit_code }
        }
        abi::STANCE_EV_OPEN => {
            let b: abi::stance_open_body = read(body_bytes);
            let resolved = !has(abi::STANCE_F_UNRESOLVED);
            let path = if resolved { text(obj) } else { unresolved_path(obj) };
            Body::Open {
                path,
                access: b.access,
                open_flags: b.open_flags,
                syscall_nr: b.syscall_nr,
                resolved,
                op: NameOp::from_abi(b.op).ok_or(DecodeError::UnknownNameOp(b.op))?,
            }
        }
        abi::STANCE_EV_CONNECT | abi::STANCE_EV_SEND => {
            let b: abi::stance_net_body = read(body_bytes);
            let dest = match b.family as i32 {
                libc::AF_INET => Destination::Inet {
                    addr: IpAddr::V4(Ipv4Addr::new(b.addr[0], b.addr[1], b.addr[2], b.addr[3])),
                    port: b.port,
                },
                libc::AF_INET6 => {
                    let v6 = Ipv6Addr::from(b.addr);
                    let addr = match v6.to_ipv4_mapped() {
                        Some(v4) => IpAddr::V4(v4),
                        None => IpAddr::V6(v6),
                    };
                    Destination::Inet { addr, port: b.port }
                }
                _ if has(abi::STANCE_F_ABSTRACT) => Destination::UnixAbstract(text(obj)),
                _ => Destination::UnixPath(unresolved_path(obj)),
            };
            Body::Connect {
                dest,
                sock_type: b.sock_type,
                protocol: b.protocol,
                send: hdr.kind == abi::STANCE_EV_SEND,
            }
        }
        abi::STANCE_EV_CAPABLE => {
            let b: abi::stance_cap_body = read(body_bytes);
            Body::Capable {
                cap: b.cap,
                granted: b.granted != 0,
                child_userns: has(abi::STANCE_F_CHILD_USERNS),
                // CAP_OPT_NOAUDIT: a probe by the kernel, not a request by the program.
                noaudit: b.opts & 0b10 != 0,
            }
        }
        abi::STANCE_EV_CGROUP_MKDIR | abi::STANCE_EV_CGROUP_RMDIR => {
            let b: abi::stance_cgroup_body = read(body_bytes);
            let path = text(obj);
            if hdr.kind == abi::STANCE_EV_CGROUP_MKDIR {
                Body::CgroupMkdir { id: b.id, path }
            } else {
                Body::CgroupRmdir { id: b.id, path }
            }
        }
        abi::STANCE_EV_PTRACE => {
            let b: abi::stance_ptrace_body = read(body_bytes);
            Body::Ptrace {
                target_cgroup: b.target_cgroup_id,
                target_tgid: b.target_tgid,
                attach: b.mode & 2 != 0,
                noaudit: b.mode & 16 != 0,
            }
        }
        other => return Err(DecodeError::UnknownKind(other)),
    };

    Ok(Event {
        boot_ns: hdr.ts_ns,
        cgroup_id: hdr.cgroup_id,
        pid: hdr.pid,
        tgid: hdr.tgid,
        ppid: hdr.ppid,
        uid: hdr.uid,
        comm: text(&comm_bytes),
        exe,
        exe_dev: user_dev(hdr.exe_dev),
        exe_ino: hdr.exe_ino,
        repeat: hdr.repeat,
        dedup: DedupKey::from_abi(&hdr.dedup),
        flags,
        ret: hdr.ret,
        body,
    })
}

/// Builds records the way the kernel side does; for tests here, in the pipeline and in benches.
pub mod encode {
    use super::abi;

    /// A record of `kind` with the given body bytes and strings (EXE, OBJECT, AUX, ARGV).
    pub fn record(
        kind: u32,
        cgroup_id: u64,
        tgid: u32,
        flags: u32,
        ret: i32,
        body: &[u8],
        strs: [&[u8]; abi::STANCE_NSTR as usize],
    ) -> Vec<u8> {
        let mut hdr = abi::stance_event_header {
            ts_ns: 1_000_000_000,
            cgroup_id,
            kind,
            flags,
            pid: tgid,
            tgid,
            ppid: 1,
            uid: 0,
            ret,
            ..Default::default()
        };
        for (i, s) in strs.iter().enumerate() {
            hdr.len[i] = s.len() as u16;
        }
        for (i, c) in b"test".iter().enumerate() {
            hdr.comm[i] = *c as _;
        }
        let mut out = Vec::with_capacity(abi::FIXED_LEN + 256);
        out.extend_from_slice(as_bytes(&hdr));
        let mut b = [0u8; abi::STANCE_BODY_SIZE as usize];
        b[..body.len()].copy_from_slice(body);
        out.extend_from_slice(&b);
        for s in strs {
            out.extend_from_slice(s);
        }
        out
    }

    /// The bytes of a plain C struct.
    pub fn as_bytes<T: Copy>(v: &T) -> &[u8] {
        // SAFETY: T is a bindgen #[repr(C)] struct of integers (no padding bytes left
        // uninitialised: every abi struct has explicit _pad fields and is built from Default).
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
    }

    /// Writes the dedup key a record passed into its header, as the kernel side does.
    pub fn set_dedup(rec: &mut [u8], key: abi::stance_dedup_key) {
        let at = std::mem::offset_of!(abi::stance_event_header, dedup);
        rec[at..at + std::mem::size_of_val(&key)].copy_from_slice(as_bytes(&key));
    }

    pub fn open(cgroup_id: u64, exe: &str, path: &str, access: u32) -> Vec<u8> {
        name_change(cgroup_id, exe, path, access, abi::STANCE_OP_OPEN)
    }

    /// An open record of a name change (`op` is a `STANCE_OP_*`), or of an open for STANCE_OP_OPEN.
    pub fn name_change(cgroup_id: u64, exe: &str, path: &str, access: u32, op: u32) -> Vec<u8> {
        let body = abi::stance_open_body { access, syscall_nr: 257, op, ..Default::default() };
        record(
            abi::STANCE_EV_OPEN,
            cgroup_id,
            42,
            0,
            0,
            as_bytes(&body),
            [exe.as_bytes(), path.as_bytes(), b"", b""],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{encode::*, *};

    #[test]
    fn open_roundtrip() {
        let rec = open(7, "/usr/bin/cat", "/etc/hostname", abi::STANCE_ACC_READ);
        let ev = decode(&rec).unwrap();
        assert_eq!(ev.cgroup_id, 7);
        assert_eq!(ev.exe.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(ev.comm, "test");
        match ev.body {
            Body::Open { path, access, resolved, .. } => {
                assert_eq!(path, "/etc/hostname");
                assert_eq!(access, abi::STANCE_ACC_READ);
                assert!(resolved);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_dedup_key_comes_through_and_zero_means_none() {
        let mut rec = open(7, "/usr/bin/cat", "/etc/hostname", abi::STANCE_ACC_READ);
        assert_eq!(decode(&rec).unwrap().dedup, None);
        let key = abi::stance_dedup_key {
            cgroup_id: 7,
            obj_a: 12,
            obj_b: 0xffff_8880_0000_1000,
            exe_ino: 99,
            exe_dev: 3,
            kind_bits: abi::STANCE_EV_OPEN << 16 | abi::STANCE_ACC_READ,
        };
        set_dedup(&mut rec, key);
        assert_eq!(decode(&rec).unwrap().dedup, DedupKey::from_abi(&key));
        assert_eq!(decode(&rec).unwrap().dedup.unwrap().to_abi().obj_b, key.obj_b);
    }

    #[test]
    fn failed_relative_open_is_joined_with_kernel_cwd() {
        let body = abi::stance_open_body { access: abi::STANCE_ACC_READ, ..Default::default() };
        let rec = record(
            abi::STANCE_EV_OPEN,
            1,
            1,
            abi::STANCE_F_UNRESOLVED,
            -2,
            as_bytes(&body),
            [b"/bin/cat", b"../x/./missing", b"/etc/ssl", b""],
        );
        let ev = decode(&rec).unwrap();
        assert_eq!(ev.ret, -2);
        assert!(matches!(ev.body, Body::Open { ref path, resolved: false, .. } if path == "/etc/x/missing"));
    }

    #[test]
    fn name_changes_decode_with_their_operation_and_unknown_ones_are_errors() {
        let rec = name_change(
            7,
            "/usr/bin/redis",
            "/data/dump.rdb",
            abi::STANCE_ACC_WRITE,
            abi::STANCE_OP_RENAME_TO,
        );
        match decode(&rec).unwrap().body {
            Body::Open { path, access, op, .. } => {
                assert_eq!(path, "/data/dump.rdb");
                assert_eq!(access, abi::STANCE_ACC_WRITE);
                assert_eq!(op, NameOp::RenameTo);
            }
            other => panic!("{other:?}"),
        }
        for op in 0..abi::STANCE_OP_NR {
            assert!(NameOp::from_abi(op).is_some(), "op {op} has no NameOp");
        }
        let bad = name_change(7, "/bin/x", "/y", abi::STANCE_ACC_WRITE, abi::STANCE_OP_NR);
        assert_eq!(decode(&bad), Err(DecodeError::UnknownNameOp(abi::STANCE_OP_NR)));
    }

    #[test]
    fn ipv4_mapped_is_normalised() {
        let mut nb = abi::stance_net_body {
            family: libc::AF_INET6 as u16,
            port: 8080,
            sock_type: 1,
            protocol: 6,
            ..Default::default()
        };
        nb.addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x7f00, 0x0002).octets();
        let rec =
            record(abi::STANCE_EV_CONNECT, 1, 1, 0, 0, as_bytes(&nb), [b"/usr/bin/curl", b"", b"", b""]);
        match decode(&rec).unwrap().body {
            Body::Connect { dest: Destination::Inet { addr, port }, send: false, .. } => {
                assert_eq!(addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
                assert_eq!(port, 8080);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unix_abstract_and_relative() {
        let nb = abi::stance_net_body { family: libc::AF_UNIX as u16, sock_type: 1, ..Default::default() };
        let rec = record(
            abi::STANCE_EV_CONNECT,
            1,
            1,
            abi::STANCE_F_UNRESOLVED | abi::STANCE_F_ABSTRACT,
            0,
            as_bytes(&nb),
            [b"", b"my-abstract", b"", b""],
        );
        assert!(
            matches!(decode(&rec).unwrap().body, Body::Connect { dest: Destination::UnixAbstract(ref n), .. } if n == "my-abstract")
        );
        let rec = record(
            abi::STANCE_EV_CONNECT,
            1,
            1,
            abi::STANCE_F_UNRESOLVED,
            0,
            as_bytes(&nb),
            [b"", b"run/sock", b"/var", b""],
        );
        assert!(
            matches!(decode(&rec).unwrap().body, Body::Connect { dest: Destination::UnixPath(ref p), .. } if p == "/var/run/sock")
        );
    }

    #[test]
    fn exec_with_argv_and_parent() {
        let body = abi::stance_exec_body { ino: 99, dev: 3, argc: 2, ..Default::default() };
        let rec = record(
            abi::STANCE_EV_EXEC,
            5,
            10,
            abi::STANCE_F_PARENT_OUTSIDE,
            0,
            as_bytes(&body),
            [b"", b"/usr/bin/cat", b"/usr/bin/bash", b"cat\0/etc/hostname\0"],
        );
        let ev = decode(&rec).unwrap();
        assert_eq!(ev.exe.as_deref(), Some("/usr/bin/cat"));
        match ev.body {
            Body::Exec { path, argv, parent_exe, parent_outside, ino, .. } => {
                assert_eq!(path, "/usr/bin/cat");
                assert_eq!(argv, vec!["cat", "/etc/hostname"]);
                assert_eq!(parent_exe.as_deref(), Some("/usr/bin/bash"));
                assert!(parent_outside);
                assert_eq!(ino, 99);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_records_are_errors() {
        assert!(matches!(decode(&[0u8; 10]), Err(DecodeError::Short { .. })));
        let mut rec = open(1, "/bin/x", "/etc/x", 1);
        rec.truncate(rec.len() - 3);
        assert!(matches!(decode(&rec), Err(DecodeError::StringsOverrun { .. })));
        let rec = record(99, 1, 1, 0, 0, &[], [b"", b"", b"", b""]);
        assert_eq!(decode(&rec), Err(DecodeError::UnknownKind(99)));
    }

    #[test]
    fn join_lexically_cases() {
        assert_eq!(join_lexically("/a/b", "c"), "/a/b/c");
        assert_eq!(join_lexically("/a/b", "../../../c"), "/c");
        assert_eq!(join_lexically("/", "./x"), "/x");
    }
}
