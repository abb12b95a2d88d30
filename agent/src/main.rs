//! The `reflex` binary: parse the command line and run the chosen command.
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = reflex::cli::Cli::parse();
    reflex::logging::init(cli.log_format, cli.verbose);
    match reflex::commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("reflex: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
