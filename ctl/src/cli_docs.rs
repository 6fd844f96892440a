//! Shell completions and man pages, generated from the CLI definition itself (clap's
//! `Command`), so they cannot drift from what `presagectl` accepts: `presagectl completions
//! bash|zsh|fish|elvish|powershell` prints a completion script, `presagectl man --dir DIR` writes
//! `presagectl.1` and one page per subcommand (`presagectl-optimise.1`, ...).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::Cli;

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "presagectl", out);
}

/// Writes the man pages into `dir` (created if missing); returns their paths, sorted.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("writing the man pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_the_subcommands_and_their_options() {
        let mut bash = Vec::new();
        completions(clap_complete::Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        for word in ["optimise", "rollout", "--roadef-model", "--canary", "--last"] {
            assert!(bash.contains(word), "the bash completion lacks {word}");
        }
        let mut zsh = Vec::new();
        completions(clap_complete::Shell::Zsh, &mut zsh);
        assert!(String::from_utf8(zsh).unwrap().contains("#compdef presagectl"));
    }

    #[test]
    fn a_man_page_per_subcommand_with_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(&dir.path().join("man1")).unwrap();
        let names: Vec<String> = pages.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for page in ["presagectl.1", "presagectl-optimise.1", "presagectl-rollout-start.1", "presagectl-config-history.1"] {
            assert!(names.iter().any(|n| n == page), "{page} not in {names:?}");
        }
        let optimise = std::fs::read_to_string(dir.path().join("man1/presagectl-optimise.1")).unwrap();
        assert!(optimise.starts_with(".ie") || optimise.contains(".TH"), "not roff: {}", &optimise[..optimise.len().min(200)]);
        assert!(optimise.contains("roadef\\-model") && optimise.contains("binpacking"), "the optimise page lacks its options");
        // A folder that cannot be made is an error naming it.
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let err = man_pages(&file.join("man1")).unwrap_err();
        assert!(format!("{err:#}").contains("a-file"), "{err:#}");
    }
}
