//! Man pages and shell completions, rendered from the command-line definition itself (so
//! they cannot drift from `--help`). The hidden `metro generate-docs DIR` writes them for
//! packagers: `DIR/man/metro.1` and one page per subcommand (`metro-run.1`, ...), and
//! `DIR/completions/{metro.bash,_metro,metro.fish}`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Arguments of `metro generate-docs`.
#[derive(clap::Args, Debug, Clone)]
pub struct DocsArgs {
    /// Output directory (created if missing).
    pub dir: PathBuf,
}

/// Write the man pages and the bash, zsh and fish completions of `cmd` under `dir`.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // The generator itself is for packagers, not users: keep it out of the pages.
    cmd = cmd.mut_subcommand("generate-docs", |c| c.hide(true));
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("cannot write the man pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "metro", &completions).with_context(|| {
            format!(
                "cannot write the {shell} completions into {}",
                completions.display()
            )
        })?;
    }
    Ok(())
}
