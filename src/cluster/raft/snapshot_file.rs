//! A snapshot on disk: the files the applier wrote for it (RocksDB checkpoints, for dron),
//! packed into one file that openraft reads in chunks to send and writes chunk by chunk as it
//! receives (`SnapshotData = tokio::fs::File`), so that no snapshot is ever held in memory.
//!
//! The packing is a plain sequence, read and written front to back: a magic line, then per
//! file its path (relative, `/`-separated), its length and its bytes, then an empty path.
//! Paths are checked on unpacking: none may leave the directory it unpacks into.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

const MAGIC: &[u8; 16] = b"dron-snapshot-1\n";
/// Far above any path a checkpoint has: a longer one means the file is not a snapshot.
const MAX_PATH: usize = 4096;

/// Packs every file under `dir` into `into` (created, synced), in path order. Answers its size.
pub fn pack(dir: &Path, into: &Path) -> io::Result<u64> {
    let mut files = Vec::new();
    list(dir, Path::new(""), &mut files)?;
    files.sort();
    let file = File::create(into)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    for relative in &files {
        let name = relative
            .to_str()
            .ok_or_else(|| invalid(format!("{} is not UTF-8", relative.display())))?;
        let mut source = File::open(dir.join(relative))?;
        let len = source.metadata()?.len();
        out.write_all(&(name.len() as u32).to_be_bytes())?;
        out.write_all(name.as_bytes())?;
        out.write_all(&len.to_be_bytes())?;
        let copied = io::copy(&mut (&mut source).take(len), &mut out)?;
        if copied != len {
            return Err(invalid(format!("{name} shrank while it was packed")));
        }
    }
    out.write_all(&0u32.to_be_bytes())?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    file.metadata().map(|meta| meta.len())
}

/// Unpacks a packed snapshot read from `from` into `into` (which must not exist yet; its
/// files are synced).
pub fn unpack(from: impl Read, into: &Path) -> io::Result<()> {
    let mut from = BufReader::with_capacity(1 << 20, from);
    let mut magic = [0u8; MAGIC.len()];
    from.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a dron snapshot (wrong magic)".to_string()));
    }
    std::fs::create_dir(into)?;
    loop {
        let name_len = read_u32(&mut from)? as usize;
        if name_len == 0 {
            return Ok(());
        }
        if name_len > MAX_PATH {
            return Err(invalid(format!("a path of {name_len} bytes")));
        }
        let mut name = vec![0u8; name_len];
        from.read_exact(&mut name)?;
        let name = String::from_utf8(name).map_err(|_| invalid("a path not UTF-8".into()))?;
        let relative = safe_relative(&name)?;
        let len = read_u64(&mut from)?;
        let target = into.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = File::create(&target)?;
        let copied = io::copy(&mut (&mut from).take(len), &mut file)?;
        if copied != len {
            return Err(invalid(format!("{name} is cut short")));
        }
        file.sync_all()?;
    }
}

fn list(root: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(relative))? {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list(root, &path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// `name` as a path below the unpacking directory: relative, without `..`.
fn safe_relative(name: &str) -> io::Result<PathBuf> {
    let path = PathBuf::from(name);
    let normal = path
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    if !normal {
        return Err(invalid(format!("{name:?} is not a plain relative path")));
    }
    Ok(path)
}

fn read_u32(from: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    from.read_exact(&mut bytes)?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_u64(from: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    from.read_exact(&mut bytes)?;
    Ok(u64::from_be_bytes(bytes))
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_back_as_they_were_and_paths_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("shards/shard-001")).unwrap();
        std::fs::write(from.join("CURRENT"), b"MANIFEST-1\n").unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(from.join("shards/shard-001/000001.sst"), &big).unwrap();
        std::fs::write(from.join("empty"), b"").unwrap();
        let packed = dir.path().join("packed");
        let size = pack(&from, &packed).unwrap();
        assert!(size > big.len() as u64);

        let to = dir.path().join("to");
        unpack(File::open(&packed).unwrap(), &to).unwrap();
        assert_eq!(std::fs::read(to.join("CURRENT")).unwrap(), b"MANIFEST-1\n");
        assert_eq!(
            std::fs::read(to.join("shards/shard-001/000001.sst")).unwrap(),
            big
        );
        assert_eq!(std::fs::read(to.join("empty")).unwrap(), b"");

        // Cut short, or naming a path outside: refused.
        let bytes = std::fs::read(&packed).unwrap();
        let cut = &bytes[..bytes.len() / 2];
        assert!(unpack(cut, &dir.path().join("cut")).is_err());
        let mut evil = MAGIC.to_vec();
        let name = b"../outside";
        evil.extend((name.len() as u32).to_be_bytes());
        evil.extend(name);
        evil.extend(1u64.to_be_bytes());
        evil.push(b'x');
        evil.extend(0u32.to_be_bytes());
        let error = unpack(&evil[..], &dir.path().join("evil")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(!dir.path().join("outside").exists());
        assert!(unpack(&b"not a snapshot at all"[..], &dir.path().join("junk")).is_err());
    }
}
