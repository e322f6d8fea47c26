//! Compiles the BPF program of the kernel's drop verdicts
//! (`bpf/kfree_skb.bpf.c`) with clang into `OUT_DIR`, where
//! `capture::kernel_drops` includes it. The program needs no header (its
//! kernel structures are relocated against the running kernel's BTF), so
//! clang is the only tool: `CLANG` names another one.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/kfree_skb.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CLANG");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("kfree_skb.bpf.o");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c", src, "-o",
        ])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} could not compile {src} ({s})"),
        Err(e) => panic!(
            "hoplab-sim compiles its BPF program with clang: {clang}: {e} \
             (install clang, e.g. `apt-get install clang`, or set CLANG)"
        ),
    }
}
