//! An in-memory Kubernetes API for reconcile tests: kube-fake-client (server-side apply,
//! resource versions, selectors), with two additions:
//!
//! - Namespaces: kube-fake-client 0.3 cannot parse the paths of the `namespaces` resource
//!   itself (`/api/v1/namespaces/{name}`), so those requests are served here from a small
//!   store with the same semantics (create on apply, resource version bumped per write, a
//!   deleted namespace Terminating until `finish_namespace_deletions` plays the namespace
//!   controller).
//! - `GET /version`, answered as a Kubernetes 1.34 API server does.
//! - The write rules of the API server kube-fake-client does not enforce: immutable fields
//!   and storage (see [`crate::fake_rules`]); every cluster starts with kind's default
//!   StorageClass `standard` (ReadWriteOnce, no expansion).
//! - A count of API writes (every request that is not a GET, LIST or WATCH), the number a
//!   no-op reconcile must keep at zero.
//! - Server-side apply's field removal: a field a manager applied before and leaves out of
//!   its next apply is removed, as the API server does (kube-fake-client keeps it; see
//!   [`crate::fake_ssa`]).
//! - Watches (`?watch=true`), which kube-fake-client 0.3 answers as a plain LIST: served
//!   here as the API server streams them (one JSON watch event per line), by listing
//!   every 20 ms and sending each object whose resource version moved (`MODIFIED`, or
//!   `ADDED` for one not seen on this watch before) or that went away (`DELETED`), until
//!   `timeoutSeconds`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use kube::client::Body;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What the fake answers with: a whole body, or a watch's stream.
type Reply = Response<UnsyncBoxBody<Bytes, BoxError>>;

fn boxed(r: Response<Body>) -> Reply {
    r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
}

/// Is this request a watch (`?watch=true` or `?watch=1`)?
fn is_watch(uri: &http::Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
}

/// A watch, served by listing every 20 ms and streaming what changed (see the module's
/// documentation). Objects at or below the watch's `resourceVersion` count as seen.
fn watch_reply(fake: kube::Client, uri: &http::Uri) -> Reply {
    let mut from = 0u64;
    let mut timeout = Duration::from_secs(290);
    let mut list_query = Vec::new();
    for pair in uri.query().unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "resourceVersion" => from = v.parse().unwrap_or(0),
            "timeoutSeconds" => timeout = v.parse().map(Duration::from_secs).unwrap_or(timeout),
            "watch" | "allowWatchBookmarks" | "resourceVersionMatch" | "sendInitialEvents" => {}
            _ => list_query.push(pair.to_owned()),
        }
    }
    let list_uri = format!("{}?{}", uri.path(), list_query.join("&"));
    let deadline = Instant::now() + timeout;
    // Per object (namespace/name): its last resource version sent or seen.
    let seen: HashMap<String, u64> = HashMap::new();
    let stream = futures::stream::unfold(
        (fake, list_uri, seen, true),
        move |(fake, list_uri, mut seen, first)| async move {
            let mut wait = !first;
            loop {
                if wait {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                wait = true;
                if Instant::now() >= deadline {
                    return None;
                }
                let req = Request::get(&list_uri).body(Body::empty()).ok()?;
                let resp = fake.send(req).await.ok()?;
                let bytes = resp.into_body().collect_bytes().await.ok()?;
                let list: Value = serde_json::from_slice(&bytes).ok()?;
                let mut lines = Vec::new();
                let mut now = HashMap::new();
                for item in list["items"].as_array().cloned().unwrap_or_default() {
                    let meta = &item["metadata"];
                    let key = format!(
                        "{}/{}",
                        meta["namespace"].as_str().unwrap_or_default(),
                        meta["name"].as_str().unwrap_or_default()
                    );
                    let rv: u64 = meta["resourceVersion"]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    now.insert(key.clone(), rv);
                    let kind = match seen.get(&key) {
                        None if rv > from => "ADDED",
                        Some(before) if rv > *before => "MODIFIED",
                        _ => continue,
                    };
                    lines.push(json!({ "type": kind, "object": item }).to_string());
                }
                for (key, _) in seen.iter().filter(|(k, _)| !now.contains_key(*k)) {
                    let (ns, name) = key.split_once('/').unwrap_or(("", key));
                    let mut gone = json!({ "metadata": { "name": name } });
                    if !ns.is_empty() {
                        gone["metadata"]["namespace"] = json!(ns);
                    }
                    if let (Some(v), Some(k)) = (list["apiVersion"].as_str(), list["kind"].as_str())
                    {
                        gone["apiVersion"] = json!(v);
                        gone["kind"] = json!(k.trim_end_matches("List"));
                    }
                    lines.push(json!({ "type": "DELETED", "object": gone }).to_string());
                }
                seen = now;
                if !lines.is_empty() {
                    let mut chunk = lines.join("\n");
                    chunk.push('\n');
                    return Some((
                        Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(chunk))),
                        (fake, list_uri, seen, false),
                    ));
                }
            }
        },
    );
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// The namespaced kinds a tenant holds, which `finish_namespace_deletions` empties.
pub const TENANT_KINDS: [(&str, &str, &str); 14] = [
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("batch", "v1", "Job"),
    ("batch", "v1", "CronJob"),
    ("", "v1", "Secret"),
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "ResourceQuota"),
    ("", "v1", "LimitRange"),
    ("networking.k8s.io", "v1", "Ingress"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
];

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

    /// Adds a StorageClass (not the default one): `provisioner` decides whether it offers
    /// ReadWriteMany (see [`crate::fake_rules::SHARED_PROVISIONERS`]), `expandable` whether
    /// its claims may grow.
    pub async fn add_storage_class(&self, name: &str, provisioner: &str, expandable: bool) {
        let api: kube::Api<k8s_openapi::api::storage::v1::StorageClass> =
            kube::Api::all(self.client.clone());
        let class = serde_json::from_value(json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": { "name": name },
            "provisioner": provisioner,
            "allowVolumeExpansion": expandable,
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        api.create(&kube::api::PostParams::default(), &class)
            .await
            .unwrap_or_else(|e| panic!("StorageClass {name}: {e}"));
    }

    /// Plays the namespace controller: every Terminating namespace is emptied (the objects
    /// of the kinds `kinds` lists, as `(group, version, kind)`) and goes.
    pub async fn finish_namespace_deletions(&self, kinds: &[(&str, &str, &str)]) {
        let terminating: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|(_, ns)| !ns["metadata"]["deletionTimestamp"].is_null())
            .map(|(name, _)| name)
            .collect();
        for name in terminating {
            for (group, version, kind) in kinds {
                let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
                let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                    self.client.clone(),
                    &name,
                    &kube::api::ApiResource::from_gvk(&gvk),
                );
                let items = api
                    .list(&kube::api::ListParams::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                for o in items {
                    if let Some(n) = o.metadata.name {
                        let _ = api.delete(&n, &Default::default()).await;
                    }
                }
            }
            self.namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        }
    }

    /// How many injected faults are still armed (see [`FakeCluster::fail`]).
    pub fn faults_left(&self) -> usize {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| f.times)
            .sum()
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
                json!({ "apiVersion": "v1", "kind": "Namespace",
                        "metadata": { "name": name, "uid": format!("ns-{name}"),
                                      "labels": { "kubernetes.io/metadata.name": name } },
                        "spec": { "finalizers": ["kubernetes"] },
                        "status": { "phase": "Active" } })
            });
            merge(entry, &patch);
            let rv = version.fetch_add(1, Ordering::SeqCst) + 1;
            entry["metadata"]["resourceVersion"] = json!(format!("ns-{rv}"));
            json_response(StatusCode::OK, entry)
        }
        // As the API server does: the namespace is Terminating until the namespace
        // controller (here: `FakeCluster::finish_namespace_deletions`) has emptied it and
        // removed its `kubernetes` finalizer.
        Method::DELETE => match store.get_mut(name) {
            Some(ns) => {
                if ns["metadata"]["deletionTimestamp"].is_null() {
                    ns["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    ns["status"]["phase"] = json!("Terminating");
                    let rv = version.fetch_add(1, Ordering::SeqCst) + 1;
                    ns["metadata"]["resourceVersion"] = json!(format!("ns-{rv}"));
                }
                json_response(StatusCode::OK, ns)
            }
            None => not_found(name),
        },
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "kind": "Status", "code": 405 }),
        ),
    }
}

/// Sends a request to kube-fake-client, then does what it leaves out of a server-side
/// apply: the removal of the fields the manager stopped applying (see
/// [`crate::fake_ssa`]). A deleted object's applies are forgotten.
async fn forward(
    fake: &kube::Client,
    applied: &crate::fake_ssa::Applied,
    head: http::request::Parts,
    body: Vec<u8>,
) -> Result<Reply, kube::Error> {
    let path = head.uri.path().to_owned();
    let manager = crate::fake_ssa::apply_manager(
        &head.method,
        &head.headers,
        head.uri.query().unwrap_or_default(),
    );
    let deleting = head.method == Method::DELETE;
    let applied_body: Option<Value> = serde_json::from_slice(&body).ok();
    if deleting {
        if let Some(refused) = unmet_precondition(fake, &path, applied_body.as_ref()).await? {
            return Ok(boxed(refused));
        }
    }
    let resp = fake
        .send(Request::from_parts(head, Body::from(body)))
        .await?;
    if deleting && resp.status().is_success() {
        applied.forget(&path);
    }
    let (Some(manager), Some(applied_body), true) =
        (manager, applied_body, resp.status().is_success())
    else {
        return Ok(boxed(resp));
    };
    let Some(removal) = applied.record(&path, &manager, &applied_body) else {
        return Ok(boxed(resp));
    };
    let req = Request::patch(&path)
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(Body::from(removal.to_string().into_bytes()))
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    fake.send(req).await.map(boxed)
}

/// A delete's `preconditions` (`uid`, `resourceVersion`), which kube-fake-client ignores:
/// the API server answers 409 Conflict when the object has another one, and deletes
/// nothing.
async fn unmet_precondition(
    fake: &kube::Client,
    path: &str,
    body: Option<&Value>,
) -> Result<Option<Response<Body>>, kube::Error> {
    let Some(pre) = body
        .and_then(|b| b.get("preconditions"))
        .filter(|p| p.is_object())
    else {
        return Ok(None);
    };
    let req = Request::get(path)
        .body(Body::empty())
        .map_err(|e| kube::Error::Service(Box::new(e)))?;
    let resp = fake.send(req).await?;
    if !resp.status().is_success() {
        return Ok(None);
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| kube::Error::Service(Box::new(e)))?
        .to_bytes();
    let current: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    for (field, meta) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
        let Some(want) = pre.get(field).and_then(Value::as_str) else {
            continue;
        };
        let have = current["metadata"][meta].as_str().unwrap_or_default();
        if want != have {
            let shown = if field == "uid" {
                "UID"
            } else {
                "ResourceVersion"
            };
            return Ok(Some(json_response(
                StatusCode::CONFLICT,
                &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
                         "message": format!("Precondition failed: {shown} in precondition: {want}, {shown} in object meta: {have}") }),
            )));
        }
    }
    Ok(None)
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
    // The default StorageClass, as kind makes it (see [`crate::fake_rules`]).
    let class = Request::post("/apis/storage.k8s.io/v1/storageclasses")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            crate::fake_rules::default_storage_class()
                .to_string()
                .into_bytes(),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let made = fake
        .send(class)
        .await
        .unwrap_or_else(|e| panic!("kube-fake-client: {e}"));
    assert!(
        made.status().is_success(),
        "default StorageClass: {}",
        made.status()
    );
    let writes = Arc::new(AtomicU64::new(0));
    let namespaces: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let ns_versions = Arc::new(AtomicU64::new(0));
    let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
    let applied: Arc<crate::fake_ssa::Applied> = Arc::default();
    let (w, store, f) = (writes.clone(), namespaces.clone(), faults.clone());
    let service = tower::service_fn(move |req: Request<Body>| {
        let (fake, w, store, ns_versions, faults, applied) = (
            fake.clone(),
            w.clone(),
            store.clone(),
            ns_versions.clone(),
            f.clone(),
            applied.clone(),
        );
        async move {
            if let Some(code) = take_fault(&faults, req.method(), req.uri().path()) {
                return Ok(boxed(fault_response(code)));
            }
            if req.method() == Method::GET && is_watch(req.uri()) {
                return Ok(watch_reply(fake, req.uri()));
            }
            if req.method() != Method::GET {
                w.fetch_add(1, Ordering::SeqCst);
            }
            // The API server's version, as `kubectl version` reads it.
            if req.method() == Method::GET && req.uri().path() == "/version" {
                return Ok(boxed(json_response(
                    StatusCode::OK,
                    &json!({ "major": "1", "minor": "34", "gitVersion": "v1.34.1",
                             "gitCommit": "fake", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                             "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
                )));
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
                return Ok::<_, kube::Error>(boxed(
                    namespace_request(&store, &ns_versions, &method, &parts[3], &body).await,
                ));
            }
            if crate::fake_rules::applies(req.method(), req.uri().path()) {
                let (head, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                if let Some(no) =
                    crate::fake_rules::check(&fake, &head.method, head.uri.path(), &body).await
                {
                    return Ok(boxed(json_response(no.status(), &no.to_json())));
                }
                return forward(&fake, &applied, head, body).await;
            }
            let (head, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            forward(&fake, &applied, head, body).await
        }
    });
    FakeCluster {
        client: kube::Client::new(service, "default"),
        writes,
        namespaces,
        faults,
    }
}
