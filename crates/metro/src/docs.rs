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
    // clap_complete needs the command built (bin name, propagated flags) before rendering.
    cmd.build();
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_page_per_command_and_three_completions() {
        let dir = std::env::temp_dir().join(format!("metro-docs-test-{}", std::process::id()));
        let cmd = clap::Command::new("metro")
            .version("1.2.3")
            .subcommand(
                clap::Command::new("run").arg(
                    clap::Arg::new("config")
                        .long("config")
                        .help("The configuration file"),
                ),
            )
            .subcommand(clap::Command::new("secret").hide(true));
        generate(cmd, &dir).unwrap();
        let run = std::fs::read_to_string(dir.join("man/metro-run.1")).unwrap();
        // roff escapes dashes: `\-\-config`.
        assert!(
            run.contains("config") && run.contains("The configuration file"),
            "{run}"
        );
        assert!(dir.join("man/metro.1").exists());
        assert!(
            !dir.join("man/metro-secret.1").exists(),
            "a hidden command got a page"
        );
        // Each shell's spelling of run's long option.
        for (f, opt) in [
            ("metro.bash", "--config"),
            ("_metro", "--config"),
            ("metro.fish", "-l config"),
        ] {
            let text = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
            assert!(text.contains(opt), "{f} lacks {opt}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
