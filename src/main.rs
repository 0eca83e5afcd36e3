use clap::Parser;

fn main() -> std::process::ExitCode {
    match dron::cli::run(dron::cli::Cli::parse()) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("dron: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
