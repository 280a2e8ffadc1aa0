//! Project automation, run as `cargo xtask <command>`.
//!
//! - `codegen`: regenerate `generated/` from `spec/`.
//! - `codegen --check`: fail (exit 1) if `generated/` is not what `spec/` generates; for CI.
//! - `test`: install what the tests need (xmllint) when missing, then `cargo test --workspace`.
//! - `bench [--smoke] [--no-peer] [--long]`: the benchmark harness (release build); writes
//!   BENCHMARKS.md (`--long`: only its "Long run" section and BENCHMARKS-long.svg).
//! - `listen [PORT] [--secret S]…`: the callback receiver that prints every notification
//!   POSTed to it, verifying signatures with the secrets given (for trying the API by hand;
//!   see the README walkthrough); the same as `netapi-chat client listen`.

mod bench;

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The XML tests validate against the XSD with `xmllint` (Debian package libxml2-utils).
fn ensure_xmllint() -> Result<()> {
    let present = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present("xmllint") {
        return Ok(());
    }
    println!("xmllint not found: installing libxml2-utils with apt-get");
    let sudo: &[&str] = if present("sudo") && !is_root() {
        &["sudo"]
    } else {
        &[]
    };
    for args in [
        vec!["apt-get", "update", "-qq"],
        vec!["apt-get", "install", "-y", "-qq", "libxml2-utils"],
    ] {
        let mut all: Vec<&str> = sudo.to_vec();
        all.extend(args);
        let status = Command::new(all[0])
            .args(&all[1..])
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("could not install libxml2-utils; install xmllint by hand and rerun");
        }
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

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
        ["test", rest @ ..] => {
            ensure_xmllint()?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let status = Command::new(cargo)
                .current_dir(&root)
                .args(["test", "--workspace"])
                .args(rest.iter())
                .status()
                .context("running cargo test")?;
            if !status.success() {
                bail!("tests failed");
            }
            Ok(())
        }
        ["bench", rest @ ..] => bench::main(&root, rest),
        ["listen", rest @ ..] => listen(rest),
        _ => bail!(
            "usage: cargo xtask codegen [--check] | cargo xtask test [cargo test args] | cargo xtask bench [--smoke] [--no-peer] [--long] | cargo xtask listen [PORT] [--secret whsec_…]"
        ),
    }
}

/// `cargo xtask listen [PORT] [--secret whsec_…]…`: the project's printing callback listener
/// (`netapi_chat_webhooks::listen::serve_printing`, the same as `netapi-chat client listen`)
/// on 127.0.0.1:PORT (default 9000): prints every notification POSTed to it and answers 204,
/// verifying signatures when given secrets. For trying the API by hand (README walkthrough).
fn listen(args: &[&str]) -> Result<()> {
    let mut port = 9000u16;
    let mut secrets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match *arg {
            "--secret" => {
                let secret = args.next().context("--secret needs a whsec_… value")?;
                secrets.push(
                    netapi_chat_webhooks::signing::Signer::from_secret(secret)
                        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?,
                );
            }
            p => port = p.parse().context("PORT must be a number")?,
        }
    }
    tokio::runtime::Runtime::new()?
        .block_on(netapi_chat_webhooks::listen::serve_printing(
            &format!("127.0.0.1:{port}"),
            secrets,
        ))
        .with_context(|| format!("listening on 127.0.0.1:{port}"))
}
