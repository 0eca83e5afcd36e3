//! What this machine has to offer: the default size of the server's local agent and of a
//! `dron agent` started without `--cpus`, `--mem` or `--disk`.

use std::path::Path;

use dron_model::demand::Resources;

/// Cores, total memory, and the free disk where run directories go (MB).
pub fn machine_resources(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    Resources::new(cpus, total_memory_mb(), free_disk_mb(work_dir))
}

fn total_memory_mb() -> f64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(1024.0, |kb| (kb / 1024.0).floor())
}

fn free_disk_mb(dir: &Path) -> f64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 0.0;
    };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return 0.0;
    }
    let bytes = stat.f_bavail as f64 * stat.f_frsize as f64;
    (bytes / 1_048_576.0).floor()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_something() {
        let size = super::machine_resources(std::path::Path::new("/"));
        assert!(
            size.cpus >= 1.0 && size.mem > 0.0 && size.disk > 0.0,
            "{size}"
        );
    }
}
