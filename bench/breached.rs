//! Issue 14, part 3: the breached-password list searched on disk. A sorted SHA-1 file in
//! the Pwned Passwords format (`SHA1HEX:COUNT`, CRLF) is generated, then looked up through
//! `authcore::breached` one password at a time, half of them listed; the figures are the
//! time per lookup and how much the process's memory grew.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use sha1::{Digest, Sha1};

/// What one run measured.
pub struct Measured {
    pub lines: u64,
    pub file_mib: f64,
    pub lookups: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// VmRSS after the lookups minus before them, in KiB (negative: shrank).
    pub rss_growth_kib: i64,
}

fn digest(p: &str) -> [u8; 20] {
    Sha1::digest(p.as_bytes()).into()
}

/// Writes `lines` hashes of `listed-{i}` to `path`, sorted; returns the file size.
pub fn generate(path: &Path, lines: u64) -> Result<u64> {
    let mut hashes: Vec<[u8; 20]> = (0..lines).map(|i| digest(&format!("listed-{i}"))).collect();
    hashes.sort_unstable();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = String::with_capacity(64);
    for (i, h) in hashes.iter().enumerate() {
        line.clear();
        for b in h {
            use std::fmt::Write as _;
            let _ = write!(line, "{b:02X}");
        }
        let _ = std::fmt::Write::write_fmt(&mut line, format_args!(":{}\r\n", i % 1000 + 1));
        w.write_all(line.as_bytes())?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// `lookups` lookups in `path` (of `lines` lines), alternately listed and not.
pub fn measure(path: &Path, lines: u64, lookups: u64) -> Result<Measured> {
    let list = authcore::breached::open(path).map_err(anyhow::Error::msg)?;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // Warm the path once (the first open of a file, the allocator).
    let _ = list.contains("warm-up")?;
    let rss0 = crate::daemon::memory_kib(std::process::id())?.0;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for n in 0..lookups {
        // xorshift: spread over the whole file, no dependency on a random crate.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let listed = n % 2 == 0;
        let p = if listed {
            format!("listed-{}", state % lines)
        } else {
            format!("unlisted-{state}")
        };
        let t0 = Instant::now();
        let found = list.contains(&p)?;
        hist.record((t0.elapsed().as_nanos() as u64 / 1000).max(1))?;
        ensure!(found == listed, "{p}: found {found}, listed {listed}");
    }
    let rss1 = crate::daemon::memory_kib(std::process::id())?.0;
    let size = std::fs::metadata(path)?.len();
    Ok(Measured {
        lines,
        file_mib: size as f64 / (1024.0 * 1024.0),
        lookups,
        mean_us: hist.mean(),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        max_us: hist.max() as f64,
        rss_growth_kib: rss1 as i64 - rss0 as i64,
    })
}
