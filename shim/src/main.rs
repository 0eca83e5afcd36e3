//! `dron-shim task-shim <run_dir>`: the task shim as a small binary of its own. It does what
//! `dron task-shim` does, but without the server's RocksDB, TLS and HTTP code, so it starts in
//! a fraction of the time: the shim's start-up is paid once per run (docs/benchmarks.md).
//! The server uses it when it sits beside the `dron` binary, and `dron task-shim` otherwise.
//! `dron-shim task-launcher` is the agent's launcher ([`dron_shim::launcher`]), which forks shims
//! from one long-lived process instead of starting this program for every run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match args.as_slice() {
        [subcommand, run_dir] if subcommand == dron_task::SHIM_SUBCOMMAND => {
            let code = dron_shim::shim::run_shim_main(std::path::Path::new(run_dir));
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        [subcommand] if subcommand == dron_shim::launcher::LAUNCHER_SUBCOMMAND => {
            let code = dron_shim::launcher::run_launcher_main();
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        _ => {
            eprintln!(
                "usage: dron-shim task-shim <run_dir> | dron-shim task-launcher (started by the dron server)"
            );
            ExitCode::from(2)
        }
    }
}
