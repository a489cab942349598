//! The `walguard` binary: everything lives in the library; see `walguard::main`.

fn main() -> std::process::ExitCode {
    walguard::main()
}
