//! The `imgbuild` command line: parse arguments, call the library, render
//! errors, map exit codes (0 ok, 1 failure, 2 usage).

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
