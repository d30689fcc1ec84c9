//! The `custsync` binary: parses the command line and hands off to the library.

fn main() -> std::process::ExitCode {
    let cli = custsync::cli::Cli::parse_checked();
    custsync::app::main(cli)
}
