//! Serving: TLS accept, authentication by client certificate, fault switches, routing,
//! discovery, SelfSubjectAccessReview and the `Status` error bodies.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::leases::leases;
use super::{Access, Cluster, Endpoint, GROUP, Identity, LEASES_PREFIX, SSAR_PATH, unix_now};

pub(super) async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    endpoint: Arc<Endpoint>,
    cluster: Arc<Cluster>,
) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if endpoint.faults.is_down() {
            drop(tcp);
            continue;
        }
        let acceptor = acceptor.clone();
        let endpoint = endpoint.clone();
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut down_rx = match endpoint.faults.down_tx.lock() {
                Ok(g) => match g.as_ref() {
                    Some(tx) => tx.subscribe(),
                    None => return,
                },
                Err(_) => return,
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|c| c.as_ref().to_vec());
            let service_endpoint = endpoint.clone();
            let service = hyper::service::service_fn(move |req| {
                let endpoint = service_endpoint.clone();
                let cluster = cluster.clone();
                let identity = identity.clone();
                async move {
                    // A request that raced the down switch on a kept-alive connection:
                    // an error makes hyper drop the connection without an answer.
                    if endpoint.faults.is_down() {
                        return Err(std::io::Error::other("endpoint is down"));
                    }
                    Ok(handle(req, &endpoint, &cluster, identity.as_deref()).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                biased;
                _ = down_rx.wait_for(|down| *down) => {}
                _ = conn => {}
            }
        });
    }
}

pub(super) type Resp = Response<Full<Bytes>>;

pub(super) async fn handle(
    req: Request<Incoming>,
    endpoint: &Endpoint,
    cluster: &Cluster,
    client_cert: Option<&[u8]>,
) -> Resp {
    endpoint.requests.fetch_add(1, Ordering::SeqCst);
    let slow = endpoint.faults.slow_ms.load(Ordering::SeqCst);
    if slow > 0 {
        tokio::time::sleep(Duration::from_millis(slow)).await;
    }
    let forced = endpoint.faults.error_status.load(Ordering::SeqCst);
    if forced != 0 {
        let code = u16::try_from(forced).unwrap_or(500);
        let reason = match code {
            503 => "ServiceUnavailable",
            504 => "Timeout",
            429 => "TooManyRequests",
            _ => "InternalError",
        };
        return status(code, reason, "injected fault".to_string(), None);
    }
    let identity = client_cert.and_then(|der| authenticate(cluster, der));
    let Some(identity) = identity else {
        return status(401, "Unauthorized", "Unauthorized".to_string(), None);
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return status(400, "BadRequest", format!("reading body: {e}"), None),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let content_type = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let ctx = Ctx {
        cluster,
        endpoint,
        identity: &identity,
        dry_run: query.split('&').any(|kv| kv.starts_with("dryRun=")),
        strict: query.split('&').any(|kv| kv == "fieldValidation=Strict"),
    };
    route(&ctx, &parts.method, &path, &content_type, &body)
}

pub(super) struct Ctx<'a> {
    pub(super) cluster: &'a Cluster,
    pub(super) endpoint: &'a Endpoint,
    pub(super) identity: &'a Identity,
    pub(super) dry_run: bool,
    /// `?fieldValidation=Strict`: unknown fields are a 400 instead of being dropped.
    pub(super) strict: bool,
}

fn authenticate(cluster: &Cluster, der: &[u8]) -> Option<Identity> {
    let ids = cluster.identities.lock().ok()?;
    let id = ids.get(der)?.clone();
    (id.not_after_unix > unix_now()).then_some(id)
}

fn route(ctx: &Ctx<'_>, method: &Method, path: &str, content_type: &str, body: &[u8]) -> Resp {
    let path = path.trim_end_matches('/');
    match (method, path) {
        (&Method::GET, "/version") => ok(json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-alive-test",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
            "platform": "linux/amd64"
        })),
        (&Method::GET, "/healthz" | "/livez" | "/readyz") => Response::builder()
            .status(200)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(b"ok")))
            .unwrap_or_default(),
        (&Method::GET, "/api") => ok(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{
                "clientCIDR": "0.0.0.0/0",
                "serverAddress": ctx.endpoint.addr.to_string()
            }]
        })),
        (&Method::GET, "/api/v1") => ok(json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{
                "name": "namespaces", "singularName": "namespace", "namespaced": false,
                "kind": "Namespace", "verbs": ["get", "list"], "shortNames": ["ns"]
            }]
        })),
        (&Method::GET, "/api/v1/namespaces") => {
            let names: std::collections::BTreeSet<String> = match ctx.cluster.leases.lock() {
                Ok(l) => l.keys().map(|(ns, _)| ns.clone()).collect(),
                Err(_) => return internal(),
            };
            ok(json!({
                "kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                "items": names.iter().map(|n| namespace_json(n)).collect::<Vec<_>>()
            }))
        }
        (&Method::GET, p)
            if p.starts_with("/api/v1/namespaces/") && p.matches('/').count() == 4 =>
        {
            // Every namespace exists here; kubectl asks after a 404 to word its message.
            ok(namespace_json(&p["/api/v1/namespaces/".len()..]))
        }
        (&Method::GET, "/openapi/v3") => ok(json!({
            "paths": {
                "apis/coordination.k8s.io/v1": {
                    "serverRelativeURL": "/openapi/v3/apis/coordination.k8s.io/v1?hash=ALIVE0"
                }
            }
        })),
        (&Method::GET, "/openapi/v3/apis/coordination.k8s.io/v1") => ok(openapi_v3_leases()),
        (&Method::GET, "/apis") => ok(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [group_json(GROUP), group_json("authorization.k8s.io")]
        })),
        (&Method::GET, "/apis/coordination.k8s.io") => {
            let mut g = group_json(GROUP);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            ok(g)
        }
        (&Method::GET, "/apis/coordination.k8s.io/v1") => ok(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1",
            "resources": [{
                "name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "storageVersionHash": "gqkMMb/YqFM="
            }]
        })),
        (&Method::GET, "/apis/authorization.k8s.io/v1") => ok(json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authorization.k8s.io/v1",
            "resources": [{
                "name": "selfsubjectaccessreviews", "singularName": "selfsubjectaccessreview",
                "namespaced": false, "kind": "SelfSubjectAccessReview", "verbs": ["create"]
            }]
        })),
        (&Method::POST, SSAR_PATH) => {
            if content_type.starts_with("application/vnd.kubernetes.protobuf") {
                match ssar_from_protobuf(body) {
                    Some(review) => self_subject_access_review(ctx, review),
                    None => status(
                        400,
                        "BadRequest",
                        "the body of the request was in an unknown format".to_string(),
                        None,
                    ),
                }
            } else {
                match serde_json::from_slice(body) {
                    Ok(review @ Value::Object(_)) => self_subject_access_review(ctx, review),
                    _ => status(
                        400,
                        "BadRequest",
                        "the body of the request was in an unknown format".to_string(),
                        None,
                    ),
                }
            }
        }
        _ => match path.strip_prefix(LEASES_PREFIX) {
            Some(rest) => leases(ctx, method, rest, content_type, body),
            None => status(
                404,
                "NotFound",
                "the server could not find the requested resource".to_string(),
                Some(json!({})),
            ),
        },
    }
}

fn namespace_json(name: &str) -> Value {
    json!({
        "kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": name, "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    })
}

/// Just enough OpenAPI v3 for kubectl to see that the Lease PATCH endpoint takes
/// `fieldValidation`: it then validates on the server (`?fieldValidation=Strict`) instead of
/// downloading `/openapi/v2` for client-side validation.
fn openapi_v3_leases() -> Value {
    let gvk = json!({"group": GROUP, "version": "v1", "kind": "Lease"});
    let field_validation = json!({
        "name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}
    });
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0-alive-test"},
        "paths": {
            "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}": {
                "patch": {
                    "operationId": "patchCoordinationV1NamespacedLease",
                    "parameters": [field_validation],
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk
                }
            }
        },
        "components": {"schemas": {}}
    })
}

fn group_json(name: &str) -> Value {
    json!({
        "name": name,
        "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
        "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}
    })
}

/// kubectl's typed clients send SelfSubjectAccessReview as Kubernetes protobuf (`k8s\0`
/// + runtime.Unknown{raw: SelfSubjectAccessReview}); they accept a JSON answer.
fn ssar_from_protobuf(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let raw = proto_field(unknown, 2)?;
    let spec = proto_field(raw, 2)?;
    let attrs = proto_field(spec, 1)?;
    let text = |n| {
        proto_field(attrs, n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    Some(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {
            "namespace": text(1), "verb": text(2), "group": text(3), "version": text(4),
            "resource": text(5), "subresource": text(6), "name": text(7)
        }}
    }))
}

/// The first length-delimited field `number` of a protobuf message.
fn proto_field(mut msg: &[u8], number: u64) -> Option<&[u8]> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        match key & 7 {
            0 => {
                varint(&mut msg)?;
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).ok()?;
                let value = msg.get(..len)?;
                msg = msg.get(len..)?;
                if key >> 3 == number {
                    return Some(value);
                }
            }
            _ => return None,
        }
    }
    None
}

fn self_subject_access_review(ctx: &Ctx<'_>, mut review: Value) -> Resp {
    let attrs = &review["spec"]["resourceAttributes"];
    if !attrs.is_object() {
        return invalid(
            "SelfSubjectAccessReview",
            "",
            "spec.resourceAttributes",
            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
        );
    }
    let verb = attrs["verb"].as_str().unwrap_or("");
    let group = attrs["group"].as_str().unwrap_or("");
    let resource = attrs["resource"].as_str().unwrap_or("");
    let namespace = attrs["namespace"].as_str().filter(|s| !s.is_empty());
    let allowed = group == GROUP
        && resource == "leases"
        && policy_allows(ctx.cluster, ctx.identity, verb, namespace);
    let reason = if allowed {
        format!("allowed by test policy for user {:?}", ctx.identity.user)
    } else {
        String::new()
    };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SelfSubjectAccessReview");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = if allowed {
        json!({"allowed": true, "reason": reason})
    } else {
        json!({"allowed": false})
    };
    respond(201, &review)
}

pub(super) fn policy_allows(
    cluster: &Cluster,
    identity: &Identity,
    verb: &str,
    ns: Option<&str>,
) -> bool {
    let Ok(policy) = cluster.policy.lock() else {
        return false;
    };
    policy
        .get(&identity.user)
        .unwrap_or(&Access::All)
        .allows(verb, ns)
}

pub(super) fn forbidden(
    identity: &Identity,
    verb: &str,
    name: Option<&str>,
    ns: Option<&str>,
) -> Resp {
    let what = match name {
        Some(n) => format!("leases.coordination.k8s.io {n:?} is forbidden"),
        None => "leases.coordination.k8s.io is forbidden".to_string(),
    };
    let scope = match ns {
        Some(ns) => format!(" in the namespace {ns:?}"),
        None => " at the cluster scope".to_string(),
    };
    status(
        403,
        "Forbidden",
        format!(
            "{what}: User {:?} cannot {verb} resource \"leases\" in API group \"coordination.k8s.io\"{scope}",
            identity.user
        ),
        Some(json!({"name": name.unwrap_or(""), "group": GROUP, "kind": "leases"})),
    )
}

pub(super) fn ok(v: Value) -> Resp {
    respond(200, &v)
}

pub(super) fn respond(code: u16, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

pub(super) fn status(code: u16, reason: &str, message: String, details: Option<Value>) -> Resp {
    let mut v = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    });
    if let Some(d) = details {
        v["details"] = d;
    }
    respond(code, &v)
}

pub(super) fn not_found(name: &str) -> Resp {
    status(
        404,
        "NotFound",
        format!("leases.coordination.k8s.io {name:?} not found"),
        Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
    )
}

pub(super) fn conflict(name: &str) -> Resp {
    status(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on leases.coordination.k8s.io {name:?}: the object has been modified; please apply your changes to the latest version and try again"
        ),
        Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
    )
}

pub(super) fn invalid(kind: &str, name: &str, field: &str, message: &str) -> Resp {
    status(
        422,
        "Invalid",
        format!("{kind}.coordination.k8s.io {name:?} is invalid: {field}: {message}"),
        Some(json!({
            "name": name, "group": GROUP, "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]
        })),
    )
}

pub(super) fn internal() -> Resp {
    status(
        500,
        "InternalError",
        "test server state poisoned".to_string(),
        None,
    )
}
