//! The HTTP/1.1 listeners: connections, the layers every request passes, shutdown.
//!
//! [`run`] accepts connections until `shutdown` resolves, serving each with hyper's
//! HTTP/1 connection (keep-alive, header-read timeout) and the listener's axum
//! [`Router`] (routes.rs) under the layers every request passes ([`layered`]; outermost
//! first). They wrap the router once, outside it, so that a request pays for each once
//! (a layer inside, `Router::layer`, is cloned with its route for every request):
//!
//! - [`Observe`]: the client address (the peer, or, only when the peer is a trusted
//!   proxy, the right-most address of `X-Forwarded-For` that is not itself a trusted
//!   proxy), the request id, the in-flight gauge, one metrics sample per request and,
//!   for a request in the `--access-log` sample, its `request{id=…}` span and access
//!   line, labelled by its route ([`Labels`]);
//! - security headers on every answer ([`secure_headers`], with
//!   `Strict-Transport-Security` unless `--insecure-cookies`): static values set in one
//!   response map (six tower-http `SetResponseHeaderLayer`s cost more per request), which
//!   also gives the body-less 405 of the router and 503 of the timeout the API's JSON
//!   error shape ([`plain_errors_as_json`]);
//! - [`Deadline`]: the request timeout (503 `timeout`);
//! - a handler panic becomes a 500 JSON answer, not a dropped connection (tower-http's
//!   `CatchPanicLayer`);
//! - [`ReadBody`]: the body limit (413 `payload_too_large`, up front when
//!   `Content-Length` says so, the oversized body read and discarded so the client sees
//!   the answer) and the body's part of the timeout (408 while it is still arriving).
//!
//! [`Observe`] and [`ReadBody`] are services of their own rather than
//! `axum::middleware::from_fn`, which boxes the rest of the stack for every request.
//! The API's JSON-only rule and the one per-address rate limit of the credential steps
//! are route layers (routes.rs). Handlers see a [`Req`] (built by its extractor here) and
//! answer a [`crate::app::Resp`].
//!
//! Log lines carry the method, route label, status, duration and client address — never
//! bodies, query strings, paths with user data, or headers such as `Authorization`.
//!
//! On shutdown the listener closes, idle connections close, and requests in flight get up
//! to `shutdown_timeout` to finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::body::HttpBody as _;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, EXPECT, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY,
    USER_AGENT, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use authcore::login::Client;

use crate::app::{ApiError, App, ClientAddr, Req};
use crate::config::{AccessLog, IpNet};
use crate::routes::{self, Door, Labels};

/// `Strict-Transport-Security` on every answer (unless `--insecure-cookies`): browsers
/// keep to HTTPS for this host and its subdomains for a year (365 days) after any answer
/// that reached them over HTTPS. Sent over plain HTTP too (behind a TLS-terminating proxy
/// that is the normal case); browsers ignore it on a plain-HTTP connection.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Longest User-Agent kept (characters).
const USER_AGENT_MAX: usize = 256;
/// An oversized body up to this size is read and discarded before the 413, so the client
/// sees the answer instead of a connection reset; larger ones close the connection.
const DRAIN_MAX: u64 = 4 * 1024 * 1024;
/// The longest time spent discarding an oversized body.
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Serve `listener` until `shutdown` resolves, then drain: stop accepting, let requests in
/// flight finish (up to the configured shutdown timeout), and return.
pub async fn run(
    listener: TcpListener,
    app: App,
    door: Door,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (routes, labels) = routes::router(&app, door);
    let router = routes.with_state(app.clone());
    let labels = Arc::new(labels);
    let (stop_tx, stop_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                tokio::spawn(serve_connection(
                    layered(&app, router.clone(), labels.clone(), peer),
                    app.config.header_read_timeout,
                    stream,
                    peer,
                    stop_rx.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    drop(stop_rx);
    tracing::info!(
        connections = stop_tx.receiver_count(),
        listener = ?door,
        "shutting down: not accepting; finishing requests in flight"
    );
    stop_tx.send_replace(());
    let grace = app.config.shutdown_timeout;
    if tokio::time::timeout(grace, stop_tx.closed()).await.is_err() {
        tracing::warn!(
            connections = stop_tx.receiver_count(),
            "shutdown timeout: abandoning connections still open"
        );
    }
    Ok(())
}

/// One connection: HTTP/1.1 with keep-alive, until it ends or shutdown drains it.
async fn serve_connection(
    edge: impl Edge,
    header_read_timeout: Duration,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        tower::ServiceExt::oneshot(edge.clone(), req.map(Body::new))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, peer = %peer, "connection closed with an error");
                }
                break;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What [`layered`] makes: a clonable service of requests, answering every one.
trait Edge:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<S> Edge for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// The router of one listener ([`routes::router`]) under the layers every request on
/// a connection from `peer` passes (see the module documentation for their order). They
/// wrap the router once, outside it: a layer inside (`Router::layer`) would be cloned
/// with each route for every request.
fn layered(app: &App, router: Router, labels: Arc<Labels>, peer: SocketAddr) -> impl Edge {
    let observed = Observed {
        app: app.clone(),
        labels,
        peer: peer.ip().to_canonical(),
    };
    let hsts = !app.config.insecure_cookies;
    ServiceBuilder::new()
        .layer(tower::layer::layer_fn(move |inner| Observe {
            o: observed.clone(),
            inner,
        }))
        .map_response(move |resp: Response| {
            let mut resp = plain_errors_as_json(resp);
            secure_headers(resp.headers_mut(), hsts);
            resp
        })
        .layer(tower::layer::layer_fn({
            let timeout = app.config.request_timeout;
            move |inner| Deadline { timeout, inner }
        }))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(tower::layer::layer_fn({
            let app = app.clone();
            move |inner| ReadBody {
                app: app.clone(),
                inner,
            }
        }))
        .service(router)
}

/// Headers every answer carries (with [`HSTS`] unless `--insecure-cookies`); the last
/// four only when the handler has not set its own (pages set their own Cache-Control,
/// CSP, Referrer-Policy…). Static values: nothing is built per request.
fn secure_headers(h: &mut HeaderMap, hsts: bool) {
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if hsts {
        h.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.entry(X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    h.entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    h.entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
}

/// The state of [`Observe`]: one per connection.
#[derive(Clone)]
struct Observed {
    app: App,
    labels: Arc<Labels>,
    /// The connection's TCP peer, canonical.
    peer: IpAddr,
}

/// One request, start to answer: its client address, the in-flight gauge, its metrics
/// sample and its log line, labelled by its route. A service of its own (not
/// `axum::middleware::from_fn`) so that it costs no allocation: its future wraps the
/// inner one in place.
#[derive(Clone)]
struct Observe<S> {
    o: Observed,
    inner: S,
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Observing<S::Future> {
        let started = Instant::now();
        let app = &self.o.app;
        app.metrics.in_flight_inc();
        let peer = self.o.peer;
        let ip = client_ip(peer, req.headers(), &app.config.trusted_proxies);
        let id = request_id(req.headers());
        let sampled = sampled(app.config.access_log);
        // The span (and what the log subscriber does for it at each poll) only for a
        // request whose access line is written anyway: at `sample:100` the other 99 pay
        // for none of it.
        let span = if sampled {
            tracing::info_span!("request", id = %id.to_str().unwrap_or("?"))
        } else {
            tracing::Span::none()
        };
        let seen = Seen {
            app: app.clone(),
            started,
            method: req.method().clone(),
            route: self.o.labels.of(req.uri().path()),
            ip,
            id,
            sampled,
        };
        req.extensions_mut().insert(ClientAddr {
            peer,
            ip,
            started: tokio::time::Instant::from_std(started),
        });
        let inner = {
            let _in = span.enter();
            self.inner.call(req)
        };
        Observing {
            inner,
            seen: Some(seen),
            span,
        }
    }
}

/// The header carrying a request's id, in and out.
const X_REQUEST_ID: &str = "x-request-id";

/// The request's id: its one `X-Request-Id` when that is sane (1–128 characters of
/// letters, digits and `-_.:@/+=`: what proxies send — UUIDs, `Root=1-…`, hex — and
/// nothing a log reader could take for markup or a field), else a new one
/// ([`new_request_id`]). It is echoed in the answer's `X-Request-Id`, and is on every
/// log line of a request in the access-log sample (the `request{id=…}` span; all of
/// them by default) and on the access line of every answer of 400 or more.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(X_REQUEST_ID).iter();
    if let (Some(v), None) = (given.next(), given.next()) {
        if sane_request_id(v.as_bytes()) {
            return v.clone();
        }
    }
    new_request_id()
}

/// Whether an incoming `X-Request-Id` is kept (see [`request_id`]).
fn sane_request_id(b: &[u8]) -> bool {
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:@/+=".contains(c))
}

/// Random ids read from the operating system at once, per thread.
const REQUEST_IDS_PER_READ: usize = 256;

/// A new request id: 128 bits from the operating system's CSPRNG, as 32 lowercase hex
/// digits — unguessable (an id says nothing of the ids before or after it) and unique
/// (two equal among 2^64 ids only with a chance of about 2^-64). Cheap: each thread reads
/// the bytes of [`REQUEST_IDS_PER_READ`] ids in one `getrandom` call and hands them out
/// one by one, each once.
fn new_request_id() -> HeaderValue {
    use std::cell::RefCell;
    struct Pool {
        bytes: [u8; 16 * REQUEST_IDS_PER_READ],
        next: usize,
    }
    thread_local! {
        static POOL: RefCell<Pool> = const { RefCell::new(Pool {
            bytes: [0; 16 * REQUEST_IDS_PER_READ],
            next: REQUEST_IDS_PER_READ,
        }) };
    }
    let mut hex = [0u8; 32];
    let made = POOL.with_borrow_mut(|pool| {
        if pool.next == REQUEST_IDS_PER_READ {
            getrandom::fill(&mut pool.bytes).ok()?;
            pool.next = 0;
        }
        let id = &pool.bytes[16 * pool.next..][..16];
        pool.next += 1;
        data_encoding::HEXLOWER.encode_mut(id, &mut hex);
        Some(())
    });
    match made {
        Some(()) => HeaderValue::from_bytes(&hex),
        None => {
            // The operating system has no randomness to give (it never happens in
            // practice): ids are still unique within this process.
            static NEXT: AtomicU64 = AtomicU64::new(1);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            HeaderValue::from_str(&format!("norandom-{n:x}"))
        }
    }
    .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Whether a request is in the access-log sample (`--access-log`), decided when it
/// starts: every one, none, or one in N. Those get the `request{id=…}` span and their
/// access line; the others get neither, but an answer of 400 or more always gets its
/// access line, with the id as a field (see [`Seen::answered`]).
fn sampled(mode: AccessLog) -> bool {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    match mode {
        AccessLog::All => true,
        AccessLog::Off => false,
        AccessLog::Sample(n) => SEEN
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(u64::from(n)),
    }
}

/// What [`Observe`] knows of a request before its answer. Dropped unanswered (the
/// client went away), it still takes the request off the in-flight gauge.
struct Seen {
    app: App,
    started: Instant,
    method: hyper::Method,
    route: &'static str,
    ip: IpAddr,
    id: HeaderValue,
    /// In the access-log sample ([`sampled`]): its span carries the id.
    sampled: bool,
}

impl Seen {
    /// Count the answer, and write its access line: for a request in the sample, or any
    /// answer of 400 or more unless `--access-log off`.
    fn answered(&self, status: StatusCode) {
        let elapsed = self.started.elapsed();
        let status = status.as_u16();
        self.app
            .metrics
            .request(self.route, status, elapsed.as_secs_f64());
        let outside = !self.sampled;
        if outside && (status < 400 || self.app.config.access_log == AccessLog::Off) {
            return;
        }
        // The span of a sampled request carries its id; outside the sample, the line does.
        let id = outside.then(|| tracing::field::display(self.id.to_str().unwrap_or("?")));
        tracing::info!(
            id,
            method = %self.method,
            route = self.route,
            status,
            ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            client = %self.ip,
            "request"
        );
    }
}

impl Drop for Seen {
    fn drop(&mut self) {
        self.app.metrics.in_flight_dec();
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`].
    struct Observing<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
        span: tracing::Span,
    }
}

impl<F, E> Future for Observing<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _in = this.span.enter();
        let mut answer = ready!(this.inner.poll(cx));
        if let (Some(mut seen), Ok(resp)) = (this.seen.take(), &mut answer) {
            seen.answered(resp.status());
            resp.headers_mut().insert(
                X_REQUEST_ID,
                std::mem::replace(&mut seen.id, HeaderValue::from_static("")),
            );
        }
        Poll::Ready(answer)
    }
}

/// Reads the whole body before anything else looks at the request (see
/// [`read_body`]); a request without a body passes on as it is, at no cost.
#[derive(Clone)]
struct ReadBody<S> {
    app: App,
    inner: S,
}

impl<S> tower::Service<Request> for ReadBody<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.body().is_end_stream() {
            return Either::Left {
                inner: self.inner.call(req),
            };
        }
        // The inner service is ready: take it, leave a clone for the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Either::Right {
            inner: Box::pin(read_body(self.app.clone(), req, inner)),
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// One of two futures of the same output.
    #[project = EitherProj]
    enum Either<A, B> {
        Left { #[pin] inner: A },
        Right { #[pin] inner: B },
    }
}

impl<A, B> Future for Either<A, B>
where
    A: Future,
    B: Future<Output = A::Output>,
{
    type Output = A::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
        match self.project() {
            EitherProj::Left { inner } => inner.poll(cx),
            EitherProj::Right { inner } => inner.poll(cx),
        }
    }
}

/// Read the whole body, refusing more than `--body-limit` bytes (413, up front when
/// `Content-Length` says so) and a body still arriving when the request's time is up
/// (408); then pass the request on with the body in memory.
async fn read_body<S>(app: App, req: Request, mut inner: S) -> Result<Response, Infallible>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let started = req
        .extensions()
        .get::<ClientAddr>()
        .map_or_else(tokio::time::Instant::now, |a| a.started);
    let deadline = started + app.config.request_timeout;
    let limit = app.config.body_limit;
    let (parts, body) = req.into_parts();

    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // A client waiting for `100 Continue` has not sent the body: do not ask for it.
        let drained = !parts.headers.contains_key(EXPECT)
            && declared.is_some_and(|n| n <= DRAIN_MAX)
            && drain(body, deadline).await;
        return Ok(close_unless(drained, too_large(limit)));
    }
    let refused = match read_whole(body, limit, deadline).await {
        Ok(bytes) => {
            return inner
                .call(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(BodyError::TooLarge { drained }) => close_unless(drained, too_large(limit)),
        Err(BodyError::Timeout) => {
            let e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                "the request body did not arrive in time",
            );
            close_unless(false, e.into_response())
        }
        Err(BodyError::Broken) => {
            let e = ApiError::bad_request("the request body could not be read");
            close_unless(false, e.into_response())
        }
    };
    Ok(refused)
}

/// `--request-timeout`: a request that takes longer is answered 503 `timeout` (and
/// dropped). tokio's timeout, which polls the request before its timer: a request
/// answered at once never touches the timer wheel, and when the body's own deadline (408)
/// falls due in the same tick, the body's answer wins. (tower-http's `TimeoutLayer` polls
/// its timer first, registering it for every request; tower's fails the request with an
/// error instead of answering.)
#[derive(Clone)]
struct Deadline<S> {
    timeout: Duration,
    inner: S,
}

impl<S> tower::Service<Request> for Deadline<S>
where
    S: tower::Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Timed<S::Future> {
        Timed {
            inner: tokio::time::timeout(self.timeout, self.inner.call(req)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Deadline`].
    struct Timed<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F, R> Future for Timed<F>
where
    F: Future<Output = Result<R, Infallible>>,
    R: IntoResponse,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match ready!(self.project().inner.poll(cx)) {
            Ok(Ok(resp)) => resp.into_response(),
            Ok(Err(never)) => match never {},
            Err(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request took too long to answer; try again",
            )
            .into_response(),
        }))
    }
}

/// The answer of a handler that panicked (tower-http's `CatchPanicLayer`): logged, and a
/// 500 instead of a dropped connection.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> crate::app::Resp {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(error = %format!("the handler panicked: {msg}"), "request handler failed");
    ApiError::internal().into_resp()
}

/// The router's 405 (a known path, another method), which comes without a body, as the
/// API's JSON error naming the methods of its `Allow` header. Every other answer passes
/// unchanged.
fn plain_errors_as_json(resp: Response) -> Response {
    if resp.headers().contains_key(CONTENT_TYPE) {
        return resp;
    }
    let e = match resp.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = resp
                .headers()
                .get(ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .replace(',', ", ");
            let mut e = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("this resource answers {allow} only"),
            );
            e.extra = Some(serde_json::json!({ "allow": allow }));
            e
        }
        _ => return resp,
    };
    let (mut parts, _) = resp.into_parts();
    let json = e.into_resp();
    // The layer below measured the empty body it answered.
    parts.headers.remove(CONTENT_LENGTH);
    for (name, value) in json.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, Body::new(json.into_body()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_resp().into_response()
    }
}

/// A handler's request: method, path, query, headers, the client, and the body read by
/// [`read_body`].
impl<S: Send + Sync> FromRequest<S> for Req {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Req, Response> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|_| {
                ApiError::bad_request("the request body could not be read").into_response()
            })?
            .to_bytes();
        let addr = parts.extensions.get::<ClientAddr>().copied();
        let peer = addr.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.peer);
        let ip = addr.map_or(peer, |a| a.ip);
        Ok(Req {
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(parse_query).unwrap_or_default(),
            client: Client {
                ip: ip.to_string(),
                user_agent: user_agent(&parts.headers),
            },
            method: parts.method,
            headers: parts.headers,
            peer,
            body,
        })
    }
}

enum BodyError {
    /// Over the limit; `drained` when the rest was read so the connection can be reused.
    TooLarge {
        drained: bool,
    },
    Timeout,
    Broken,
}

/// Read the whole body, refusing more than `limit` bytes.
async fn read_whole(
    mut body: Body,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                let seen = (buf.len() + data.len()) as u64;
                let drained = seen <= DRAIN_MAX && drain_rest(body, seen, deadline).await;
                return Err(BodyError::TooLarge { drained });
            }
            buf.extend_from_slice(&data);
        }
    }
}

/// Read and discard a body (bounded by [`DRAIN_MAX`] and [`DRAIN_TIME`]); true when it
/// ended within those bounds.
async fn drain(body: Body, deadline: tokio::time::Instant) -> bool {
    drain_rest(body, 0, deadline).await
}

async fn drain_rest(mut body: Body, mut seen: u64, deadline: tokio::time::Instant) -> bool {
    let deadline = deadline.min(tokio::time::Instant::now() + DRAIN_TIME);
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    seen += d.len() as u64;
                    if seen > DRAIN_MAX {
                        return false;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

fn too_large(limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("the request body is larger than the limit of {limit} bytes"),
    )
    .into_response()
}

/// Ask hyper to close the connection after this answer unless the request was read whole.
fn close_unless(read_whole: bool, mut resp: Response) -> Response {
    if !read_whole {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The client's address: the peer, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy (entries further left were written
/// by the client and prove nothing). If every entry is trusted, the left-most; if an entry
/// is not an address, the last good one to its right.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let values: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    let mut client = peer;
    for value in values.iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for entry in text.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_forwarded_ip(entry) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let ip = s
        .parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| s.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The User-Agent, lossily decoded, without control characters, at most 256 characters.
fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .filter(|c| !c.is_control())
                .take(USER_AGENT_MAX)
                .collect()
        })
        .unwrap_or_default()
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded (lossy UTF-8).
fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::config::Config;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn made_request_ids_are_random_128_bit_and_unique() {
        // More than one read of the pool, on two threads.
        let n = 3 * REQUEST_IDS_PER_READ + 7;
        let mut ids: Vec<String> = (0..n)
            .map(|_| new_request_id().to_str().unwrap().to_string())
            .collect();
        ids.extend(
            std::thread::spawn(move || {
                (0..n)
                    .map(|_| new_request_id().to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap(),
        );
        let mut ones = 0u32;
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            let bytes = data_encoding::HEXLOWER.decode(id.as_bytes()).expect("hex");
            ones += bytes.iter().map(|b| b.count_ones()).sum::<u32>();
        }
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "every id once");
        // Random bits: about half of them set (a counter or a fixed prefix is not).
        let bits = (ids.len() * 128) as f64;
        let share = f64::from(ones) / bits;
        assert!((0.48..0.52).contains(&share), "{share}");
        // Neighbours share nothing: no common prefix or suffix of 8 digits (32 bits).
        for w in ids.windows(2) {
            assert_ne!(w[0][..8], w[1][..8], "{w:?}");
            assert_ne!(w[0][24..], w[1][24..], "{w:?}");
        }
    }

    #[test]
    fn incoming_request_ids_are_kept_only_when_sane() {
        let with = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(X_REQUEST_ID, HeaderValue::from_bytes(v).unwrap());
            }
            request_id(&h)
        };
        let longest = "a".repeat(128);
        for kept in [
            &b"abc-123.def_4:5"[..],
            b"Root=1-67891233-abcdef012345678912345678",
            b"0f8fad5b-d9cb-469f-a165-70867728950e",
            b"a/b+c@d=",
            longest.as_bytes(),
        ] {
            assert_eq!(with(&[kept]).as_bytes(), kept);
        }
        let too_long = "a".repeat(129);
        for replaced in [
            &[&b""[..]][..],
            &[b"has spaces"],
            &[b"tab\there"],
            &[too_long.as_bytes()],
            &[b"<script>"],
            &[b"a\"b"],
            &[b"caf\xc3\xa9"],
            &[b"one", b"two"],
        ] {
            let id = with(replaced);
            assert_eq!(id.len(), 32, "{replaced:?} → {id:?}");
            assert!(replaced.iter().all(|r| id.as_bytes() != *r));
        }
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_resolution() {
        let trusted = nets(&["10.0.0.0/8", "::1"]);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        // (peer, X-Forwarded-For headers, expected client)
        let cases: &[(&str, &[&str], &str)] = &[
            // An untrusted peer is the client, whatever it claims.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            ("203.0.113.9", &[], "203.0.113.9"),
            // A trusted proxy without the header: the proxy.
            ("10.0.0.2", &[], "10.0.0.2"),
            // The right-most untrusted entry; what the client wrote further left is ignored.
            ("10.0.0.2", &["198.51.100.1"], "198.51.100.1"),
            ("10.0.0.2", &["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
            (
                "10.0.0.2",
                &["1.1.1.1, 198.51.100.1, 10.0.0.3"],
                "198.51.100.1",
            ),
            (
                "::1",
                &["1.1.1.1", "198.51.100.1, 10.9.9.9"],
                "198.51.100.1",
            ),
            ("::ffff:10.0.0.2", &["198.51.100.1"], "198.51.100.1"),
            // Every entry trusted: the left-most.
            ("10.0.0.2", &["10.0.0.5, 10.0.0.4"], "10.0.0.5"),
            // Garbage stops the walk at the last good hop.
            ("10.0.0.2", &["198.51.100.1, garbage, 10.0.0.3"], "10.0.0.3"),
            ("10.0.0.2", &["garbage"], "10.0.0.2"),
            ("10.0.0.2", &["unknown, 198.51.100.1"], "198.51.100.1"),
            // Ports and brackets, empty entries.
            ("10.0.0.2", &["198.51.100.1:4711"], "198.51.100.1"),
            ("10.0.0.2", &["[2001:db8::1]:4711"], "2001:db8::1"),
            ("10.0.0.2", &["[2001:db8::1]"], "2001:db8::1"),
            ("10.0.0.2", &["198.51.100.1, , "], "198.51.100.1"),
        ];
        for (peer, headers, want) in cases {
            let got = client_ip(ip(peer), &xff(headers), &trusted);
            assert_eq!(got, ip(want), "peer {peer}, X-Forwarded-For {headers:?}");
        }
        // Nothing trusted: the header is never read.
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff(&["1.2.3.4"]), &[]),
            ip("10.0.0.2")
        );
        // A non-UTF-8 header value does not panic.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted), ip("10.0.0.2"));
    }

    #[test]
    fn user_agent_is_bounded_and_clean() {
        let mut h = HeaderMap::new();
        assert_eq!(user_agent(&h), "");
        h.insert(
            USER_AGENT,
            HeaderValue::from_str(&"é".repeat(1000)).unwrap(),
        );
        assert_eq!(user_agent(&h).chars().count(), 256);
        h.insert(
            USER_AGENT,
            HeaderValue::from_bytes(b"curl/8\t\xffx").unwrap(),
        );
        assert_eq!(user_agent(&h), "curl/8\u{fffd}x");
    }

    #[test]
    fn queries() {
        assert_eq!(
            parse_query("user=a%20b&locked=true&x=1+2&flag&=v"),
            vec![
                ("user".into(), "a b".into()),
                ("locked".into(), "true".into()),
                ("x".into(), "1 2".into()),
                ("flag".into(), String::new()),
                (String::new(), "v".into()),
            ]
        );
        assert_eq!(
            parse_query("bad=%zz%ff"),
            vec![("bad".into(), "%zz\u{fffd}".into())]
        );
    }

    // ---- in-process server tests -------------------------------------------------------

    struct Server {
        addr: SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: tokio::task::JoinHandle<std::io::Result<()>>,
        _dir: tempfile::TempDir,
    }

    impl Server {
        async fn start(tune: impl FnOnce(&mut Config)) -> Server {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("t.db");
            let (_conn, key) =
                authcore::db::create(&authcore::db::Location::new(&db, None)).unwrap();
            let mut config = Config {
                db,
                ..Config::default()
            };
            tune(&mut config);
            let app = App::new(config, key).unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let done = tokio::spawn(run(listener, app, Door::Main, async {
                let _ = rx.await;
            }));
            Server {
                addr,
                stop: Some(tx),
                done,
                _dir: dir,
            }
        }

        async fn shutdown(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            let r = tokio::time::timeout(Duration::from_secs(20), &mut self.done).await;
            r.expect("the server stops").unwrap().unwrap();
        }
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
        }
    }

    fn parse_answer(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head: {text:?}"));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_string(),
        }
    }

    /// Send one request (with `Connection: close`) and read the whole answer.
    async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Answer {
        assert!(addr.ip().is_loopback());
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        // Write concurrently with reading: the server may answer before the body is sent.
        let writer = tokio::spawn(async move {
            let _ = wr.write_all(&request).await;
            wr
        });
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), rd.read_to_end(&mut raw))
            .await
            .expect("an answer in time")
            .expect("read the answer");
        drop(writer.await);
        parse_answer(&raw)
    }

    fn request(method: &str, path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn assert_secure_headers(a: &Answer) {
        assert_eq!(
            a.header("x-content-type-options"),
            Some("nosniff"),
            "{:?}",
            a.headers
        );
        assert_eq!(
            a.header("cache-control"),
            Some("no-store"),
            "{:?}",
            a.headers
        );
        assert_eq!(
            a.header("strict-transport-security"),
            Some(HSTS),
            "{:?}",
            a.headers
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_bodies_get_413_json() {
        let server = Server::start(|_| {}).await;
        let big = vec![b'x'; 1024 * 1024];

        // Declared by Content-Length.
        let a = exchange(server.addr, request("POST", "/v1/login", "", &big)).await;
        assert_eq!(a.status, 413, "{}", a.body);
        assert_eq!(a.json()["error"], "payload_too_large");
        assert!(a.json()["message"].as_str().unwrap().contains("65536"));
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_secure_headers(&a);

        // Chunked: found out while reading.
        let mut chunked = b"POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
            Transfer-Encoding: chunked\r\n\r\n"
            .to_vec();
        for chunk in big.chunks(16 * 1024) {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let a = exchange(server.addr, chunked).await;
        assert_eq!(a.status, 413, "{}", a.body);
        assert_eq!(a.json()["error"], "payload_too_large");

        // Exactly at the limit is fine (whatever the router then says of it).
        let a = exchange(
            server.addr,
            request("POST", "/v1/login", "", &[b' '; 65536]),
        )
        .await;
        assert_ne!(a.status, 413);
        assert_secure_headers(&a);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_connections_are_closed_after_the_header_timeout() {
        let server = Server::start(|c| c.header_read_timeout = Duration::from_secs(1)).await;
        for sent in [&b""[..], b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
            let started = Instant::now();
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(sent).await.unwrap();
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
            let waited = started.elapsed();
            assert!(r.is_ok(), "the connection is closed (sent {sent:?})");
            assert!(
                waited >= Duration::from_millis(900),
                "not before the timeout: {waited:?}"
            );
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        }
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn login_attempts_are_rate_limited_per_client() {
        let server = Server::start(|c| {
            c.rate_limit_per_minute = 1;
            c.rate_limit_burst = 3;
        })
        .await;
        let body = br#"{"username":"nobody","password":"wrong password"}"#;
        for i in 0..3 {
            let a = exchange(server.addr, request("POST", "/v1/login", "", body)).await;
            assert_ne!(a.status, 429, "attempt {i}: {}", a.body);
        }
        let a = exchange(server.addr, request("POST", "/v1/login", "", body)).await;
        assert_eq!(a.status, 429, "{}", a.body);
        assert_eq!(a.json()["error"], "rate_limited");
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert_secure_headers(&a);
        // Other requests are not limited.
        let a = exchange(server.addr, request("GET", "/healthz", "", b"")).await;
        assert_ne!(a.status, 429);
        server.shutdown().await;

        // Switched off: no limit.
        let server = Server::start(|c| {
            c.rate_limit_per_minute = 0;
            c.rate_limit_burst = 1;
        })
        .await;
        for _ in 0..5 {
            let a = exchange(server.addr, request("POST", "/v1/login", "", body)).await;
            assert_ne!(a.status, 429);
        }
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn graceful_shutdown_finishes_requests_in_flight() {
        let mut server = Server::start(|_| {}).await;
        // A request whose body is still arriving is in flight.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nab")
            .await
            .unwrap();
        // An idle keep-alive connection is closed by the shutdown.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        idle.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        tokio::time::sleep(Duration::from_millis(200)).await;

        let _ = server.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !server.done.is_finished(),
            "waits for the request in flight"
        );
        // No new connections once shutting down.
        let refused = TcpStream::connect(server.addr).await;
        if let Ok(mut c) = refused {
            let mut buf = [0u8; 1];
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
            assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
        }

        s.write_all(b"cd").await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
            .await
            .expect("the connection closes after the answer")
            .unwrap();
        let a = parse_answer(&raw);
        assert!(a.status < 500, "{} {}", a.status, a.body);
        assert_eq!(a.header("connection"), Some("close"));

        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "the idle connection was closed");
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_gives_up_after_its_timeout() {
        let server = Server::start(|c| c.shutdown_timeout = Duration::from_secs(1)).await;
        // A body that never completes.
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        server.shutdown().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        drop(s);
    }

    /// The layers of [`service`] around a router of test routes.
    fn test_service(routes: Router<App>) -> (impl Edge, tempfile::TempDir) {
        let (app, dir) = test_app();
        let router = routes.with_state(app.clone());
        let peer = "127.0.0.1:1".parse().unwrap();
        (
            layered(&app, router, Arc::new(Labels::default()), peer),
            dir,
        )
    }

    fn test_app() -> (App, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let (_conn, key) = authcore::db::create(&authcore::db::Location::new(&db, None)).unwrap();
        let app = App::new(
            Config {
                db,
                request_timeout: Duration::from_secs(1),
                ..Config::default()
            },
            key,
        )
        .unwrap();
        (app, dir)
    }

    async fn call(router: &impl Edge, method: &str, path: &str) -> (StatusCode, HeaderMap, String) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(router.clone(), req)
            .await
            .unwrap();
        let resp = resp;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// The cost of the layers and the router per request, in process (no TCP):
    /// `cargo test --release --bin authd stack_cost -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore]
    async fn stack_cost() {
        let (app, _dir) = test_app();
        let (routes, labels) = routes::router(&app, Door::Main);
        let bare = routes.with_state(app.clone());
        let labels = Arc::new(labels);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        async fn time(name: &str, svc: impl Edge) {
            for path in ["/v1/session", "/assets/portal.css"] {
                let n = 100_000;
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let started = Instant::now();
                    for _ in 0..n {
                        let req = hyper::Request::builder()
                            .uri(path)
                            .header("host", "x")
                            .body(Body::empty())
                            .unwrap();
                        let resp = tower::ServiceExt::oneshot(svc.clone(), req).await;
                        std::hint::black_box(resp.unwrap());
                    }
                    best = best.min(started.elapsed().as_secs_f64() * 1e9 / n as f64);
                }
                println!("{name:16} {path}: {best:.0} ns per request");
            }
        }
        for _ in 0..2 {
            time(
                "all layers",
                layered(&app, bare.clone(), labels.clone(), peer),
            )
            .await;
            time("router alone", bare.clone()).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_not_an_unwind() {
        async fn boom() -> Response {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("handler bug {}", 42);
            }
            StatusCode::OK.into_response()
        }
        let (router, _dir) = test_service(Router::new().route("/boom", axum::routing::get(boom)));
        let (status, headers, body) = call(&router, "GET", "/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "internal", "{body}");
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(headers.get("strict-transport-security").unwrap(), HSTS);
    }

    #[tokio::test]
    async fn a_slow_handler_is_a_503_timeout() {
        async fn slow() -> Response {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        let (router, _dir) = test_service(Router::new().route("/slow", axum::routing::get(slow)));
        let started = Instant::now();
        let (status, headers, body) = call(&router, "GET", "/slow").await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "timeout", "{body}");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    }

    #[tokio::test]
    async fn a_wrong_method_is_a_json_405_naming_the_allowed_ones() {
        let ok = || async { StatusCode::OK };
        let routes = Router::new()
            .route("/r", axum::routing::get(ok).put(ok))
            .route("/p", axum::routing::post(ok));
        let (router, _dir) = test_service(routes);
        for (method, path, allowed) in [("DELETE", "/r", "GET,HEAD,PUT"), ("GET", "/p", "POST")] {
            let (status, headers, body) = call(&router, method, path).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(headers.get("allow").unwrap(), allowed);
            assert_eq!(headers.get("content-type").unwrap(), "application/json");
            assert_eq!(headers.get("x-frame-options").unwrap(), "DENY");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "method_not_allowed", "{body}");
            assert_eq!(v["allow"], allowed.replace(',', ", "), "{body}");
        }
        assert_eq!(call(&router, "PUT", "/r").await.0, StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn routes_are_labelled_by_their_matched_path() {
        let server = Server::start(|_| {}).await;
        for (method, path, body) in [
            ("POST", "/v1/login/terms", &b"{}"[..]),
            ("GET", "/v1/admin/users/someone", b""),
            ("GET", "/v1/password/policy", b""),
            ("GET", "/v1/nope", b""),
            ("GET", "/login", b""),
            ("DELETE", "/v1/session", b""),
        ] {
            let a = exchange(server.addr, request(method, path, "", body)).await;
            assert!(a.status < 500, "{method} {path}: {}", a.body);
        }
        let a = exchange(server.addr, request("GET", "/metrics", "", b"")).await;
        for line in [
            r#"authd_requests_total{route="login_terms",status="400"} 1"#,
            r#"authd_requests_total{route="admin",status="401"} 1"#,
            r#"authd_requests_total{route="password",status="200"} 1"#,
            r#"authd_requests_total{route="other",status="404"} 1"#,
            r#"authd_requests_total{route="other",status="200"} 1"#,
            r#"authd_requests_total{route="session",status="405"} 1"#,
        ] {
            assert!(a.body.lines().any(|l| l == line), "{line} in\n{}", a.body);
        }
        server.shutdown().await;
    }

    /// Only the declared credential routes reach the credential handlers: a path that
    /// is not one (`//v1/login`, `/v1/login/`) is never a way around the rate limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_path_reaches_a_login_around_the_rate_limit() {
        let server = Server::start(|c| {
            c.rate_limit_per_minute = 1;
            c.rate_limit_burst = 1;
        })
        .await;
        let body = br#"{"username":"nobody","password":"wrong password"}"#;
        let a = exchange(server.addr, request("POST", "/v1/login", "", body)).await;
        assert_eq!(a.status, 401, "{}", a.body);
        for path in ["//v1/login", "/v1//login", "/v1/login/", "/v1/./login"] {
            let a = exchange(server.addr, request("POST", path, "", body)).await;
            assert!(
                !a.body.contains("invalid_credentials"),
                "{path} reached the login: {} {}",
                a.status,
                a.body
            );
        }
        let a = exchange(server.addr, request("POST", "/v1/login", "", body)).await;
        assert_eq!(a.status, 429, "{}", a.body);
        server.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_gets_an_answer_not_a_panic() {
        let server = Server::start(|_| {}).await;
        for raw in [
            &b"NOT HTTP AT ALL\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
            b"GET /%ff%00?%zz=%ff HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: \xff\xfe\r\nConnection: close\r\n\r\n",
        ] {
            let mut s = TcpStream::connect(server.addr).await.unwrap();
            s.write_all(raw).await.unwrap();
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
            assert!(r.is_ok(), "answered and closed: {raw:?}");
        }
        // The server still answers.
        let a = exchange(server.addr, request("GET", "/healthz", "", b"")).await;
        assert!(a.status < 500);
        server.shutdown().await;
    }
}
