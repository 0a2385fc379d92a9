//! Selects a deliberately broken variant when `LOCKCORE_MUTANT` names one, so CI can show that
//! each checker fails on it (`ci/mutants.sh`). Unset in every normal build. An environment
//! variable rather than `RUSTFLAGS`, so switching mutants rebuilds only the crates that use this
//! script (`lockcore`, `lockcore-journal` and `lockcore-sql`: the one file for all three), not
//! every dependency. Each crate reads only the mutants it knows.

fn main() {
    println!("cargo:rerun-if-env-changed=LOCKCORE_MUTANT");
    if let Ok(name) = std::env::var("LOCKCORE_MUTANT") {
        if !name.is_empty() {
            let krate = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
            println!("cargo:rustc-cfg=lockcore_mutant=\"{name}\"");
            println!("cargo:warning=building the deliberately broken {krate} mutant {name:?}");
        }
    }
}
