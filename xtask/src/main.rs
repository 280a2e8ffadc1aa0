//! Project automation, run as `cargo xtask <command>`.
//!
//! - `codegen`: regenerate `generated/` from `spec/`.
//! - `codegen --check`: fail (exit 1) if `generated/` is not what `spec/` generates; for CI.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

fn workspace_root() -> Result<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map(Path::to_path_buf)
        .context("xtask must live one level below the workspace root")
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["codegen"] => {
            let files = netapi_chat_codegen::generate(&netapi_chat_codegen::read_spec(&root)?)?;
            let changed = netapi_chat_codegen::write(&root, &files)?;
            if changed.is_empty() {
                println!("generated/ is up to date ({} files)", files.len());
            }
            for p in changed {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        ["codegen", "--check"] => {
            let files = netapi_chat_codegen::generate(&netapi_chat_codegen::read_spec(&root)?)?;
            let stale = netapi_chat_codegen::stale(&root, &files);
            if stale.is_empty() {
                println!("generated/ matches spec/ ({} files)", files.len());
                Ok(())
            } else {
                for p in &stale {
                    eprintln!("stale: {}", p.display());
                }
                bail!(
                    "generated/ is out of date with spec/: run `cargo xtask codegen` and commit the result"
                )
            }
        }
        _ => bail!("usage: cargo xtask codegen [--check]"),
    }
}
