#!/usr/bin/env bash
# Build metro's Debian package: the release binary, its man pages and shell completions
# (rendered from the command line by the binary itself), then `cargo deb --no-build`.
#
#   scripts/package.sh [--deb-version VERSION] [-o DIR]
#
# Prints the path of the .deb on its last line. Needs cargo-deb (.ci/run pins its version:
# cargo install --locked cargo-deb@3.8.0). Extra arguments go to `cargo deb`.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null || {
  echo "package.sh: cargo-deb is missing: cargo install --locked cargo-deb@3.8.0" >&2
  exit 1
}
cargo build --release --locked -p metro >&2
rm -rf target/release/assets
target/release/metro generate-docs target/release/assets >&2
gzip -9n target/release/assets/man/*.1   # Debian policy: compressed man pages
# --no-build: the binary just built (or reused) is the one packaged (--strip: its debug info
# stays in target/release, the package carries 4 MB instead of 25); the package metadata is
# in crates/metro/Cargo.toml.
cargo deb -p metro --locked --no-build --strip "$@" | tail -n 1
