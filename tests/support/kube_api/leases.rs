//! The Lease resource: storage semantics (resourceVersion, conflicts, create-on-update,
//! merge patch) and the API server's validation and unknown-field handling.

use std::sync::atomic::Ordering;

use hyper::Method;
use serde_json::{Value, json};

use super::server::{
    Ctx, Resp, conflict, forbidden, internal, invalid, not_found, ok, policy_allows, respond,
    status,
};
use super::{Cluster, GROUP, rfc3339, unix_now};

/// `rest` is the path after `/apis/coordination.k8s.io/v1/`.
pub(super) fn leases(
    ctx: &Ctx<'_>,
    method: &Method,
    rest: &str,
    content_type: &str,
    body: &[u8],
) -> Resp {
    let segments: Vec<&str> = rest.split('/').collect();
    let (ns, name) = match segments.as_slice() {
        ["leases"] => (None, None),
        ["namespaces", ns, "leases"] => (Some(*ns), None),
        ["namespaces", ns, "leases", name] => (Some(*ns), Some(*name)),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".to_string(),
                Some(json!({})),
            );
        }
    };
    let verb = match (method, name) {
        (&Method::GET, None) => "list",
        (&Method::GET, Some(_)) => "get",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        (&Method::DELETE, None) => "deletecollection",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".to_string(),
                Some(json!({})),
            );
        }
    };
    if ns.is_none() && verb != "list" {
        return status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".to_string(),
            Some(json!({})),
        );
    }
    if !policy_allows(ctx.cluster, ctx.identity, verb, ns) {
        return forbidden(ctx.identity, verb, name, ns);
    }
    let is_write = matches!(verb, "create" | "update" | "patch" | "delete");
    if is_write && ctx.endpoint.faults.take_conflict() {
        let n = name.unwrap_or("");
        return conflict(n);
    }
    match verb {
        "list" => list(ctx.cluster, ns),
        "get" => get(ctx.cluster, ns.unwrap_or(""), name.unwrap_or("")),
        "create" => create(ctx, ns.unwrap_or(""), body),
        "update" => update(ctx, ns.unwrap_or(""), name.unwrap_or(""), body),
        "patch" => patch(
            ctx,
            ns.unwrap_or(""),
            name.unwrap_or(""),
            content_type,
            body,
        ),
        "delete" => delete(ctx, ns.unwrap_or(""), name.unwrap_or(""), body),
        _ => status(
            405,
            "MethodNotAllowed",
            "deletecollection is not implemented by the test server".to_string(),
            Some(json!({})),
        ),
    }
}

fn list(cluster: &Cluster, ns: Option<&str>) -> Resp {
    let Ok(leases) = cluster.leases.lock() else {
        return internal();
    };
    let items: Vec<Value> = leases
        .iter()
        .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
        .map(|(_, v)| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("kind");
                o.remove("apiVersion");
            }
            v
        })
        .collect();
    ok(json!({
        "kind": "LeaseList", "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"resourceVersion": cluster.resource_version.load(Ordering::SeqCst).to_string()},
        "items": items
    }))
}

fn get(cluster: &Cluster, ns: &str, name: &str) -> Resp {
    let Ok(leases) = cluster.leases.lock() else {
        return internal();
    };
    match leases.get(&(ns.to_string(), name.to_string())) {
        Some(v) => ok(v.clone()),
        None => not_found(name),
    }
}

fn create(ctx: &Ctx<'_>, ns: &str, body: &[u8]) -> Resp {
    let mut obj = match decode_lease(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if let Some(r) = drop_unknown_fields(&mut obj, ctx.strict) {
        return r;
    }
    if let Some(r) = check_namespace(&obj, ns) {
        return r;
    }
    let name = match obj["metadata"]["name"].as_str() {
        Some(n) => n.to_string(),
        None => match obj["metadata"]["generateName"].as_str() {
            Some(prefix) => format!(
                "{prefix}{:05x}",
                ctx.cluster.uid_counter.load(Ordering::SeqCst) & 0xfffff
            ),
            None => {
                return invalid(
                    "Lease",
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                );
            }
        },
    };
    if let Some(r) = validate(&obj, &name) {
        return r;
    }
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.clone());
    if leases.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("leases.coordination.k8s.io {name:?} already exists"),
            Some(json!({"name": name, "group": GROUP, "kind": "leases"})),
        );
    }
    let uid = ctx.cluster.uid_counter.fetch_add(1, Ordering::SeqCst) + 1;
    let meta = obj["metadata"].as_object_mut();
    if let Some(meta) = meta {
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(ns));
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{uid:012x}")),
        );
        meta.insert("creationTimestamp".into(), json!(rfc3339(unix_now())));
        meta.remove("generateName");
        meta.remove("managedFields");
        meta.remove("deletionTimestamp");
    }
    obj["metadata"]["resourceVersion"] = json!(ctx.cluster.next_rv());
    if !ctx.dry_run {
        leases.insert(key, obj.clone());
    }
    respond(201, &obj)
}

fn update(ctx: &Ctx<'_>, ns: &str, name: &str, body: &[u8]) -> Resp {
    let mut obj = match decode_lease(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    if let Some(r) = drop_unknown_fields(&mut obj, ctx.strict) {
        return r;
    }
    if let Some(r) = check_namespace(&obj, ns) {
        return r;
    }
    match obj["metadata"]["name"].as_str() {
        Some(n) if n == name => {}
        Some(n) => {
            return status(
                400,
                "BadRequest",
                format!("the name of the object ({n}) does not match the name on the URL ({name})"),
                None,
            );
        }
        None => {
            return invalid(
                "Lease",
                name,
                "metadata.name",
                "Required value: name is required",
            );
        }
    }
    if let Some(r) = validate(&obj, name) {
        return r;
    }
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let wanted_rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty());
    let Some(current) = leases.get(&key) else {
        if wanted_rv.is_some() {
            return not_found(name);
        }
        // Leases allow create-on-update (the registry's AllowCreateOnUpdate).
        drop(leases);
        return create(ctx, ns, body);
    };
    if let Some(rv) = wanted_rv
        && current["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return conflict(name);
    }
    let stored = store_update(ctx, current, obj);
    if !ctx.dry_run {
        leases.insert(key, stored.clone());
    }
    ok(stored)
}

/// Server-owned metadata survives the client's object; the resourceVersion advances.
fn store_update(ctx: &Ctx<'_>, current: &Value, mut obj: Value) -> Value {
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        obj["metadata"][field] = current["metadata"][field].clone();
    }
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("managedFields");
        meta.remove("generateName");
    }
    obj["metadata"]["resourceVersion"] = json!(ctx.cluster.next_rv());
    obj["kind"] = json!("Lease");
    obj["apiVersion"] = json!("coordination.k8s.io/v1");
    obj
}

fn patch(ctx: &Ctx<'_>, ns: &str, name: &str, content_type: &str, body: &[u8]) -> Resp {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {}
        "application/json-patch+json" | "application/apply-patch+yaml" => {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the test server does not implement {media}"),
                None,
            );
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
                None,
            );
        }
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return status(
                400,
                "BadRequest",
                "error decoding patch: invalid JSON object".to_string(),
                None,
            );
        }
    };
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let Some(current) = leases.get(&key) else {
        return not_found(name);
    };
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str()
        && current["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return conflict(name);
    }
    let mut merged = current.clone();
    merge_patch(&mut merged, &patch);
    if let Some(r) = drop_unknown_fields(&mut merged, ctx.strict) {
        return r;
    }
    if merged["metadata"]["name"].as_str() != Some(name)
        || merged["metadata"]["namespace"].as_str() != Some(ns)
    {
        return invalid(
            "Lease",
            name,
            "metadata.name",
            "Invalid value: field is immutable",
        );
    }
    if let Some(r) = validate(&merged, name) {
        return r;
    }
    let stored = store_update(ctx, current, merged);
    if !ctx.dry_run {
        leases.insert(key, stored.clone());
    }
    ok(stored)
}

fn delete(ctx: &Ctx<'_>, ns: &str, name: &str, body: &[u8]) -> Resp {
    let precondition: Option<String> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v["preconditions"]["resourceVersion"]
            .as_str()
            .map(String::from)
    });
    let Ok(mut leases) = ctx.cluster.leases.lock() else {
        return internal();
    };
    let key = (ns.to_string(), name.to_string());
    let Some(current) = leases.get(&key) else {
        return not_found(name);
    };
    if let Some(rv) = precondition
        && current["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
    {
        return conflict(name);
    }
    let uid = current["metadata"]["uid"].clone();
    if !ctx.dry_run {
        leases.remove(&key);
        ctx.cluster.next_rv();
    }
    ok(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": GROUP, "kind": "leases", "uid": uid}
    }))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn decode_lease(body: &[u8]) -> Result<Value, Box<Resp>> {
    let obj: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(status(
            400,
            "BadRequest",
            format!("the body of the request was in an unknown format: {e}"),
            None,
        ))
    })?;
    if !obj.is_object() {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "the body of the request was in an unknown format".to_string(),
            None,
        )));
    }
    if let Some(kind) = obj.get("kind")
        && kind != "Lease"
    {
        return Err(Box::new(status(
            400,
            "BadRequest",
            format!("the kind {kind} is not Lease"),
            None,
        )));
    }
    if let Some(av) = obj.get("apiVersion")
        && av != "coordination.k8s.io/v1"
    {
        return Err(Box::new(status(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({av}) does not match the expected API version (coordination.k8s.io/v1)"
            ),
            None,
        )));
    }
    let mut obj = obj;
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["kind"] = json!("Lease");
    obj["apiVersion"] = json!("coordination.k8s.io/v1");
    Ok(obj)
}

const LEASE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const SPEC_FIELDS: &[&str] = &[
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    "strategy",
    "preferredHolder",
];

/// Unknown fields are dropped, as the API server's decoder does; with strict field
/// validation they are a 400 naming the first one, as `kubectl` shows it.
fn drop_unknown_fields(obj: &mut Value, strict: bool) -> Option<Resp> {
    let mut unknown = Vec::new();
    prune(obj, LEASE_FIELDS, "", &mut unknown);
    prune(&mut obj["metadata"], META_FIELDS, "metadata.", &mut unknown);
    if obj["spec"].is_object() {
        prune(&mut obj["spec"], SPEC_FIELDS, "spec.", &mut unknown);
    }
    if strict && !unknown.is_empty() {
        let list: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        return Some(status(
            400,
            "BadRequest",
            format!("strict decoding error: {}", list.join(", ")),
            None,
        ));
    }
    None
}

fn prune(v: &mut Value, allowed: &[&str], prefix: &str, unknown: &mut Vec<String>) {
    if let Value::Object(map) = v {
        map.retain(|k, _| {
            let known = allowed.contains(&k.as_str());
            if !known {
                unknown.push(format!("{prefix}{k}"));
            }
            known
        });
    }
}

fn check_namespace(obj: &Value, ns: &str) -> Option<Resp> {
    match obj["metadata"]["namespace"].as_str() {
        Some(n) if !n.is_empty() && n != ns => Some(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request"
                .to_string(),
            None,
        )),
        _ => None,
    }
}

/// The Lease validation of the real API server (ValidateLease + ObjectMeta), plus type
/// checks that the real server does while decoding (they are 400 there; 422 here is
/// close enough for a client that only checks "it failed").
fn validate(obj: &Value, name: &str) -> Option<Resp> {
    let bad = |field: &str, msg: String| Some(invalid("Lease", name, field, &msg));
    if !is_dns_subdomain(name) {
        return bad(
            "metadata.name",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        );
    }
    let spec = &obj["spec"];
    if spec.is_null() {
        return None;
    }
    if !spec.is_object() {
        return bad("spec", "Invalid value: must be an object".to_string());
    }
    if let Some(h) = spec.get("holderIdentity")
        && !(h.is_string() || h.is_null())
    {
        return bad(
            "spec.holderIdentity",
            format!("Invalid value: {h}: must be a string"),
        );
    }
    if let Some(d) = spec.get("leaseDurationSeconds")
        && !d.is_null()
    {
        match d.as_i64() {
            Some(v) if v > 0 && v <= i64::from(i32::MAX) => {}
            Some(v) if v <= 0 => {
                return bad(
                    "spec.leaseDurationSeconds",
                    format!("Invalid value: {v}: must be greater than 0"),
                );
            }
            _ => {
                return bad(
                    "spec.leaseDurationSeconds",
                    format!("Invalid value: {d}: must be a 32-bit integer"),
                );
            }
        }
    }
    if let Some(t) = spec.get("leaseTransitions")
        && !t.is_null()
    {
        match t.as_i64() {
            Some(v) if (0..=i64::from(i32::MAX)).contains(&v) => {}
            _ => {
                return bad(
                    "spec.leaseTransitions",
                    format!("Invalid value: {t}: must be greater than or equal to 0"),
                );
            }
        }
    }
    for field in ["acquireTime", "renewTime"] {
        if let Some(t) = spec.get(field)
            && !t.is_null()
            && !t.as_str().is_some_and(is_rfc3339)
        {
            return bad(
                &format!("spec.{field}"),
                format!("Invalid value: {t}: must be an RFC 3339 time (MicroTime)"),
            );
        }
    }
    None
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

/// `2006-01-02T15:04:05[.frac](Z|±hh:mm)`.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}
