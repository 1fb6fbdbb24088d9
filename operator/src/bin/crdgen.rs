//! Writes the CRDs generated from `operator/src/crd.rs` into `crds/` (default: `<workspace>/crds`), or to
//! stdout with `--stdout`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("crds");
    let mut to_stdout = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stdout" => to_stdout = true,
            "--out-dir" => {
                out_dir = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("--out-dir needs a value"))?
            }
            "-h" | "--help" => {
                println!("usage: crdgen [--out-dir DIR | --stdout]");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: crdgen [--out-dir DIR | --stdout])"),
        }
    }
    for (file, crd) in mcp_guard_operator::crd::all_crds() {
        let yaml = mcp_guard_operator::crd::crd_yaml(&crd)?;
        if to_stdout {
            println!("---\n{yaml}");
        } else {
            std::fs::create_dir_all(&out_dir)?;
            let path = out_dir.join(file);
            std::fs::write(&path, yaml)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
