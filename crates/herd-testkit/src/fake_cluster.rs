//! An in-memory Kubernetes API for reconcile tests: kube-fake-client (server-side apply,
//! resource versions, selectors), with two additions:
//!
//! - Namespaces: kube-fake-client 0.3 cannot parse the paths of the `namespaces` resource
//!   itself (`/api/v1/namespaces/{name}`), so those requests are served here from a small
//!   store with the same semantics (create on apply, resource version bumped per write).
//! - `GET /version`, answered as a Kubernetes 1.34 API server does.
//! - A count of API writes (every request that is not a GET, LIST or WATCH), the number a
//!   no-op reconcile must keep at zero.

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A fake cluster and its write counter.
#[derive(Clone)]
pub struct FakeCluster {
    pub client: kube::Client,
    writes: Arc<AtomicU64>,
    namespaces: Arc<Mutex<BTreeMap<String, Value>>>,
    faults: Arc<Mutex<Vec<Fault>>>,
}

/// An API error to answer instead of the fake's reply, for requests whose method matches
/// and whose path contains `path`, `times` times.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path: String,
    code: u16,
    times: usize,
}

/// The code of the first armed fault matching the request, which it uses up.
fn take_fault(faults: &Mutex<Vec<Fault>>, method: &Method, path: &str) -> Option<u16> {
    let mut faults = faults.lock().unwrap_or_else(|e| e.into_inner());
    let f = faults
        .iter_mut()
        .find(|f| f.times > 0 && f.method == *method && path.contains(&f.path))?;
    f.times -= 1;
    Some(f.code)
}

fn fault_response(code: u16) -> Response<Body> {
    let reason = match code {
        429 => "TooManyRequests",
        409 => "Conflict",
        500 => "InternalError",
        _ => "Unknown",
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(
        status,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code,
                 "message": format!("injected fault {code}") }),
    );
    if code == 429 {
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    r
}

impl FakeCluster {
    /// API writes so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Answers the next `times` requests with this method whose path contains `path` with
    /// the API error `code` (429 throttling, 500, 409…) instead of serving them.
    pub fn fail(&self, method: Method, path: &str, code: u16, times: usize) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Fault {
                method,
                path: path.to_owned(),
                code,
                times,
            });
    }

    /// The stored namespaces, by name.
    pub fn namespaces(&self) -> BTreeMap<String, Value> {
        self.namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found(name: &str) -> Response<Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                 "message": format!("namespaces \"{name}\" not found") }),
    )
}

fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

async fn namespace_request(
    store: &Mutex<BTreeMap<String, Value>>,
    version: &AtomicU64,
    method: &Method,
    name: &str,
    body: &[u8],
) -> Response<Body> {
    let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
    match *method {
        Method::GET => match store.get(name) {
            Some(ns) => json_response(StatusCode::OK, ns),
            None => not_found(name),
        },
        Method::PATCH | Method::PUT => {
            let patch: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let entry = store.entry(name.to_owned()).or_insert_with(|| {
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name, "uid": format!("ns-{name}") } })
            });
            merge(entry, &patch);
            let rv = version.fetch_add(1, Ordering::SeqCst) + 1;
            entry["metadata"]["resourceVersion"] = json!(format!("ns-{rv}"));
            json_response(StatusCode::OK, entry)
        }
        Method::DELETE => match store.remove(name) {
            Some(ns) => json_response(StatusCode::OK, &ns),
            None => not_found(name),
        },
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "kind": "Status", "code": 405 }),
        ),
    }
}

/// A fresh, empty fake cluster.
pub async fn start() -> FakeCluster {
    start_with(|b| b).await
}

/// A fresh fake cluster, its builder first passed to `setup` (to register custom resources,
/// status subresources or kube-fake-client interceptors).
pub async fn start_with(
    setup: impl FnOnce(kube_fake_client::ClientBuilder) -> kube_fake_client::ClientBuilder,
) -> FakeCluster {
    let fake = setup(kube_fake_client::ClientBuilder::new())
        .build()
        .await
        .unwrap_or_else(|e| panic!("kube-fake-client: {e}"));
    let writes = Arc::new(AtomicU64::new(0));
    let namespaces: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let ns_versions = Arc::new(AtomicU64::new(0));
    let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
    let (w, store, f) = (writes.clone(), namespaces.clone(), faults.clone());
    let service = tower::service_fn(move |req: Request<Body>| {
        let (fake, w, store, ns_versions, faults) = (
            fake.clone(),
            w.clone(),
            store.clone(),
            ns_versions.clone(),
            f.clone(),
        );
        async move {
            if let Some(code) = take_fault(&faults, req.method(), req.uri().path()) {
                return Ok(fault_response(code));
            }
            if req.method() != Method::GET {
                w.fetch_add(1, Ordering::SeqCst);
            }
            // The API server's version, as `kubectl version` reads it.
            if req.method() == Method::GET && req.uri().path() == "/version" {
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({ "major": "1", "minor": "34", "gitVersion": "v1.34.1",
                             "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                             "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
                ));
            }
            let parts: Vec<String> = req
                .uri()
                .path()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if parts.len() == 4 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces"
            {
                let method = req.method().clone();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                return Ok::<_, kube::Error>(
                    namespace_request(&store, &ns_versions, &method, &parts[3], &body).await,
                );
            }
            fake.send(req).await
        }
    });
    FakeCluster {
        client: kube::Client::new(service, "default"),
        writes,
        namespaces,
        faults,
    }
}
