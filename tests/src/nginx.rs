//! nginx (Debian's package) as the reverse proxy in front of the guard, configured as in production:
//! `proxy_pass` over HTTP/1.1, the public Host passed on, buffering off so SSE streams flow.
//!
//! Each [`Nginx`] runs its own master process in the foreground with a private prefix directory (config,
//! temp paths, pid file), so tests never touch the system's nginx.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{Proc, tail, wait_for_tcp};
use crate::tools;

/// Debian's nginx binary (installed by `make setup`).
pub fn nginx_bin() -> PathBuf {
    let path = PathBuf::from("/usr/sbin/nginx");
    assert!(
        path.exists(),
        "nginx not found at {}: run `make setup` (installs Debian's nginx)",
        path.display()
    );
    path
}

/// A running nginx.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    /// Keeps the prefix directory alive as long as nginx runs.
    pub dir: tempfile::TempDir,
}

/// The `location` block of the production reverse-proxy shape: HTTP/1.1 to the upstream, the client's Host
/// passed on, no buffering in either direction (SSE), long read timeout (streams live long).
pub fn proxy_location(upstream: &str) -> String {
    format!(
        r#"
        location / {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
        }}
"#
    )
}

/// A whole `nginx.conf` around `http_body` (server blocks etc.), with every path inside `dir`.
pub fn config(dir: &std::path::Path, workers: usize, http_body: &str) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
user root;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log stderr warn;
events {{
    worker_connections 10000;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    {http_body}
}}
"#
    )
}

impl Nginx {
    /// Starts nginx with one `server` listening on 127.0.0.1 (a free port) whose body is `server_body`.
    pub fn start_server(server_body: &str) -> anyhow::Result<Nginx> {
        // Another test may take the free port before nginx binds it: then try another.
        let mut attempt = 0;
        loop {
            let port = tools::free_port();
            let http_body =
                format!("server {{\n        listen 127.0.0.1:{port};\n        {server_body}\n    }}");
            match Self::start_with(port, 1, |_dir| http_body.clone()) {
                Err(e) if attempt < 3 && e.to_string().contains("not nginx") => attempt += 1,
                started => return started,
            }
        }
    }

    /// Starts nginx as the reverse proxy to `upstream` (e.g. the guard's `http://127.0.0.1:PORT`).
    pub fn reverse_proxy(upstream: &str) -> anyhow::Result<Nginx> {
        Self::start_server(&proxy_location(upstream))
    }

    /// Starts nginx listening on `port` with `http_body` (built from the prefix directory) and `workers`
    /// worker processes.
    pub fn start_with(
        port: u16,
        workers: usize,
        http_body: impl FnOnce(&std::path::Path) -> String,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::tempdir()?;
        let body = http_body(dir.path());
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), workers, &body)).context("write nginx.conf")?;
        // Check the configuration first so a mistake shows nginx's own message.
        let test = Command::new(nginx_bin())
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .output()
            .context("run nginx -t")?;
        if !test.status.success() {
            bail!(
                "nginx -t rejected the config:\n{}",
                String::from_utf8_lossy(&test.stderr)
            );
        }
        let mut cmd = Command::new(nginx_bin());
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
        let mut proc = Proc::spawn("nginx", cmd)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if let Err(e) = wait_for_tcp(addr, Duration::from_secs(10)) {
            let _ = proc.ensure_running();
            bail!("{e}; nginx log:\n{}", tail(&proc.logs(), 20));
        }
        if !test_support::process::listens_on(proc.pid(), port) {
            bail!(
                "{addr} answers, but not nginx (another process took the port); nginx log:\n{}",
                tail(&proc.logs(), 20)
            );
        }
        Ok(Nginx { proc, port, dir })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
