use std::process::ExitCode;

fn main() -> ExitCode {
    keel_engine::cli::run(std::env::args_os()).into()
}
