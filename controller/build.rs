//! Embeds the dashboard (`../web`, all but its README) in the controller: writes
//! `$OUT_DIR/web_assets.rs`, a table of every file's URL path, bytes (by
//! `include_bytes!`), content type and content hash (the `ETag`), which
//! `src/dashboard.rs` serves. An empty or missing `web/` makes an empty table, so the
//! controller builds before the front end exists.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
    // Cargo watches the directory's files, recursively, for new, changed and removed ones.
    println!("cargo::rerun-if-changed=../web");
    let mut files = Vec::new();
    if web.is_dir() {
        walk(&web, &mut files);
    }
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        let Ok(relative) = file.strip_prefix(&web) else {
            continue;
        };
        let url: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let url = format!("/{}", url.join("/"));
        if url == "/README.md" {
            continue;
        }
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(e) => panic!("cannot read {}: {e}", file.display()),
        };
        let _ = writeln!(
            table,
            "    Asset {{ path: {url:?}, body: include_bytes!({:?}), content_type: {:?}, etag: \"\\\"{:016x}\\\"\" }},",
            file.display().to_string(),
            content_type(&url),
            fnv1a(&bytes),
        );
    }
    table.push(']');
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("web_assets.rs");
    if let Err(e) = std::fs::write(&out, table) {
        panic!("cannot write {}: {e}", out.display());
    }
}

/// Every file under `dir`, hidden ones (editors' droppings) left out.
fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, files);
        } else if path.is_file() {
            files.push(path);
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt" | "md") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// FNV-1a, 64 bits: a content hash for `ETag`s, stable across builds and toolchains.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
