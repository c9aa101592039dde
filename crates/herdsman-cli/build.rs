//! How a release `herdsman` is linked, for a small resident set.
//!
//! `herdsman run` stays up for months, and most of its resident memory is its own code:
//! every page fault on the binary also maps the kernel's fault-around window (64 KiB)
//! around it, and the code a run executes is scattered over a 15 MB `.text`. Two linker
//! options, both measured in `docs/benchmarks.md`:
//!
//! - `--symbol-ordering-file=link/hot-symbols.txt`: the functions a run executes (listed
//!   by `link/refresh-hot-symbols`) are placed together at the start of `.text`;
//! - `-z pack-relative-relocs`: the relative relocations, which the loader reads whole at
//!   start, are packed (`DT_RELR`, glibc 2.36) instead of 24 bytes each.
//!
//! Both only where they are known to work: a release build for x86_64 Linux with glibc,
//! built on the machine it targets, by a rustc that links with its own lld (1.90 and
//! later, with `gcc-ld/ld.lld` in its sysroot) and with no linker chosen by the user.
//! `HERDSMAN_PLAIN_LINK=1` turns them off. A symbol of the list that the binary does not
//! have (the list is older than the code) is skipped; the build never fails because of
//! the list.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    let list = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("link")
        .join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    for var in [
        "HERDSMAN_PLAIN_LINK",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if !layout_applies() {
        return;
    }
    if list.is_file() {
        println!(
            "cargo:rustc-link-arg-bin=herdsman=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bin=herdsman=-Wl,--no-warn-symbol-ordering");
    }
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=herdsman=-Wl,-z,pack-relative-relocs");
    }
}

/// A release build for this very x86_64 glibc machine, linked by rustc's own lld.
fn layout_applies() -> bool {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let target = var("TARGET");
    if var("PROFILE") != "release"
        || target != "x86_64-unknown-linux-gnu"
        || var("HOST") != target
        || env::var_os("HERDSMAN_PLAIN_LINK").is_some_and(|v| v != "0")
        || env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
    {
        return false;
    }
    // A linker or linker flavour of the user's choosing may not be lld.
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    if rustflags.contains("linker") || rustflags.contains("fuse-ld") {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90) && ships_its_lld(&target)
}

/// Whether the rustc building this crate has its own lld for `target` (a distribution's
/// rustc may link with the system's linker, which knows no symbol ordering file).
fn ships_its_lld(target: &str) -> bool {
    let Some(rustc) = env::var_os("RUSTC") else {
        return false;
    };
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .join("bin/gcc-ld/ld.lld")
        .is_file()
}

/// The minor version of the rustc building this crate (`rustc 1.95.0 (…)` → 95).
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION` → `glibc 2.36`) is at least
/// `major.minor`; false where there is no glibc or no answer.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.trim().split('.').map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}
