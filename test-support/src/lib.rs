//! The test helpers every test of this workspace shares, in one place and without Kubernetes (the guard's own
//! tests depend on this crate and must not pull kube in):
//!
//! - [`eventually`]: polls a condition until it holds or a deadline passes (no test asserts on time);
//! - [`free_port`], [`workspace_root`], [`target_dir`];
//! - [`http1`]: a raw HTTP/1 client and the one reader of HTTP/1 messages off the wire;
//! - [`process`]: child processes in their own process group, which cannot outlive the test;
//! - [`guard`]: the real `mcp-guard` binary on free ports, started until ready.
#![allow(clippy::unwrap_used)]

use std::fmt::Display;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod guard;
pub mod http1;
pub mod process;

/// The longest pause between two polls of [`eventually`]. Polls start 10 ms apart and back off to this, so that
/// a condition that soon holds is seen soon and a slow one (a `kubectl` run per poll) does not load the machine.
pub const MAX_POLL_PAUSE: Duration = Duration::from_millis(250);

/// What one poll of [`eventually`] found: done, with a value, or not yet, with what was seen instead.
pub trait Outcome {
    type Value;
    fn done(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn done(self) -> Result<(), String> {
        if self { Ok(()) } else { Err("still false".into()) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.ok_or_else(|| "still nothing".into())
    }
}

impl<T, E: Display> Outcome for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls `poll` until it is done (`true`, `Some`, `Ok`) and returns its value; after `timeout`, panics with
/// `what` and what the last poll saw.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, poll: F) -> T::Value
where
    T: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    eventually_or(what, timeout, String::new, poll).await
}

/// [`eventually`], adding `context()` (taken only on failure: a log, the cluster's state) to the panic message.
pub async fn eventually_or<T, F, Fut>(
    what: &str,
    timeout: Duration,
    context: impl FnOnce() -> String,
    mut poll: F,
) -> T::Value
where
    T: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        match poll().await.done() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not after {timeout:?}: {last}\n{}", context())
            }
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_POLL_PAUSE);
            }
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (another process may take it before it is used: callers
/// that bind it retry on other ports, as [`guard`] does).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// The root of this workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits inside the workspace")
        .to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs `future` to completion on a runtime of its own, on a thread of its own: the blocking helpers share the
/// async code this way, whether or not their caller runs inside a runtime.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for a blocking helper")
                .block_on(future)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_value_that_is_done() {
        let mut n = 0;
        let got = eventually("n reaches 3", Duration::from_secs(30), || {
            n += 1;
            let now = n;
            async move { (now >= 3).then_some(now) }
        })
        .await;
        assert_eq!(got, 3);
        let ok: u8 = eventually("ok", Duration::from_secs(30), || async { Ok::<_, String>(7) }).await;
        assert_eq!(ok, 7);
        eventually("true", Duration::from_secs(30), || async { true }).await;
    }

    #[tokio::test]
    #[should_panic(expected = "the answer: not after 0ns: no answer yet\nthe log")]
    async fn eventually_names_what_it_waited_for_the_last_error_and_the_context() {
        eventually_or(
            "the answer",
            Duration::ZERO,
            || "the log".to_string(),
            || async { Err::<(), _>("no answer yet") },
        )
        .await;
    }

    #[test]
    fn block_on_works_inside_a_runtime_too() {
        assert_eq!(block_on(async { 1 }), 1);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(async { block_on(async { 2 }) }), 2);
    }
}
