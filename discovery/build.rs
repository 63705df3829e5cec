//! Builds the kernel side: every `probes-ebpf/src/*.bpf.c` is compiled with clang-19 against a
//! `vmlinux.h` made from this machine's BTF, into OUT_DIR, where `probes` embeds it with
//! `aya::include_bytes_aligned!`. The event layouts in `probes-ebpf/include/stance_events.h` and the
//! enforcement maps and records in `probes-ebpf/include/stance_enforce.h` are turned into Rust with
//! bindgen, and compared with the committed copies in `src/probes/abi_generated.rs` and
//! `src/enforce/abi_generated.rs` so that a build without the toolchain stays correct.
//!
//! Skip switch: `STANCE_SKIP_BPF=1` builds without clang/bpftool/libclang (for `cargo check` and
//! clippy on machines without the BPF toolchain). The binary then carries no BPF objects and
//! `stance run` says so and exits; `make run` and `make test` never set it.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

const CLANG: &str = "clang-19";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    let probes = root.join("probes-ebpf");
    let include = probes.join("include");
    let src = probes.join("src");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let committed_abi = manifest.join("src/probes/abi_generated.rs");

    println!("cargo:rerun-if-env-changed=STANCE_SKIP_BPF");
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed={}", src.display());
    // sqlx::migrate! only tracks files that already exist: a new migration must rebuild.
    println!("cargo:rerun-if-changed={}", root.join("migrations").display());
    println!("cargo:rustc-check-cfg=cfg(stance_skip_bpf)");

    let bpf_sources = bpf_sources(&src);
    let skip = env::var("STANCE_SKIP_BPF").map(|v| v == "1").unwrap_or(false);
    if skip {
        println!("cargo:rustc-cfg=stance_skip_bpf");
        println!("cargo:warning=STANCE_SKIP_BPF=1: building without BPF objects; `stance run` will refuse to start");
        for name in &bpf_sources {
            fs::write(out.join(object_name(name)), b"").unwrap();
        }
        return;
    }

    // The ABIs first: they are cheap, and a drift is the most useful error to see early.
    let update = env::var("STANCE_UPDATE_ABI").map(|v| v == "1").unwrap_or(false);
    generate_abi(&include.join("stance_events.h"), &out.join("abi.rs"), &committed_abi, update);
    generate_abi(
        &include.join("stance_enforce.h"),
        &out.join("enforce_abi.rs"),
        &manifest.join("src/enforce/abi_generated.rs"),
        update,
    );

    let vmlinux_dir = out.join("vmlinux");
    fs::create_dir_all(&vmlinux_dir).unwrap();
    let vmlinux_h = vmlinux_dir.join("vmlinux.h");
    if !vmlinux_h.exists() {
        let btf = env::var("STANCE_VMLINUX_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".to_owned());
        let dump = Command::new("bpftool")
            .args(["btf", "dump", "file", &btf, "format", "c"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run bpftool ({e}): install bpftool, or set STANCE_SKIP_BPF=1")
            });
        if !dump.status.success() {
            panic!("bpftool btf dump {btf} failed: {}", String::from_utf8_lossy(&dump.stderr));
        }
        fs::write(&vmlinux_h, dump.stdout).unwrap();
    }

    for name in &bpf_sources {
        let input = src.join(name);
        let output = out.join(object_name(name));
        let status = Command::new(CLANG)
            .args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"])
            .arg(format!("-I{}", vmlinux_dir.display()))
            .arg(format!("-I{}", include.display()))
            .arg("-c")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {CLANG} ({e}): install clang-19, or set STANCE_SKIP_BPF=1")
            });
        if !status.success() {
            panic!("{CLANG} failed on {}", input.display());
        }
    }
}

/// Runs bindgen on one of the shared C headers into `out`, and checks (or, with `update`, rewrites)
/// the committed copy that `STANCE_SKIP_BPF=1` builds use.
fn generate_abi(header: &Path, out: &Path, committed_path: &Path, update: bool) {
    let generated = bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_type("stance_.*")
        .allowlist_var("STANCE_.*")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .use_core()
        .layout_tests(true)
        .generate()
        .unwrap_or_else(|e| {
            panic!(
                "bindgen failed on {}: {e} (install libclang-19-dev, or set STANCE_SKIP_BPF=1)",
                header.display()
            )
        });
    let header_name = header.file_name().unwrap().to_string_lossy();
    let abi_text = format!(
        "// @generated by discovery/build.rs from probes-ebpf/include/{header_name} with bindgen. Do not edit:\n\
         // run `make abi` after changing the header.\n{generated}"
    );
    fs::write(out, &abi_text).unwrap();
    let committed = fs::read_to_string(committed_path).unwrap_or_default();
    if committed != abi_text {
        if update {
            fs::write(committed_path, &abi_text).unwrap();
        } else {
            panic!(
                "{} is out of date with probes-ebpf/include/{header_name}: run `make abi`",
                committed_path.display()
            );
        }
    }
}

fn bpf_sources(src: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bpf.c"))
        .collect();
    names.sort();
    names
}

fn object_name(source: &str) -> String {
    source.trim_end_matches(".c").to_owned() + ".o"
}
