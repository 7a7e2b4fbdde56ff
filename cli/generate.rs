//! `generate completions|man`: the files committed in completions/ and man/.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::args::{define_all_commands, Cli, GenerateCmd, ShellArg};
use crate::output::out;

pub fn run(c: GenerateCmd) -> Result<i32> {
    define_all_commands();
    let mut cmd = Cli::command();
    match c {
        GenerateCmd::Completions { shell, out_dir } => {
            let shell = match shell {
                ShellArg::Bash => Shell::Bash,
                ShellArg::Zsh => Shell::Zsh,
                ShellArg::Fish => Shell::Fish,
                ShellArg::Elvish => Shell::Elvish,
                ShellArg::Powershell => Shell::PowerShell,
            };
            match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    let path = clap_complete::generate_to(shell, &mut cmd, "authctl", &dir)?;
                    out(&format!("wrote {}", path.display()));
                }
                None => clap_complete::generate(shell, &mut cmd, "authctl", &mut std::io::stdout()),
            }
        }
        GenerateCmd::Man { out_dir } => {
            write_man(cmd, &out_dir)?;
            out(&format!("wrote man pages to {}", out_dir.display()));
        }
    }
    Ok(0)
}

/// One page for the command and one per subcommand, recursively (authctl-user-add.1).
pub fn write_man(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cmd, dir)
        .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
    Ok(())
}
