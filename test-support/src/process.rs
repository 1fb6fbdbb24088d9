//! Child processes for tests: output captured to a log file, the whole process group killed on drop, and a
//! watchdog that kills it when the test process dies (a panic that aborts, a killed `cargo test`), so no test
//! leaves processes behind.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
pub use nix::sys::signal::Signal;
use nix::sys::signal::killpg;
use nix::unistd::Pid;

/// A running child process in its own process group.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The directory for this test process's logs: `target/test-logs/<pid>/`.
pub fn log_dir() -> PathBuf {
    let dir = crate::target_dir()
        .join("test-logs")
        .join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("create the test log directory");
    dir
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `target/test-logs/<pid>/<name>-<n>.log`.
    pub fn spawn(name: &str, cmd: Command) -> anyhow::Result<Proc> {
        Self::spawn_with(name, cmd, false)
    }

    /// Starts `cmd` with its stdout a pipe (read it through [`Proc::take_stdout`]) and stderr going to the log.
    pub fn spawn_piped(name: &str, cmd: Command) -> anyhow::Result<Proc> {
        Self::spawn_with(name, cmd, true)
    }

    fn spawn_with(name: &str, mut cmd: Command, piped: bool) -> anyhow::Result<Proc> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let log = log_dir().join(format!("{name}-{}.log", SEQ.fetch_add(1, Ordering::Relaxed)));
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        use std::os::unix::process::CommandExt;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(if piped { Stdio::piped() } else { out.into() })
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {name} ({:?})", cmd.get_program()))?;
        watch_parent(child.id());
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pipe of its stdout, when started by [`Proc::spawn_piped`] (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// How it exited, if it has.
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` to the process group (e.g. SIGTERM to test graceful shutdown).
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the whole process group and reaps the child.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Fails with the tail of the log when the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        bail!(
            "{} exited; its log {}:\n{}",
            self.name,
            self.log.display(),
            tail(&self.logs(), 40)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Kills the child's process group once this test process is gone, however it ended.
fn watch_parent(child: u32) {
    let parent = std::process::id();
    let script = format!(
        "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 1; done; \
         kill -9 -{child} 2>/dev/null || kill -9 {child} 2>/dev/null"
    );
    spawn_watchdog(&script);
}

/// Starts a watchdog shell script that outlives the test process. It is tiny and exits by itself once its work is
/// done; it is deliberately not tracked. It gets a process group of its own so that killing the test's group
/// (timeout, Ctrl-C) does not take it out.
pub fn spawn_watchdog(script: &str) {
    use std::os::unix::process::CommandExt;
    let _ = Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port`: a port from [`crate::free_port`] can be
/// taken by another test's process between the pick and the bind, and then "something answers" is not the
/// process the test started (Linux: `/proc/net/tcp` and the process's descriptors).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// Waits until `GET url` (plain http) answers with a 2xx status.
pub fn wait_for_http(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match crate::http1::blocking::get(url) {
            Ok(resp) if (200..300).contains(&resp.status) => return Ok(()),
            Ok(resp) => format!("status {}", resp.status),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("GET {url} not ready after {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
