# The two commands of the README: `make demo` and `make test`. Both install what they need first (idempotent,
# cached in ~/.cache/mcp-guard). CI runs `make test` (see .ci/run).
.PHONY: setup demo test lint bench images

setup:
	tools/setup.sh

demo: setup images
	cargo build --workspace --bins
	tools/demo.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test: setup lint images
	cargo build --workspace --bins
	cargo test --workspace --no-fail-fast

# The guard, operator and example-server images, built by buildah from the project's Dockerfiles with base images
# made on this machine (offline), and imported into the node's containerd when it runs (tools/images.sh); and the
# previous release's chart and images for the upgrade test (tools/previous-release.sh: built once, then cached).
images: setup
	tools/images.sh
	tools/previous-release.sh >/dev/null

# Benchmarks print ratios measured side by side in one run; none of them is part of `make test`.
bench: setup
	bench/run.sh
	cargo build --release -p mcp-guard-operator --bin mcp-guard-operator
	cargo test -p mcp-guard-tests --release --test operator_bench -- --nocapture
	cargo test -p mcp-guard-tests --release --test webhook_bench -- --nocapture
