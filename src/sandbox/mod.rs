//! Stateful emulators of the providers, built from their documents: same paths,
//! methods, auth, pagination, field names and status codes, with in-memory state and
//! a request log that tests can read. They serve real HTTP on 127.0.0.1, port 0.
//!
//! Owns: the emulators and what they share (serving, the request log). Used by the
//! integration tests, `custsync demo` and the benchmark; never by the sync engine.

pub mod all;
pub mod ecwid;
pub mod evil;
pub mod faults;
pub mod lies;
pub mod malomo;
pub mod nuvemshop;
pub mod partially;
pub mod sendwithus;
mod table;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use faults::Faults;

/// One request as an emulator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    /// The path after the emulator's base URL, e.g. `/customers/12`.
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as text, when it was no larger than `LOGGED_BODY_LIMIT`.
    pub body: Option<String>,
    /// How many bytes the body had, all of them counted even past the limit.
    pub body_len: usize,
}

impl LoggedRequest {
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Every request an emulator has answered, in order.
#[derive(Debug, Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<LoggedRequest>>>);

impl RequestLog {
    pub fn all(&self) -> Vec<LoggedRequest> {
        self.lock().clone()
    }

    /// POST, PUT, PATCH and DELETE requests.
    pub fn writes(&self) -> Vec<LoggedRequest> {
        self.lock()
            .iter()
            .filter(|r| r.is_write())
            .cloned()
            .collect()
    }

    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.lock()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
    }

    pub fn with_status(&self, status: u16) -> usize {
        self.lock().iter().filter(|r| r.status == status).count()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn push(&self, r: LoggedRequest) {
        self.lock().push(r);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<LoggedRequest>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves `router` on 127.0.0.1 with a free port until the token is cancelled:
/// the address, the token, and the serving task.
pub(super) async fn serve(
    router: Router,
) -> std::io::Result<(SocketAddr, CancellationToken, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await;
    });
    Ok((addr, stop, task))
}

/// A running emulator: its address and how to stop it. Dropping it stops the server.
pub struct Server {
    pub addr: SocketAddr,
    pub log: RequestLog,
    /// Faults to inject into this emulator's answers (none unless asked for).
    pub faults: Faults,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `router` on 127.0.0.1 with a free port, logging every request; `prefix`
    /// is the path before the API paths (Nuvemshop's `/v1/STORE_ID`), left out of the log.
    /// Faults are injected inside the log, so it shows each status as sent.
    pub async fn start(router: Router, prefix: &str) -> std::io::Result<Server> {
        let log = RequestLog::default();
        let faults = Faults::default();
        let prefix = Arc::<str>::from(prefix);
        let router = router
            .layer(middleware::from_fn_with_state(
                (faults.clone(), prefix.clone()),
                faults::inject,
            ))
            .layer(middleware::from_fn_with_state(
                (log.clone(), prefix),
                record,
            ));
        let (addr, stop, task) = serve(router).await?;
        Ok(Server {
            addr,
            log,
            faults,
            stop,
            task: Some(task),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const LOGGED_HEADERS: [&str; 5] = [
    "content-type",
    "user-agent",
    "accept",
    "authorization",
    "authentication",
];

async fn record(
    State((log, prefix)): State<(RequestLog, Arc<str>)>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path();
    let path = path.strip_prefix(&*prefix).unwrap_or(path).to_string();
    let query = req.uri().query().map(str::to_string);
    let headers = logged_headers(req.headers());
    let (parts, body) = req.into_parts();
    let (bytes, body_len) = read_body(body).await;
    let body_text = (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned());
    // Logged when dropped: also when the client hangs up before the answer (a slow
    // answer past its timeout), which cancels this future. Then the status is 499.
    let mut entry = Logged(
        log,
        LoggedRequest {
            method,
            path,
            query,
            status: CLIENT_CLOSED,
            headers,
            body: body_text,
            body_len,
        },
    );
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    entry.1.status = resp.status().as_u16();
    resp
}

/// The largest request body an emulator reads (and logs); a larger one reaches its
/// handler empty, as a real server would refuse it, but is still counted.
pub const LOGGED_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// A request body up to `LOGGED_BODY_LIMIT` (empty past it), and its full length.
async fn read_body(body: Body) -> (axum::body::Bytes, usize) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut len = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        len += chunk.len();
        if len <= LOGGED_BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else {
            kept = Vec::new();
        }
    }
    (kept.into(), len)
}

/// The status logged for a request whose client went away before it was answered
/// (nginx's "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

struct Logged(RequestLog, LoggedRequest);

impl Drop for Logged {
    fn drop(&mut self) {
        self.0.push(self.1.clone());
    }
}

fn logged_headers(h: &HeaderMap) -> Vec<(String, String)> {
    LOGGED_HEADERS
        .iter()
        .filter_map(|name| {
            let v = h.get(*name)?.to_str().ok()?;
            Some((name.to_string(), v.to_string()))
        })
        .collect()
}

/// A JSON answer with a status.
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The email rule the emulators enforce on writes (a real provider's is at least as strict).
pub fn valid_email(email: &str) -> bool {
    crate::model::Email::parse(email).is_ok() && email.trim() == email
}

/// Locks emulator state, surviving a panicked holder (tests may panic mid-assertion).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
