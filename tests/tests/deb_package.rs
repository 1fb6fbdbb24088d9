//! The standalone guard's Debian package, built by the real cargo-deb (`make setup` installs it) as the release
//! builds it (the static musl binary of the `dist` profile): its control data and files, then installed for real
//! (`dpkg -i`) and removed again (`dpkg --purge`, also when the test fails). No systemd runs as PID 1 here, so
//! the unit is checked with `systemd-analyze verify` (Debian's systemd, installed by `make setup`) and its
//! ExecStart command line, with its EnvironmentFile, is run as an unprivileged user (what DynamicUser gives it)
//! in front of a real MCP Python SDK server: an allowed Host is served, a forged one refused with 421.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::http::raw;
use testkit::mcp::{PyServer, Transport, assert_guard_rejection, initialize_request, loopback};
use testkit::process::{Proc, wait_for_http};
use testkit::tools::{cache_dir, free_port, workspace_root};

const UNIT: &str = "/lib/systemd/system/mcp-guard.service";
/// The release's target for amd64: static binaries.
const MUSL: &str = "x86_64-unknown-linux-musl";
/// A uid/gid nobody uses, standing in for the transient user DynamicUser allocates.
const SERVICE_UID: u32 = 61_234;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// Purges the package on drop, so the machine is left as it was found.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "mcp-guard"]).output();
    }
}

/// The package as the release workflow builds it (`cargo deb -p mcp-guard --profile dist --target <musl>`), from
/// the static binary that `make images` built for the guard's image (tools/static-binary.sh, cached): assembling
/// the package is then all that is left, instead of a cold optimised build.
fn build_deb(dir: &Path) -> PathBuf {
    let target = dir.join("target");
    let binaries = target.join(MUSL).join("dist");
    run(Command::new(workspace_root().join("tools/static-binary.sh"))
        .args(["mcp-guard", "mcp-guard", "dist"])
        .arg(&binaries));
    let text = run(Command::new(cache_dir().join("bin/cargo-deb"))
        .args([
            "--locked",
            "--no-build",
            "-p",
            "mcp-guard",
            "--profile",
            "dist",
            "--target",
            MUSL,
        ])
        .arg("--output")
        .arg(dir)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root()));
    // cargo-deb prints the package's path.
    let line = text.lines().find(|l| l.trim().ends_with(".deb"));
    PathBuf::from(line.unwrap_or_else(|| panic!("no .deb path in:\n{text}")).trim())
}

/// `KEY=VALUE` lines of a systemd unit section or an environment file (the last value of a key wins, except
/// that every value is kept in order).
fn assignments(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    map
}

#[test]
fn the_deb_installs_a_hardened_unit_whose_command_guards_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    // The static binary, before packaging strips its symbols, copies through mcp-guard-memcpy, not musl's
    // `memcpy` (a slow string move for every copy of 8 bytes or more, docs/performance.md): musl's object, which
    // also defines `__memcpy_fwd` for its `memmove`, is not linked in.
    let binary = dir.path().join("target").join(MUSL).join("dist/mcp-guard");
    let symbols = run(Command::new("nm").arg(&binary));
    let defines = |name: &str| {
        symbols
            .lines()
            .any(|l| l.split_whitespace().last() == Some(name) && l.contains(" T "))
    };
    assert!(
        defines("memcpy") && defines("memmove") && !symbols.contains("__memcpy_fwd"),
        "the static binary does not copy through mcp-guard-memcpy"
    );

    // Control data: the version of the workspace, the two conffiles.
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains("Package: mcp-guard"), "{info}");
    assert!(
        info.contains(&format!("Version: {}-1", env!("CARGO_PKG_VERSION"))),
        "{info}"
    );
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/mcp-guard/mcp-guard.env", "/etc/mcp-guard/config.json"]
    );
    let contents = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    for path in [
        "./usr/bin/mcp-guard",
        &format!(".{UNIT}"),
        "./usr/share/doc/mcp-guard/copyright",
    ] {
        assert!(contents.contains(path), "{path} not in the package:\n{contents}");
    }

    // Installed for real, one test at a time on this machine (dpkg's own lock refuses a second one).
    let lock = std::fs::File::create("/run/mcp-guard-deb-test.lock").unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "mcp-guard"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("installed"),
        "a package mcp-guard is installed already; this test would replace and remove it"
    );
    let installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(Path::new("/usr/bin/mcp-guard").exists());
    // The static binary allocates through mimalloc, not musl's allocator (one lock for every call: a third more
    // CPU time per request under two workers, docs/performance.md); mimalloc says so when asked to be verbose.
    let version = Command::new("/usr/bin/mcp-guard")
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&version.stderr);
    assert!(
        version.status.success() && stderr.contains("mimalloc: process init"),
        "the packaged binary does not allocate through mimalloc: {stderr}"
    );

    // The unit: systemd's own check, and the hardening it promises.
    run(Command::new("systemd-analyze").args(["verify", UNIT]));
    let unit = assignments(&std::fs::read_to_string(UNIT).unwrap());
    let one = |k: &str| {
        unit.get(k)
            .map(|v| v.join(" "))
            .unwrap_or_else(|| panic!("no {k}= in {UNIT}"))
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert!(
        !unit.contains_key("User"),
        "no fixed user: DynamicUser allocates one"
    );

    // The unit's command line with its environment file, as the service's user, in front of a real server.
    let env_file = assignments(&std::fs::read_to_string(one("EnvironmentFile")).unwrap());
    assert_eq!(
        env_file["MCP_GUARD_UPSTREAM"],
        ["http://127.0.0.1:8000"],
        "the example upstream"
    );
    let server = PyServer::start(Transport::StreamableHttp).unwrap();
    let (port, admin) = (free_port(), free_port());
    let exec = one("ExecStart");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        argv[..],
        ["/usr/bin/mcp-guard", "--config", "/etc/mcp-guard/config.json"]
    );
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={SERVICE_UID}"),
        &format!("--regid={SERVICE_UID}"),
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ])
    .args(&argv)
    .env_clear();
    for (k, v) in &env_file {
        cmd.env(k, v.last().unwrap());
    }
    // The ports of this test instead of the example's.
    cmd.env("MCP_GUARD_LISTEN", loopback(port).to_string())
        .env("MCP_GUARD_UPSTREAM", server.base_url())
        .env("MCP_GUARD_ADMIN_LISTEN", loopback(admin).to_string());
    let mut guard = Proc::spawn("deb-mcp-guard", cmd).unwrap();
    wait_for_http(
        &format!("http://127.0.0.1:{admin}/readyz"),
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", guard.logs()));
    let uid_line = std::fs::read_to_string(format!("/proc/{}/status", guard.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == SERVICE_UID.to_string()),
        "{uid_line}"
    );

    // An allowed host of the example config reaches the server; a forged one is refused by the guard.
    let ok = raw(
        loopback(port),
        &initialize_request("/mcp", "mcp.example.com", &[]),
    )
    .unwrap();
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), guard.logs());
    assert!(ok.text().contains("protocolVersion"), "{}", ok.text());
    let refused = raw(loopback(port), &initialize_request("/mcp", "attacker.test", &[])).unwrap();
    assert_guard_rejection(
        &refused,
        421,
        "host_not_allowed",
        "attacker.test",
        "a forged Host",
    );
    guard.kill();

    drop(installed);
    assert!(!Path::new("/usr/bin/mcp-guard").exists(), "purged");
    assert!(!Path::new("/etc/mcp-guard").exists(), "conffiles purged");
}
