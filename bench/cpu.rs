//! How busy the machine was with work that is not the benchmark's: the machine's busy
//! time (/proc/stat, steal included) minus this process's and its live children's CPU
//! time. Other processes on the same two cores make every figure smaller; this says by
//! how much they could have.

use std::sync::Mutex;
use std::time::Instant;

/// Servers the benchmark uses but did not start (a local PostgreSQL's postmaster): their
/// CPU time, their live children's and their reaped children's counts as the
/// benchmark's own, not as other processes'.
static SERVERS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Count `pid` and its children as the benchmark's own from now on.
pub fn count_as_ours(pid: u32) {
    if let Ok(mut v) = SERVERS.lock() {
        if !v.contains(&pid) {
            v.push(pid);
        }
    }
}

/// The parent process id of `pid` (field 4 of /proc/PID/stat).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The live children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| parent_of(*p) == Some(pid))
        .collect()
}

fn servers_ticks() -> u64 {
    let servers = SERVERS.lock().map(|v| v.clone()).unwrap_or_default();
    servers
        .iter()
        .map(|s| {
            process_ticks(&s.to_string(), true)
                + children_of(*s)
                    .iter()
                    .map(|c| process_ticks(&c.to_string(), false))
                    .sum::<u64>()
        })
        .sum()
}

/// Clock ticks per second of /proc (USER_HZ; 100 on Linux everywhere in practice).
const HZ: f64 = 100.0;

fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle)
}

/// utime + stime (+ cutime + cstime for this process: reaped children) in ticks.
fn process_ticks(pid: &str, with_children: bool) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may contain spaces: fields start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // rest[0] is field 3 (state); utime is field 14 → index 11.
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    get(11) + get(12) + if with_children { get(13) + get(14) } else { 0 }
}

/// CPU seconds of this process's reaped children (cutime + cstime).
pub fn reaped_children_secs() -> f64 {
    (process_ticks("self", true) - process_ticks("self", false)) as f64 / HZ
}

fn ours(children: &[u32]) -> u64 {
    servers_ticks()
        + process_ticks("self", true)
        + children
            .iter()
            .map(|p| process_ticks(&p.to_string(), false))
            .sum::<u64>()
}

pub struct Meter {
    busy: u64,
    ours: u64,
    at: Instant,
}

impl Meter {
    pub fn start(children: &[u32]) -> Meter {
        Meter {
            busy: machine_busy_ticks(),
            ours: ours(children),
            at: Instant::now(),
        }
    }

    /// The share of the machine's capacity (0–1) used by others since `start`.
    pub fn foreign(&self, children: &[u32], cores: usize) -> f64 {
        let busy = machine_busy_ticks().saturating_sub(self.busy) as f64;
        let own = ours(children).saturating_sub(self.ours) as f64;
        let capacity = self.at.elapsed().as_secs_f64() * HZ * cores as f64;
        if capacity <= 0.0 {
            return 0.0;
        }
        ((busy - own) / capacity).clamp(0.0, 1.0)
    }
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Where the CPU went during a run: the servers counted as ours ([`count_as_ours`]: a
/// local PostgreSQL), the given processes (authd nodes), and this process (the load
/// generator), each as a share of the machine's capacity.
pub struct Split {
    servers: u64,
    nodes: u64,
    own: u64,
    at: Instant,
}

fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter()
        .map(|p| process_ticks(&p.to_string(), false))
        .sum()
}

impl Split {
    pub fn start(nodes: &[u32]) -> Split {
        Split {
            servers: servers_ticks(),
            nodes: ticks_of(nodes),
            own: process_ticks("self", false),
            at: Instant::now(),
        }
    }

    /// (servers, nodes, this process) shares of the machine (0–1) since `start`.
    pub fn shares(&self, nodes: &[u32], cores: usize) -> (f64, f64, f64) {
        let capacity = (self.at.elapsed().as_secs_f64() * HZ * cores as f64).max(1e-9);
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / capacity;
        (
            share(servers_ticks(), self.servers),
            share(ticks_of(nodes), self.nodes),
            share(process_ticks("self", false), self.own),
        )
    }
}
