//! Where the test tools live: the Go-built binaries, the Python venv and npm packages that `make setup`
//! (tools/setup.sh) installs into the cache, and this workspace's own binaries.

use std::path::{Path, PathBuf};

pub use test_support::{free_port, target_dir, workspace_root};

/// The cache `tools/setup.sh` fills: `$MCP_GUARD_CACHE`, or `~/.cache/mcp-guard`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MCP_GUARD_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/mcp-guard")
}

/// Where `make images` writes the images' OCI archives: `$MCP_GUARD_IMAGES`, else `<cache>/images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("MCP_GUARD_IMAGES").map_or_else(|| cache_dir().join("images"), PathBuf::from)
}

fn must_exist(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: run `make setup` (tools/setup.sh) first",
        path.display()
    );
    path
}

/// A tool built or linked by `make setup`: kube-apiserver, kube-controller-manager, kubectl, etcd, helm.
pub fn bin(name: &str) -> PathBuf {
    must_exist(cache_dir().join("bin").join(name), name)
}

/// The Python interpreter of the test venv (with the MCP Python SDK from `tests/mcp/requirements.txt`).
pub fn python() -> PathBuf {
    must_exist(cache_dir().join("venv/bin/python"), "the test Python venv")
}

/// The npm packages from `tests/mcp/package.json`.
pub fn node_modules() -> PathBuf {
    must_exist(cache_dir().join("node/node_modules"), "the test npm packages")
}

/// An executable installed by one of the npm packages (`node_modules/.bin/NAME`).
pub fn node_bin(name: &str) -> PathBuf {
    must_exist(node_modules().join(".bin").join(name), name)
}

/// A binary of this workspace (debug build), e.g. `mcp-guard` or `mcp-guard-operator`.
/// `make test` builds them all before running the tests.
pub fn cargo_bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.exists(),
        "{name} not found at {}: run `cargo build --workspace --bins` first (`make test` does)",
        path.display()
    );
    path
}
