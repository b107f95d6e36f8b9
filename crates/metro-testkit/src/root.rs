//! Tests that need root (network namespaces, podman, tcpreplay, raw capture, BPF), or
//! something else that `.ci/run` provides (its Python venv of PyPI packages): the one way
//! they skip for other users, so that `cargo test` passes for anyone, and fail where a skip
//! would hide them (`.ci/run` sets `METRO_TESTS_REQUIRE_ROOT`).

/// Whether a test that needs root can run. As root: true. Otherwise the test is skipped
/// with a line on stderr saying what and why, so that `cargo test` passes for any user; but
/// where `METRO_TESTS_REQUIRE_ROOT` is set (`.ci/run` sets it), a skip would hide a test, so
/// it panics instead.
/// Use: `if !needs_root("the agent between namespaces") { return; }`.
pub fn needs_root(what: &str) -> bool {
    needs(
        effective_uid() == Some(0),
        &format!("{what} needs root"),
        "as root, `cargo test` or .ci/run includes it",
    )
}

/// [`needs_root`] for anything else `.ci/run` provides: whether `present`; if not, the test
/// is skipped with a line saying `why` (what is missing) and `how` (how to include it), or,
/// under `.ci/run` (`METRO_TESTS_REQUIRE_ROOT`), it panics saying so.
/// Use: `if !needs(can_import, "python3 cannot import X", "pip install X==1.2") { return; }`.
pub fn needs(present: bool, why: &str, how: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("METRO_TESTS_REQUIRE_ROOT").is_some() {
        panic!("{why}, and METRO_TESTS_REQUIRE_ROOT is set (as .ci/run does): {how}");
    }
    // Straight to the process's stderr, not through eprintln!: the test harness captures
    // what a passing test prints with the macros, and a skip must be seen.
    // The harness names each test's thread after the test.
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why} ({how})");
    false
}

/// The process's effective user ID, from the second field of /proc/self/status's `Uid:`
/// line (real, effective, saved, file system). None where /proc is not mounted.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_uid_is_the_one_the_kernel_reports() {
        // The owner of a file this process creates is its effective (file system) UID.
        let p = std::env::temp_dir().join(format!("metro-testkit-uid-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&p).unwrap());
        std::fs::remove_file(&p).unwrap();
        assert_eq!(effective_uid(), Some(owner));
    }
}
