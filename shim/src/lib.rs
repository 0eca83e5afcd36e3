//! What runs beside each task, outside the server: the task shim ([`shim`]) and the agent's
//! launcher that forks shims ([`launcher`]); [`container`] runs a task in a container. Synchronous std and libc code, in processes of
//! their own; the `dron-shim` binary (src/main.rs) is both, and the `dron` binary's
//! `task-shim` and `task-launcher` subcommands call the same entry points.

pub mod container;
pub mod launcher;
pub mod shim;
