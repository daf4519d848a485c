//! Link options that cargo's manifest cannot express.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Feature `no-pie`: a position-dependent executable. The dynamic loader then has no
    // ~45,000 relocations to apply at every start, which halves the page faults of a run
    // and takes ~1.4 ms off each `deliver` (bench/deliver.sh). The price is that the
    // program's own image loses address-space randomisation, so it is not the default.
    if std::env::var_os("CARGO_FEATURE_NO_PIE").is_some()
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
    {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
