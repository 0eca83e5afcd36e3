use clap::Parser;

// See Cargo.toml: the allocator is part of the scheduler's speed. Heap profilers (heaptrack)
// see only malloc: build with `--features system-allocator` to profile memory.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match dron::cli::run(dron::cli::Cli::parse()) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(error) => {
            eprintln!("dron: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
