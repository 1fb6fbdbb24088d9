//! The real `mcp-guard` binary for tests: on free ports of 127.0.0.1 (`--listen`, `--admin-listen`), started
//! until `/readyz` says what the test waits for, its process group killed when it is dropped. The binary is the
//! caller's to name: the guard's own tests pass `env!("CARGO_BIN_EXE_mcp-guard")`, so that they never run a stale
//! build.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::http1;
use crate::process::{Proc, Signal, tail};

/// How long a guard may take to be ready (a busy machine starts processes slowly).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`Launch::start`] waits for before it hands the guard over.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// `/readyz` answers 200.
    Yes,
    /// The guard serves, and `/readyz` answers 503 because its upstream does not accept connections (yet).
    AllButUpstream,
    /// The guard serves, and `/readyz` answers 503 with a body that contains this.
    NotReadyBecause(&'static str),
}

impl Ready {
    fn holds(self, readyz: &http1::Response) -> bool {
        match self {
            Ready::Yes => readyz.status == 200,
            Ready::AllButUpstream => {
                readyz.status == 503 && readyz.text().contains("does not accept connections")
            }
            Ready::NotReadyBecause(why) => readyz.status == 503 && readyz.text().contains(why),
        }
    }
}

/// How to start a guard: the binary, the arguments after `--listen` and `--admin-listen`, what to wait for.
#[derive(Clone, Debug)]
pub struct Launch {
    binary: PathBuf,
    args: Vec<String>,
    ready: Ready,
    stdout_piped: bool,
}

impl Launch {
    pub fn new<S: Into<String>>(binary: impl Into<PathBuf>, args: impl IntoIterator<Item = S>) -> Launch {
        Launch {
            binary: binary.into(),
            args: args.into_iter().map(Into::into).collect(),
            ready: Ready::Yes,
            stdout_piped: false,
        }
    }

    /// Waits for `ready` instead of a `200` from `/readyz`.
    pub fn until(mut self, ready: Ready) -> Launch {
        self.ready = ready;
        self
    }

    /// The guard's stdout (its audit log) a pipe: [`Proc::take_stdout`]. Its stderr goes to the log either way.
    pub fn stdout_piped(mut self) -> Launch {
        self.stdout_piped = true;
        self
    }

    /// Starts the guard and waits until it is ready. A port that [`crate::free_port`] handed out twice (to this
    /// guard and to something started meanwhile) makes the guard exit with `cannot listen on`: then again on
    /// other ports.
    pub async fn start(self) -> anyhow::Result<Guard> {
        let mut attempt = 1;
        loop {
            match self.start_once().await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("cannot listen on") => attempt += 1,
                other => return other,
            }
        }
    }

    /// [`Launch::start`] for tests that run no async runtime of their own.
    pub fn start_blocking(self) -> anyhow::Result<Guard> {
        crate::block_on(self.start())
    }

    async fn start_once(&self) -> anyhow::Result<Guard> {
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .args(&self.args)
            .env_remove("MCP_GUARD_ALLOW_HOSTS")
            .env("RUST_BACKTRACE", "1");
        let mut proc = if self.stdout_piped {
            Proc::spawn_piped("mcp-guard", cmd)?
        } else {
            Proc::spawn("mcp-guard", cmd)?
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            proc.ensure_running()?;
            if let Ok(r) = http1::get(admin, "/readyz").await
                && self.ready.holds(&r)
            {
                return Ok(Guard { proc, addr, admin });
            }
            if Instant::now() > deadline {
                bail!(
                    "mcp-guard not {:?} after {START_TIMEOUT:?}; its log:\n{}",
                    self.ready,
                    tail(&proc.logs(), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A running guard.
pub struct Guard {
    pub proc: Proc,
    /// Where it serves (`--listen`).
    pub addr: SocketAddr,
    /// Its admin address: `/livez`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
}

impl Guard {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// Its Prometheus metrics text, blocking.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let r = http1::blocking::get(&format!("http://{}/metrics", self.admin))?;
        if r.status != 200 {
            bail!("/metrics answered {}", r.status);
        }
        Ok(r.text())
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let body = http1::get(self.admin, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e:#}\n{}", self.logs()))
            .text();
        body.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn signal(&self, signal: Signal) {
        self.proc.signal(signal);
    }

    /// Waits for the process to exit, up to `timeout`; `None` when it still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.proc.try_wait().ok().flatten() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}
