//! Writes the CRDs generated from `operator/src/crd.rs` into `crds/` and, when it exists, the Helm chart's copy
//! `charts/mcp-guard/crds/` (`--out-dir DIR` writes only to DIR; `--stdout` prints them), and the field
//! reference `docs/crd-reference.md` rendered from them.

use std::path::{Path, PathBuf};

const USAGE: &str = "usage: crdgen [--out-dir DIR | --stdout]";

fn write_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, crd) in mcp_guard_operator::crd::all_crds() {
        let path = dir.join(file);
        std::fs::write(&path, mcp_guard_operator::crd::crd_yaml(&crd)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = vec![root.join("crds")];
    let chart = root.join("charts/mcp-guard/crds");
    if chart.is_dir() {
        dirs.push(chart);
    }
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stdout" => {
                for (_, crd) in mcp_guard_operator::crd::all_crds() {
                    println!("---\n{}", mcp_guard_operator::crd::crd_yaml(&crd)?);
                }
                return Ok(());
            }
            "--out-dir" => {
                let dir = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--out-dir needs a value ({USAGE})"))?;
                dirs = vec![PathBuf::from(dir)];
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    for dir in dirs {
        write_all(&dir)?;
    }
    let crds: Vec<_> = mcp_guard_operator::crd::all_crds()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    let reference = root.join(mcp_guard_operator::crd_reference::PATH);
    std::fs::write(&reference, mcp_guard_operator::crd_reference::markdown(&crds))?;
    eprintln!("wrote {}", reference.display());
    Ok(())
}
