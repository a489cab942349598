//! What `walguard --version` says of how it was built: a packager sets WALGUARD_BUILD
//! (debian/rules does); otherwise it was built from source with cargo.
fn main() {
    println!("cargo:rerun-if-env-changed=WALGUARD_BUILD");
    let build = std::env::var("WALGUARD_BUILD")
        .unwrap_or_else(|_| "built from source with cargo".to_string());
    println!("cargo:rustc-env=WALGUARD_BUILD_INFO={build}");
}
