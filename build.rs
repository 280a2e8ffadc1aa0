//! Makes a spec edit impossible to miss: the server does not build while `generated/` was made
//! from another version of `spec/chat.openapi.yaml` than the one on disk.
//!
//! `generated/spec.sha256` holds the SHA-256 of the spec that `cargo xtask codegen` last read.

use sha2::{Digest, Sha256};

fn main() {
    const SPEC: &str = "spec/chat.openapi.yaml";
    const FINGERPRINT: &str = "generated/spec.sha256";
    println!("cargo::rerun-if-changed={SPEC}");
    println!("cargo::rerun-if-changed={FINGERPRINT}");
    let spec = match std::fs::read(SPEC) {
        Ok(s) => s,
        Err(e) => panic!("cannot read {SPEC}: {e}"),
    };
    let actual: String = Sha256::digest(&spec)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let recorded = std::fs::read_to_string(FINGERPRINT).unwrap_or_default();
    if recorded.trim() != actual {
        panic!(
            "\n\n{SPEC} changed since generated/ was last regenerated.\n\
             Run `cargo xtask codegen` (and commit spec/ and generated/ together).\n\n"
        );
    }
}
