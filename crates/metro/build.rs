//! Build script: version provenance for `metro --version`.
//!
//! Sets `METRO_VERSION_LINE` to "VERSION (commit HASH, built YYYY-MM-DD)". The commit comes
//! from `METRO_GIT_COMMIT` if set (a build from a source tarball, or a container build that
//! has no `.git`), else from `git rev-parse`, else "unknown". The date is
//! `SOURCE_DATE_EPOCH` if set (reproducible builds: the Debian and container builds set it
//! to the commit's time), else the time of this build. The package, the image label and the
//! binary all take the version from Cargo.toml, so they agree by construction.
//!
//! Also compiles the in-kernel capture program (`bpf/capture.bpf.c`, agent::ebpf) with clang
//! for the `bpf` target into `OUT_DIR/capture.bpf.o`, which the binary embeds: the package
//! and the image carry it inside /usr/bin/metro. `METRO_CLANG` names another clang.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// clang -target bpf: the tc program, with BTF (-g) for its map definitions.
fn compile_bpf() {
    let src = "bpf/capture.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=METRO_CLANG");
    let clang = std::env::var("METRO_CLANG").unwrap_or_else(|_| "clang".to_string());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("capture.bpf.o");
    // The kernel's UAPI headers include <asm/types.h>, which Debian keeps under the
    // multiarch directory of the build machine.
    let multiarch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "{clang} failed ({s}) compiling {src}, metro's in-kernel capture program: see its \
             messages above (it needs libbpf-dev for <bpf/bpf_helpers.h> and linux-libc-dev)"
        ),
        Err(e) => panic!(
            "cannot run {clang:?} ({e}): building metro needs clang to compile its in-kernel \
             capture program {src} (Debian: apt-get install clang libbpf-dev; or set \
             METRO_CLANG to a clang that targets bpf)"
        ),
    }
}

fn main() {
    compile_bpf();
    println!("cargo:rerun-if-env-changed=METRO_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Rebuild the line when HEAD moves: HEAD itself (a branch switch) and the branch's ref
    // (a commit). In a worktree HEAD lives in the worktree's git dir, refs in the common one.
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        // Only files that exist: cargo reruns a script whose watched file is missing every
        // time (a branch's ref may live only in packed-refs, and vice versa).
        for f in [
            format!("{common}/{head_ref}"),
            format!("{common}/packed-refs"),
        ] {
            if std::path::Path::new(&f).exists() {
                println!("cargo:rerun-if-changed={f}");
            }
        }
    }

    let commit = std::env::var("METRO_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    let secs = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s
            .trim()
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("SOURCE_DATE_EPOCH={s:?} is not a whole number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let version = std::env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    println!(
        "cargo:rustc-env=METRO_VERSION_LINE={version} (commit {commit}, built {y:04}-{m:02}-{d:02})"
    );
}
