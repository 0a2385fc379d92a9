//! Selects a deliberately broken variant of the table when `LOCKCORE_MUTANT` names one, so CI
//! can show that each checker fails on it (`ci/mutants.sh`). Unset in every normal build.
//! An environment variable rather than `RUSTFLAGS`, so switching mutants rebuilds this crate
//! only, not every dependency.

fn main() {
    println!("cargo:rerun-if-env-changed=LOCKCORE_MUTANT");
    if let Ok(name) = std::env::var("LOCKCORE_MUTANT") {
        if !name.is_empty() {
            println!("cargo:rustc-cfg=lockcore_mutant=\"{name}\"");
            println!("cargo:warning=building the deliberately broken lockcore mutant {name:?}");
        }
    }
}
