//! The `reflex` binary: parse the command line and run the chosen command.
use clap::Parser as _;

/// jemalloc gives memory freed after start-up (kernel BTF parsing, the probe
/// object) back to the system; glibc's allocator kept ~26 MiB of it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = reflex::cli::Cli::parse();
    let _log = reflex::logging::init(cli.log_format, cli.verbose, cli.log_queue);
    match reflex::commands::dispatch(cli.command) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("reflex: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
