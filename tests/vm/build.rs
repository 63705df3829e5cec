//! Compiles the BPF-LSM canary (`canary/canary.bpf.c`) into `OUT_DIR` so `canary-loader` can embed it.
//!
//! The BPF toolchain (clang-19, bpftool, libbpf-dev headers, the host's `/sys/kernel/btf/vmlinux`) is
//! optional for building the crate: when it is absent, `cargo check`/clippy still work, the embedded
//! object is empty, and `canary-loader` refuses to run with a message saying what to install. When the
//! toolchain is present, a compile error fails the build.

use std::{
    env,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const CLANG: &str = "clang-19";
const BPFTOOL: &str = "bpftool";
const HOST_BTF: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    println!("cargo:rerun-if-changed=canary/canary.bpf.c");
    println!("cargo:rerun-if-changed=canary/canary.h");
    // A path that does not exist makes cargo rerun this script on every build, so installing the
    // toolchain after a stub build is picked up without `cargo clean`.
    println!("cargo:rerun-if-changed=/usr/bin/{CLANG}");
    println!("cargo:rerun-if-changed=/usr/sbin/{BPFTOOL}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("canary.bpf.o");
    if let Err(missing) = compile(&out_dir, &object) {
        println!("cargo:warning=BPF canary not built: {missing}; canary-loader will refuse to run");
        std::fs::write(&object, []).expect("write stub canary object");
    }
}

/// Builds the object; `Err` only names a missing piece of the toolchain.
fn compile(out_dir: &Path, object: &Path) -> Result<(), String> {
    if !Path::new(HOST_BTF).exists() {
        return Err(format!("{HOST_BTF} is missing"));
    }
    let dump = run(Command::new(BPFTOOL).args(["btf", "dump", "file", HOST_BTF, "format", "c"]))?;
    std::fs::write(out_dir.join("vmlinux.h"), dump.stdout).expect("write vmlinux.h");

    run(Command::new(CLANG)
        .args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror", "-I"])
        .arg(out_dir)
        .args(["-c", "canary/canary.bpf.c", "-o"])
        .arg(object))?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match cmd.output() {
        Err(e) if e.kind() == ErrorKind::NotFound => Err(format!("{program} is not installed")),
        Err(e) => panic!("cannot run {program}: {e}"),
        Ok(out) if !out.status.success() => {
            panic!("{program} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr))
        }
        Ok(out) => Ok(out),
    }
}
