//! Two things the binary embeds that are made at build time:
//!
//! - the commit `dron` is built from, for `dron --version`: `DRON_BUILD_COMMIT` as given (a
//!   build from a tarball can pass it), else `git rev-parse` of the checkout, else `unknown`
//!   (a tarball with no `.git`, or no git installed);
//! - the web UI's files compressed, gzip (level 9) and brotli (quality 11), into
//!   `$OUT_DIR/ui/<path>.gz` and `.br`, which src/http/ui.rs serves by `Accept-Encoding`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    compress_ui_assets();
    println!("cargo::rerun-if-env-changed=DRON_BUILD_COMMIT");
    let commit = std::env::var("DRON_BUILD_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo::rustc-env=DRON_BUILD_COMMIT={commit}");
}

/// The checkout's commit, watching what moves when it changes (HEAD and its reflog, both per
/// worktree); None outside a git checkout.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", file]) {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    Some(commit)
}

/// What `git ARGS` prints, trimmed; None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Compresses every file under src/ui/assets/ into $OUT_DIR/ui/, keeping its relative path.
fn compress_ui_assets() {
    let assets = Path::new("src/ui/assets");
    // A directory: cargo looks at every file below it.
    println!("cargo::rerun-if-changed={}", assets.display());
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("ui");
    for file in files_under(assets) {
        let relative = file.strip_prefix(assets).expect("below the assets");
        let body = std::fs::read(&file).expect("reading a UI file");
        let target = out.join(relative);
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("OUT_DIR/ui");
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&body).expect("gzip in memory");
        write(&target, "gz", &gzip.finish().expect("gzip in memory"));
        let mut brotli = Vec::new();
        let params = brotli::enc::BrotliEncoderParams {
            quality: 11,
            ..Default::default()
        };
        brotli::BrotliCompress(&mut body.as_slice(), &mut brotli, &params)
            .expect("brotli in memory");
        write(&target, "br", &brotli);
    }
}

fn write(target: &Path, extension: &str, bytes: &[u8]) {
    let mut name = target.as_os_str().to_owned();
    name.push(format!(".{extension}"));
    std::fs::write(&name, bytes).expect("writing into OUT_DIR");
}

/// Every file below `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the assets folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}
