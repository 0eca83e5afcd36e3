//! A run's output stays on the agent that ran it; the server's output endpoints ask for it
//! chunk by chunk (`ReadOutput` in the agent protocol).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use base64::Engine;
use dron_task::protocol::OutputChunk;
use dron_task::{STATUS_FILE, STDERR_FILE, STDOUT_FILE, run_dir};

/// Most bytes in one chunk (the server asks again from `next`).
const MAX_CHUNK: u64 = 1024 * 1024;

/// Up to [`MAX_CHUNK`] bytes of the run's `file` from `offset`.
pub fn read_chunk(
    runs_root: &Path,
    task_id: &str,
    file: &str,
    offset: u64,
) -> Result<OutputChunk, String> {
    if file != STDOUT_FILE && file != STDERR_FILE {
        return Err(format!("'{file}' is not a run's output (stdout or stderr)"));
    }
    let dir = run_dir(runs_root, task_id).ok_or_else(|| format!("'{task_id}' is not a task id"))?;
    if !dir.exists() {
        return Err(format!("no run of task '{task_id}' on this agent"));
    }
    let ended = dir.join(STATUS_FILE).exists();
    let path = dir.join(file);
    let mut bytes = Vec::new();
    let mut size = 0;
    if let Ok(mut handle) = std::fs::File::open(&path) {
        size = handle.metadata().map_or(0, |m| m.len());
        handle
            .seek(SeekFrom::Start(offset))
            .and_then(|_| handle.take(MAX_CHUNK).read_to_end(&mut bytes))
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
    }
    let next = offset + bytes.len() as u64;
    Ok(OutputChunk {
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        next,
        finished: ended && next >= size,
    })
}
