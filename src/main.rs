//! The `custsync` binary: parses the command line and hands off to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = custsync::cli::Cli::parse();
    custsync::app::main(cli)
}
