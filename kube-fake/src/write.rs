//! Writes over HTTP: create (POST), replace (PUT), patch (PATCH: JSON merge patch,
//! strategic merge patch read as a merge patch, and server-side apply, which creates
//! the object when it is missing) and delete (DELETE), for the watched kinds and the
//! stored ones alike, with the API server's answers: 201 with the object on create,
//! 409 `AlreadyExists`, 404 for a missing object or a namespace that does not exist,
//! 400 for a body whose type or namespace does not match the path; a Secret's
//! `stringData` is stored as `data`.
//!
//! A write to a watched kind goes through [`Store::apply`](super::store::Store) and
//! wakes its watches, exactly as [`FakeKube::apply`](crate::FakeKube::apply) does.
//! Deleting a namespace does not delete what is in it (no namespace controller runs).

use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{
    http::{json_response, ok_json, read_json, ApiError, Body, Target},
    review::User,
    store::now_rfc3339,
    types::{self, Resource, Type},
    Inner,
};

/// A write request, answered.
pub(super) async fn write(
    inner: &Arc<Inner>,
    req: Request<hyper::body::Incoming>,
    user: &User,
) -> Response<Body> {
    tracing::debug!(method = %req.method(), uri = %req.uri(), "fake kube-apiserver write");
    match try_write(inner, req, user).await {
        Ok(rsp) => rsp,
        Err(e) => e.into_response(),
    }
}

async fn try_write(
    inner: &Arc<Inner>,
    req: Request<hyper::body::Incoming>,
    user: &User,
) -> Result<Response<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let segments: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (api_version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return Err(ApiError::not_found()),
    };
    let target = Target::parse(inner, &api_version, rest)?;
    let method = parts.method.clone();
    let verb = match method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        _ => "delete",
    };
    target.authorize(inner, user, verb)?;
    if method == Method::DELETE {
        return delete(inner, &target);
    }
    let body = read_json(body).await?;
    match method {
        Method::POST => {
            if target.name.is_some() {
                return Err(ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "POST creates in a collection, not at a name",
                ));
            }
            let (name, obj) = prepare(inner, &target, &api_version, body, None)?;
            if exists(inner, &target, &name) {
                return Err(already_exists(target.resource, &name));
            }
            store(inner, &target, &name, obj, StatusCode::CREATED)
        }
        Method::PUT => {
            let (name, obj) = prepare(inner, &target, &api_version, body, target.name.as_deref())?;
            if !exists(inner, &target, &name) {
                return Err(ApiError::not_found_named(target.resource, &name));
            }
            store(inner, &target, &name, obj, StatusCode::OK)
        }
        _ => {
            let name = target
                .name
                .clone()
                .ok_or_else(|| ApiError::bad_request("PATCH needs a name"))?;
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let apply = content_type.starts_with("application/apply-patch");
            if !apply
                && !content_type.starts_with("application/merge-patch+json")
                && !content_type.starts_with("application/strategic-merge-patch+json")
            {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    &format!(
                        "the fake API server patches with merge patches and server-side apply, not {content_type:?}"
                    ),
                ));
            }
            let current = current(inner, &target, &name);
            let merged = match current {
                Some(mut current) => {
                    types::merge_patch(&mut current, &body);
                    current
                }
                None if apply => body,
                None => return Err(ApiError::not_found_named(target.resource, &name)),
            };
            let (name, obj) = prepare(inner, &target, &api_version, merged, Some(&name))?;
            store(inner, &target, &name, obj, StatusCode::OK)
        }
    }
}

/// Checks a body against the path and fills in what the path says: its type, its
/// namespace (a namespace that must exist), its name (or one made from
/// `generateName`). Returns the name and the object.
fn prepare(
    inner: &Inner,
    target: &Target,
    api_version: &str,
    mut obj: Value,
    name_in_path: Option<&str>,
) -> Result<(String, Value), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let kind = target.resource.kind();
    for (field, want) in [("apiVersion", api_version), ("kind", kind)] {
        match obj[field].as_str() {
            None => obj[field] = want.into(),
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(&format!(
                    "the body's {field} {got:?} does not match the path's {want:?}"
                )))
            }
        }
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    let name = match (
        meta["name"].as_str(),
        name_in_path,
        meta["generateName"].as_str(),
    ) {
        (Some(body), Some(path), _) if body != path => {
            return Err(ApiError::bad_request(&format!(
                "the name of the object ({body}) does not match the name on the URL ({path})"
            )))
        }
        (Some(name), _, _) | (None, Some(name), _) => name.to_owned(),
        (None, None, Some(prefix)) => {
            let suffix: String = (0..5)
                .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rand::random::<usize>() % 27]))
                .collect();
            format!("{prefix}{suffix}")
        }
        (None, None, None) => {
            return Err(ApiError::invalid(
                "metadata.name: Required value: name or generateName is required",
            ))
        }
    };
    meta["name"] = name.clone().into();
    if target.resource.namespaced() {
        let ns = match (meta["namespace"].as_str(), target.namespace.as_deref()) {
            (Some(body), Some(path)) if body != path => {
                return Err(ApiError::bad_request(&format!(
                    "the namespace of the provided object ({body}) does not match the namespace sent on the request ({path})"
                )))
            }
            (_, Some(ns)) | (Some(ns), None) => ns.to_owned(),
            (None, None) => "default".to_owned(),
        };
        meta["namespace"] = ns.clone().into();
        let namespaces = Type::from_type("v1", "Namespace").expect("Namespace is a stored type");
        let found = inner
            .store
            .lock()
            .expect("store lock is not poisoned")
            .others
            .get(namespaces, "", &ns)
            .is_some();
        if !found {
            return Err(ApiError::not_found_named(Resource::Stored(namespaces), &ns));
        }
    } else if let Some(meta) = meta.as_object_mut() {
        meta.remove("namespace");
    }
    if kind == "Secret" && target.resource.group().is_empty() {
        string_data(&mut obj)?;
    }
    if kind == "Namespace" && target.resource.group().is_empty() {
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name.clone().into();
        if obj["status"]["phase"].is_null() {
            obj["status"] = json!({"phase": "Active"});
        }
    }
    Ok((name, obj))
}

/// A Secret's `stringData` merged into `data` (base64), as the API server stores it.
fn string_data(obj: &mut Value) -> Result<(), ApiError> {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return Ok(());
    };
    if !obj["data"].is_object() {
        obj["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().ok_or_else(|| {
            ApiError::invalid(&format!(
                "stringData.{key}: Invalid value: must be a string"
            ))
        })?;
        obj["data"][key] = base64::engine::general_purpose::STANDARD
            .encode(text)
            .into();
    }
    Ok(())
}

fn namespace(target: &Target, obj: &Value) -> String {
    if target.resource.namespaced() {
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned()
    } else {
        String::new()
    }
}

fn current(inner: &Inner, target: &Target, name: &str) -> Option<Value> {
    let ns = target.namespace.as_deref().unwrap_or_default();
    let store = inner.store.lock().expect("store lock is not poisoned");
    match target.resource {
        Resource::Watched(kind) => store.get(kind, ns, name).map(|o| o.to_value()),
        Resource::Stored(t) => store.others.get(t, ns, name).cloned(),
    }
}

fn exists(inner: &Inner, target: &Target, name: &str) -> bool {
    current(inner, target, name).is_some()
}

/// Writes the object and answers with it as stored.
fn store(
    inner: &Inner,
    target: &Target,
    name: &str,
    obj: Value,
    code: StatusCode,
) -> Result<Response<Body>, ApiError> {
    let now = now_rfc3339();
    let ns = namespace(target, &obj);
    let mut store = inner.store.lock().expect("store lock is not poisoned");
    let stored = match target.resource {
        Resource::Watched(kind) => {
            store
                .apply(obj, &now)
                .map_err(|e| ApiError::invalid(&format!("{e:#}")))?;
            let (rv, epoch) = (store.rv(), store.epoch());
            let stored = store.get(kind, &ns, name).map(|o| o.to_value());
            drop(store);
            inner.publish(rv, epoch);
            stored
        }
        Resource::Stored(t) => Some(store.put_other(t, &ns, name, obj, &now).0),
    };
    let stored = stored.ok_or_else(|| ApiError::not_found_named(target.resource, name))?;
    Ok(json_response(
        code,
        serde_json::to_vec(&stored).unwrap_or_default().into(),
    ))
}

fn delete(inner: &Inner, target: &Target) -> Result<Response<Body>, ApiError> {
    let name = target
        .name
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("the fake API server deletes one object at a time"))?;
    let ns = target.namespace.as_deref().unwrap_or_default();
    let mut store = inner.store.lock().expect("store lock is not poisoned");
    let gone = match target.resource {
        Resource::Watched(kind) => {
            let obj = store.get(kind, ns, name).map(|o| o.to_value());
            if obj.is_some() {
                store.delete(kind, ns, name);
                let (rv, epoch) = (store.rv(), store.epoch());
                drop(store);
                inner.publish(rv, epoch);
            }
            obj
        }
        Resource::Stored(t) => {
            let obj = store.others.remove(t, ns, name);
            if obj.is_some() {
                store.bump();
            }
            obj
        }
    };
    gone.map(|obj| ok_json(&obj))
        .ok_or_else(|| ApiError::not_found_named(target.resource, name))
}

fn already_exists(resource: Resource, name: &str) -> ApiError {
    let what = if resource.group().is_empty() {
        resource.plural().to_owned()
    } else {
        format!("{}.{}", resource.plural(), resource.group())
    };
    ApiError::new(
        StatusCode::CONFLICT,
        "AlreadyExists",
        &format!("{what} \"{name}\" already exists"),
    )
    .with(
        "details",
        json!({"name": name, "group": resource.group(), "kind": resource.plural()}),
    )
}
