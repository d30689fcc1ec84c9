//! A second origin that no provider names: what a redirect from a compromised or
//! misconfigured provider points at. It answers every request with `[]` (to a listing,
//! the most harmful believable answer) and logs every request it gets, with all of its
//! headers, so that a test can show that no key and no customer data reached it.
//!
//! Owns: its own listener on 127.0.0.1 port 0 and its log. Shares nothing with the
//! emulators but the `RequestLog` type.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{read_body, LoggedRequest, RequestLog};

/// The running evil origin. Dropping it stops the server.
pub struct Evil {
    pub addr: SocketAddr,
    pub log: RequestLog,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Evil {
    pub async fn start() -> std::io::Result<Evil> {
        let log = RequestLog::default();
        let router = Router::new().fallback(answer).with_state(log.clone());
        let (addr, stop, task) = super::serve(router).await?;
        Ok(Evil {
            addr,
            log,
            stop,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, or with `path` after it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received, as `METHOD path?query` with all its headers.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log.all()
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Evil {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn answer(State(log): State<RequestLog>, req: Request) -> Response {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (k.as_str().to_string(), v)
        })
        .collect();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let (bytes, body_len) = read_body(req.into_body()).await;
    log.push(LoggedRequest {
        method,
        path,
        query,
        status: 200,
        headers,
        body: (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned()),
        body_len,
    });
    Json(serde_json::json!([])).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn logs_every_request_with_its_headers() {
        let evil = Evil::start().await.unwrap();
        let resp = reqwest::Client::new()
            .post(evil.url("/customer?x=1"))
            .header("authentication", "bearer secret")
            .body("{\"email\":\"a@b.co\"}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), "[]");
        let got = evil.requests();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/customer");
        assert_eq!(got[0].query.as_deref(), Some("x=1"));
        assert_eq!(got[0].header("authentication"), Some("bearer secret"));
        assert_eq!(got[0].body_len, 18);
        evil.stop().await;
    }
}
