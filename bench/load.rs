//! The load generator: N keep-alive HTTP/1.1 connections (hyper's client connection, one
//! per simulated client), each sending its next request as soon as the previous answer has
//! been read whole. Every run is bounded by a duration and, optionally, a request count; a
//! workload may also run out of work (e.g. of login flows), which ends it early.
//!
//! Latency is measured per request from just before sending to the last byte of the body,
//! into an HDR histogram (microseconds, 3 significant digits).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::Method;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

pub type Body = Full<Bytes>;
pub type Request = hyper::Request<Body>;

/// What the clients send and what counts as the expected answer.
pub trait Workload: Send + Sync + 'static {
    /// The request number `seq` (0, 1, 2… across all clients); None when out of work.
    fn request(&self, client: usize, seq: u64) -> Option<Request>;
    /// Whether the answer to request `seq` is the expected one.
    fn check(&self, client: usize, seq: u64, status: u16, body: &[u8]) -> bool;
}

/// How to run a workload.
#[derive(Clone, Debug)]
pub struct Spec {
    pub concurrency: usize,
    /// No request is started after this long.
    pub duration: Duration,
    /// No more than this many requests in all.
    pub max_requests: u64,
    /// Client i binds its socket to `sources[i % len]` (empty: the kernel chooses).
    pub sources: Vec<IpAddr>,
    /// Each client sends at most one request per `pace` (None: back to back).
    pub pace: Option<Duration>,
}

impl Spec {
    pub fn new(concurrency: usize, duration: Duration) -> Spec {
        Spec {
            concurrency,
            duration,
            max_requests: u64::MAX,
            sources: Vec::new(),
            pace: None,
        }
    }
    pub fn max(mut self, n: u64) -> Spec {
        self.max_requests = n;
        self
    }
    pub fn sources(mut self, s: Vec<IpAddr>) -> Spec {
        self.sources = s;
        self
    }
    pub fn pace(mut self, p: Duration) -> Spec {
        self.pace = Some(p);
        self
    }
}

/// The outcome of one run.
#[derive(Clone)]
pub struct Stats {
    pub concurrency: usize,
    /// Answers that were the expected ones.
    pub ok: u64,
    /// Answers that were not (any status), and transport errors.
    pub unexpected: u64,
    pub transport_errors: u64,
    /// (status, count) of every answer.
    pub statuses: Vec<(u16, u64)>,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    /// The share of the machine other processes used meanwhile (set by the caller).
    pub foreign: f64,
}

impl Stats {
    /// Expected answers per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    pub fn p50(&self) -> f64 {
        self.p(0.50)
    }
    pub fn p99(&self) -> f64 {
        self.p(0.99)
    }
    pub fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
    pub fn status_count(&self, status: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }
    pub fn summary(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect();
        format!(
            "c={:<4} {:>9.1}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ok {} unexpected {} ({}; {} transport errors) in {:.2} s; others {:.0}% busy",
            self.concurrency,
            self.rate(),
            self.p50(),
            self.p99(),
            self.max_ms(),
            self.ok,
            self.unexpected,
            statuses.join(" "),
            self.transport_errors,
            self.elapsed.as_secs_f64(),
            self.foreign * 100.0
        )
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits; the bounds are valid constants.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// One open client connection.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<SendRequest<Body>> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("cannot bind a client socket to {ip}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request with the headers every client sends.
pub fn request(method: Method, path: &str, body: Option<String>) -> Request {
    let mut r = hyper::Request::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
    *r.method_mut() = method;
    *r.uri_mut() = path.parse().unwrap_or_default();
    let h = r.headers_mut();
    h.insert(HOST, HeaderValue::from_static("127.0.0.1"));
    h.insert(USER_AGENT, HeaderValue::from_static("authbench/1"));
    if body.is_some() {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    r
}

pub fn post_json(path: &str, v: &serde_json::Value) -> Request {
    request(Method::POST, path, Some(v.to_string()))
}

pub fn get_bearer(path: &str, token: &str) -> Request {
    let mut r = request(Method::GET, path, None);
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        r.headers_mut().insert(AUTHORIZATION, v);
    }
    r
}

struct ClientResult {
    ok: u64,
    unexpected: u64,
    transport_errors: u64,
    statuses: Vec<(u16, u64)>,
    hist: Histogram<u64>,
}

fn count(statuses: &mut Vec<(u16, u64)>, s: u16, n: u64) {
    match statuses.iter_mut().find(|(x, _)| *x == s) {
        Some((_, m)) => *m += n,
        None => statuses.push((s, n)),
    }
}

/// How long past the run's deadline one answer may still take before its client gives
/// up (counted as a transport error): a server that stops answering ends the run.
pub const LATE_ANSWER: Duration = Duration::from_secs(30);

/// Run `w` against `addr` as `spec` says.
pub async fn run(addr: SocketAddr, spec: &Spec, w: Arc<dyn Workload>) -> Result<Stats> {
    run_on(&[addr], spec, w).await
}

/// Run `w` against several servers (nodes): client i connects to `addrs[i % len]`, so the
/// connections are spread over them round-robin.
pub async fn run_on(addrs: &[SocketAddr], spec: &Spec, w: Arc<dyn Workload>) -> Result<Stats> {
    anyhow::ensure!(!addrs.is_empty(), "no server to send the load to");
    let source = |i: usize| -> Option<IpAddr> {
        (!spec.sources.is_empty()).then(|| spec.sources[i % spec.sources.len()])
    };
    let target = |i: usize| addrs[i % addrs.len()];
    // Every connection is open before the clock starts.
    let mut senders = Vec::with_capacity(spec.concurrency);
    for i in 0..spec.concurrency {
        senders.push(connect(target(i), source(i)).await?);
    }
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = Vec::with_capacity(spec.concurrency);
    for (i, mut sender) in senders.into_iter().enumerate() {
        let w = w.clone();
        let seq = seq.clone();
        let max = spec.max_requests;
        let pace = spec.pace;
        let src = source(i);
        let addr = target(i);
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                ok: 0,
                unexpected: 0,
                transport_errors: 0,
                statuses: Vec::new(),
                hist: new_hist(),
            };
            let mut next_at = started;
            while Instant::now() < deadline {
                if let Some(p) = pace {
                    if next_at > Instant::now() {
                        tokio::time::sleep_until(next_at.into()).await;
                    }
                    next_at += p;
                    if Instant::now() >= deadline {
                        break;
                    }
                }
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if n >= max {
                    break;
                }
                let Some(req) = w.request(i, n) else { break };
                let t0 = Instant::now();
                let answer = async {
                    sender.ready().await?;
                    let resp = sender.send_request(req).await?;
                    let status = resp.status().as_u16();
                    let body = resp.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                };
                let Ok(answer) =
                    tokio::time::timeout_at((deadline + LATE_ANSWER).into(), answer).await
                else {
                    // No answer long past the deadline: the server hangs; stop here.
                    r.transport_errors += 1;
                    r.unexpected += 1;
                    break;
                };
                let us = t0.elapsed().as_micros() as u64;
                match answer {
                    Ok((status, body)) => {
                        let _ = r.hist.record(us.max(1));
                        count(&mut r.statuses, status, 1);
                        if w.check(i, n, status, &body) {
                            r.ok += 1;
                        } else {
                            r.unexpected += 1;
                        }
                    }
                    Err(_) => {
                        r.transport_errors += 1;
                        r.unexpected += 1;
                        // The connection is gone: open another and go on.
                        match connect(addr, src).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            r
        }));
    }
    let mut total = ClientResult {
        ok: 0,
        unexpected: 0,
        transport_errors: 0,
        statuses: Vec::new(),
        hist: new_hist(),
    };
    for t in tasks {
        let r = t.await?;
        total.ok += r.ok;
        total.unexpected += r.unexpected;
        total.transport_errors += r.transport_errors;
        for (s, n) in r.statuses {
            count(&mut total.statuses, s, n);
        }
        total.hist.add(&r.hist)?;
    }
    let elapsed = started.elapsed();
    total.statuses.sort();
    Ok(Stats {
        concurrency: spec.concurrency,
        ok: total.ok,
        unexpected: total.unexpected,
        transport_errors: total.transport_errors,
        statuses: total.statuses,
        elapsed,
        hist: total.hist,
        foreign: 0.0,
    })
}
