//! Releases: the workflows pass the real actionlint (built from its Go module by `make setup`); the one
//! version is written alike in the crates, the chart, the image references and the changelog, and
//! `tools/bump-version.sh` keeps it so; the release workflow builds the same Dockerfiles, under the same image
//! names, as tools/images.sh builds for the real-node tests and the chart installs.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testkit::tools::{bin, workspace_root};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn workflows_pass_actionlint() {
    let root = workspace_root();
    let (ok, out) = run(Command::new(bin("actionlint"))
        .arg("-no-color")
        .current_dir(&root));
    assert!(ok, "actionlint:\n{out}");
    for wf in ["ci.yml", "release.yml"] {
        assert!(root.join(".github/workflows").join(wf).exists(), "{wf}");
    }

    // The check is real: an unknown input of a known action and an undefined job output are findings.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".github/workflows")).unwrap();
    std::fs::write(
        dir.path().join(".github/workflows/bad.yml"),
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v5\n        \
         with:\n          no-such-input: 1\n      - run: echo ${{ needs.nope.outputs.x }}\n",
    )
    .unwrap();
    // actionlint looks for the workflows of the git repository it runs in.
    let (ok, out) = run(Command::new("git").args(["init", "-q"]).current_dir(dir.path()));
    assert!(ok, "{out}");
    let (ok, out) = run(Command::new(bin("actionlint"))
        .arg("-no-color")
        .current_dir(dir.path()));
    assert!(!ok, "{out}");
    assert!(out.contains("no-such-input") && out.contains("nope"), "{out}");
}

/// The versions written in `root`, checked against each other: the crates' (workspace), the chart's version
/// and appVersion, every `ghcr.io/mcp-guard/<image>:<tag>` in tracked files, and the changelog.
fn check_versions(root: &Path) -> String {
    let cargo: toml_like::Cargo = toml_like::read(&root.join("Cargo.toml"));
    let version = cargo.workspace_version;
    let chart = yaml(&root.join("charts/mcp-guard/Chart.yaml"));
    assert_eq!(chart["version"], version.as_str(), "Chart.yaml version");
    assert_eq!(chart["appVersion"], version.as_str(), "Chart.yaml appVersion");

    let (ok, files) = run(Command::new("git").args(["ls-files"]).current_dir(root));
    assert!(ok, "{files}");
    for file in files.lines().filter(|f| *f != "CHANGELOG.md") {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        for (i, _) in text.match_indices("ghcr.io/mcp-guard/") {
            let reference: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "./-:_@".contains(*c))
                .collect();
            if let Some((_, tag)) = reference.rsplit_once(':')
                && tag.starts_with(|c: char| c.is_ascii_digit())
            {
                assert_eq!(tag.trim_end_matches('.'), version, "{file}: {reference}");
            }
        }
    }

    // The install commands of the docs.
    for doc in ["README.md", "docs/install.md", "docs/guard.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (i, _) in text.match_indices("charts/mcp-guard --version ") {
            let v: String = text[i + 27..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            assert_eq!(v, version, "{doc}: the chart version to install");
        }
        for (i, _) in text.match_indices("mcp-guard_") {
            if let Some(v) = text[i + 10..]
                .split("-1_")
                .next()
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            {
                assert_eq!(v, version, "{doc}: the .deb's name");
            }
        }
    }

    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains("Keep a Changelog"), "the format is named");
    let entries: Vec<&str> = changelog.lines().filter(|l| l.starts_with("## [")).collect();
    assert_eq!(
        entries.first(),
        Some(&"## [Unreleased]"),
        "Unreleased comes first: {entries:?}"
    );
    // The newest release, if any, is the current version (the bump writes both), or main is past it on
    // `X.Y.Z-dev`, a version of its own so that its images never share a tag with the release's.
    if let Some(top) = entries.get(1) {
        let released = &top[4..top.find(']').unwrap()];
        match version.strip_suffix("-dev") {
            Some(next) => assert!(
                numbers(next) > numbers(released),
                "{version} is not past the newest release {released}"
            ),
            None => assert!(
                top.starts_with(&format!("## [{version}] - ")),
                "{top} vs {version}"
            ),
        }
    }
    for entry in &entries {
        let name = &entry[3..entry.find(']').unwrap() + 1];
        assert!(
            changelog.contains(&format!("\n{name}: https://")),
            "no link reference for {name}"
        );
    }
    version
}

/// `X.Y.Z` as numbers, compared as semantic versions compare their cores.
fn numbers(version: &str) -> Vec<u64> {
    version
        .split('.')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("not X.Y.Z: {version}")))
        .collect()
}

/// Just enough of Cargo.toml: `[workspace.package] version`.
mod toml_like {
    pub struct Cargo {
        pub workspace_version: String,
    }

    pub fn read(path: &std::path::Path) -> Cargo {
        let text = std::fs::read_to_string(path).unwrap();
        let section = text.split("[workspace.package]").nth(1).unwrap();
        let line = section.lines().find(|l| l.starts_with("version")).unwrap();
        Cargo {
            workspace_version: line.split('"').nth(1).unwrap().to_string(),
        }
    }
}

#[test]
fn one_version_everywhere() {
    let version = check_versions(&workspace_root());
    assert_eq!(
        version,
        env!("CARGO_PKG_VERSION"),
        "this crate inherits the workspace version"
    );
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    for krate in [
        "mcp-guard",
        "mcp-guard-operator",
        "mcp-guard-config",
        "kubectl-mcp-guard",
    ] {
        assert!(
            lock.contains(&format!("name = \"{krate}\"\nversion = \"{version}\"")),
            "Cargo.lock's {krate}"
        );
    }
}

#[test]
fn bump_version_sets_it_everywhere() {
    // A copy of the tracked files (a git repository of its own), bumped there.
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path();
    let (ok, files) = run(Command::new("git").args(["ls-files"]).current_dir(&root));
    assert!(ok, "{files}");
    for file in files.lines() {
        let (from, to) = (root.join(file), copy.join(file));
        if from.is_file() {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
    }
    for args in [&["init", "-q"][..], &["add", "-A"]] {
        let (ok, out) = run(Command::new("git").args(args).current_dir(copy));
        assert!(ok, "{out}");
    }
    let before = check_versions(copy);
    let (ok, out) = run(Command::new(copy.join("tools/bump-version.sh"))
        .args(["9.8.7", "2030-01-02"])
        .current_dir(copy));
    assert!(ok, "{out}");
    assert_eq!(check_versions(copy), "9.8.7");
    let changelog = std::fs::read_to_string(copy.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.contains("## [Unreleased]\n\n## [9.8.7] - 2030-01-02\n"),
        "{changelog}"
    );
    assert!(changelog.contains("[9.8.7]: https://github.com/mcp-guard/mcp-guard/releases/tag/v9.8.7"));
    let settings = std::fs::read_to_string(copy.join("operator/src/settings.rs")).unwrap();
    // Spelled in two parts: this file is one of those checked for image references.
    let image = format!("\"{}:9.8.7\"", "ghcr.io/mcp-guard/mcp-guard");
    assert!(settings.contains(&image), "the default sidecar image");
    let lock = std::fs::read_to_string(copy.join("Cargo.lock")).unwrap();
    assert!(lock.contains("name = \"mcp-guard\"\nversion = \"9.8.7\""));
    assert!(!lock.contains(&format!("name = \"mcp-guard\"\nversion = \"{before}\"")));

    // A second release links its entry to the comparison with the first; the same version twice is refused.
    let (ok, out) = run(Command::new(copy.join("tools/bump-version.sh"))
        .args(["9.9.0", "2030-02-03"])
        .current_dir(copy));
    assert!(ok, "{out}");
    assert_eq!(check_versions(copy), "9.9.0");
    let changelog = std::fs::read_to_string(copy.join("CHANGELOG.md")).unwrap();
    assert!(changelog.contains("[9.9.0]: https://github.com/mcp-guard/mcp-guard/compare/v9.8.7...v9.9.0"));
    let (ok, out) = run(Command::new(copy.join("tools/bump-version.sh"))
        .arg("9.9.0")
        .current_dir(copy));
    assert!(!ok && out.contains("already has an entry"), "{out}");

    // After the release, main opens the next version: written everywhere, the changelog left as it is.
    let (ok, out) = run(Command::new(copy.join("tools/bump-version.sh"))
        .arg("9.10.0-dev")
        .current_dir(copy));
    assert!(ok, "{out}");
    assert_eq!(check_versions(copy), "9.10.0-dev");
    assert_eq!(
        std::fs::read_to_string(copy.join("CHANGELOG.md")).unwrap(),
        changelog
    );
}

#[test]
fn release_workflow_builds_the_images_the_tests_build() {
    let root = workspace_root();
    let wf = yaml(&root.join(".github/workflows/release.yml"));
    let images = &wf["jobs"]["images"];
    let matrix = images["strategy"]["matrix"]["include"].as_array().unwrap();
    let built: Vec<(String, String)> = matrix
        .iter()
        .map(|m| {
            (
                m["image"].as_str().unwrap().into(),
                m["dockerfile"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        built,
        [
            ("mcp-guard".to_string(), "sidecar/Dockerfile".to_string()),
            (
                "mcp-guard-operator".to_string(),
                "operator/Dockerfile".to_string()
            )
        ]
    );
    // tools/images.sh builds the same files under the same names (its binary_image lines).
    let images_sh = std::fs::read_to_string(root.join("tools/images.sh")).unwrap();
    for (image, dockerfile) in &built {
        assert!(
            images_sh
                .lines()
                .any(|l| l.starts_with(&format!("binary_image {image} "))
                    && l.ends_with(&format!("\"$ROOT/{dockerfile}\""))),
            "tools/images.sh does not build {image} from {dockerfile}"
        );
    }
    // The chart's default repositories are where the workflow pushes.
    let values = yaml(&root.join("charts/mcp-guard/values.yaml"));
    let prefix = wf["env"]["IMAGE_PREFIX"].as_str().unwrap();
    assert_eq!(
        values["image"]["repository"],
        format!("{prefix}/mcp-guard-operator").as_str()
    );
    assert_eq!(
        values["policy"]["sidecar"]["image"]["repository"],
        format!("{prefix}/mcp-guard").as_str()
    );

    let steps = images["steps"].as_array().unwrap();
    let build = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("docker/build-push-action@"))
        })
        .unwrap();
    assert_eq!(build["with"]["platforms"], "linux/amd64,linux/arm64");
    assert_eq!(build["with"]["push"], true);
    assert_eq!(build["with"]["sbom"], true);
    // The Dockerfiles' defaults (build from source, distroless base): no BINARY_FROM / BASE_IMAGE override.
    assert!(build["with"]["build-args"].is_null(), "{build}");
    let text = std::fs::read_to_string(root.join(".github/workflows/release.yml")).unwrap();
    for needed in [
        "cosign sign --yes",
        "cosign sign-blob",
        "sha256sum",
        "helm push",
        "oci://ghcr.io/mcp-guard/charts",
        "cargo deb",
    ] {
        assert!(text.contains(needed), "release.yml lacks {needed:?}");
    }
    // Every action is pinned to a version.
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("- uses:") || l.trim_start().starts_with("uses:"))
    {
        let uses = line.split("uses:").nth(1).unwrap().trim();
        if !uses.starts_with("./") {
            let (_, version) = uses
                .split_once('@')
                .unwrap_or_else(|| panic!("{uses} is not pinned"));
            assert!(version.starts_with('v'), "{uses}");
        }
    }
}

/// tools/previous-release names the release the upgrade test (node_upgrade) starts from: the newest one in the
/// changelog while main is on `X.Y.Z-dev` (the one before it on a release commit, before the `-dev` step), at a
/// commit whose chart says that version, which the tag `vX.Y.Z` names where the clone has it.
#[test]
fn the_upgrade_test_starts_from_the_newest_release() {
    let root = workspace_root();
    let version = check_versions(&root);
    let pinned = std::fs::read_to_string(root.join("tools/previous-release")).unwrap();
    let lines: Vec<&str> = pinned
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let [line] = lines[..] else {
        panic!("tools/previous-release holds one `VERSION COMMIT` line: {lines:?}");
    };
    let (previous, commit) = line.split_once(' ').expect("VERSION COMMIT");
    assert!(
        commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
        "a full commit hash: {commit:?}"
    );
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    let released: Vec<&str> = changelog
        .lines()
        .filter_map(|l| l.strip_prefix("## ["))
        .filter_map(|l| l.split(']').next())
        .filter(|v| *v != "Unreleased")
        .collect();
    let expected = if version.ends_with("-dev") {
        released.first()
    } else {
        released.get(1)
    };
    assert_eq!(Some(&previous), expected, "main {version}, releases {released:?}");

    let (present, _) =
        run(Command::new("git")
            .current_dir(&root)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")]));
    if !present {
        // Only a shallow clone may lack it (tools/previous-release.sh says how to fetch it).
        let (_, shallow) = run(Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "--is-shallow-repository"]));
        assert_eq!(
            shallow.trim(),
            "true",
            "commit {commit} is not in this repository"
        );
        eprintln!("commit {commit} is not in this shallow clone: its chart is not checked");
        return;
    }
    let (ok, chart) = run(Command::new("git")
        .current_dir(&root)
        .args(["show", &format!("{commit}:charts/mcp-guard/Chart.yaml")]));
    assert!(ok, "{chart}");
    assert!(
        chart.contains(&format!("\nappVersion: \"{previous}\""))
            || chart.contains(&format!("\nappVersion: {previous}\n")),
        "the chart at {commit} is {previous}'s:\n{chart}"
    );
    let (tagged, tag) = run(Command::new("git")
        .current_dir(&root)
        .args(["rev-parse", &format!("v{previous}^{{commit}}")]));
    if tagged {
        assert_eq!(tag.trim(), commit, "the tag v{previous}");
    }
}
