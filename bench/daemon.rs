//! Child processes under test: authd (and the bench's own bare server), started with
//! `--listen 127.0.0.1:0`, found by the `listening on ADDR` line they print, measured
//! through /proc/PID/status, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

pub struct Proc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub pid: u32,
    pub name: String,
    log: std::path::PathBuf,
}

impl Proc {
    /// Start `cmd` (stdout piped, stderr to `log`) and wait for `listening on ADDR`.
    pub fn start(mut cmd: Command, name: &str, log: &Path) -> Result<Proc> {
        let log_file = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        // Read the announcement, then keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(a) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(a.to_string());
                        sent = true;
                    }
                }
            }
        });
        let pid = child.id();
        let mut p = Proc {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            name: name.to_string(),
            log: log.to_path_buf(),
        };
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                p.kill();
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(10).collect();
                bail!(
                    "{name} did not announce `listening on` within 60 s; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        };
        p.addr = addr
            .parse()
            .with_context(|| format!("{name} announced an unreadable address {addr:?}"))?;
        Ok(p)
    }

    /// None while the process runs; once it has exited (or was never started), how it
    /// ended and the last lines of its log.
    pub fn exited(&mut self) -> Option<String> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return None,
            Some(Ok(Some(status))) => status.to_string(),
            Some(Err(e)) => format!("unknown state ({e})"),
            None => "not running".to_string(),
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Some(format!(
            "{} (pid {}) exited: {status}; {} ends:\n{}",
            self.name,
            self.pid,
            self.log.display(),
            tail.join("\n")
        ))
    }

    /// Where its stderr goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> Result<(u64, u64)> {
        memory_kib(self.pid)
    }

    /// SIGTERM, then wait (up to 30 s) for a graceful exit; SIGKILL after that.
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SIGTERM: authd's graceful shutdown (the `kill` utility: no signal crate needed).
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("  note: {} exited with {status}", self.name);
                }
                return Ok(());
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether process `pid` has exited (gone, or a zombie not yet reaped).
pub fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Samples a process's VmRSS every 50 ms until dropped; `peak()` is the highest seen.
pub struct RssSampler {
    stop: mpsc::Sender<()>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let (stop, rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                if let Ok((rss, _)) = memory_kib(pid) {
                    peak = peak.max(rss);
                }
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return peak,
                }
            }
        });
        RssSampler {
            stop,
            handle: Some(handle),
        }
    }

    /// The highest VmRSS seen, in KiB.
    pub fn peak(mut self) -> u64 {
        let _ = self.stop.send(());
        self.handle.take().and_then(|h| h.join().ok()).unwrap_or(0)
    }
}
