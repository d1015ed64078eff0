use super::review::{review, BadReview, Decision, Reviewed, MAX_MESSAGE};
use super::*;
use serde_json::{json, Value};

fn body(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "mesh.rs", "version": "v1alpha1", "kind": "ServiceProfile"},
            "resource": {"group": "mesh.rs", "version": "v1alpha1", "resource": "serviceprofiles"},
            "name": "web.default.svc.cluster.local",
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    }))
    .unwrap()
}

fn profile(spec: Value) -> Value {
    json!({
        "apiVersion": "mesh.rs/v1alpha1",
        "kind": "ServiceProfile",
        "metadata": {
            "name": "web.default.svc.cluster.local",
            "namespace": "default",
            "uid": "x",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": spec,
    })
}

fn denied(r: Result<Reviewed, BadReview>) -> String {
    match r.unwrap().decision {
        Decision::Denied(m) => m,
        Decision::Allowed => panic!("allowed"),
    }
}

#[test]
fn a_valid_profile_is_allowed_with_its_uid() {
    let spec =
        json!({"routes": [{"name": "GET /", "condition": {"method": "GET", "pathRegex": "/"}}]});
    let r = review(&body("CREATE", profile(spec)), "cluster.local").unwrap();
    assert_eq!(r.decision, Decision::Allowed);
    assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    let answer: Value = serde_json::from_slice(&r.to_json()).unwrap();
    assert_eq!(
        answer,
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true},
        })
    );
}

#[test]
fn every_problem_is_named_with_its_path() {
    let spec = json!({"routes": [
        {"name": "a", "condition": {"pathRegex": "(["}},
        {"name": "b", "condition": {"method": "GET"},
         "responseClasses": [{"condition": {"status": {"min": 500, "max": 400}}}]},
    ]});
    let message = denied(review(&body("UPDATE", profile(spec)), "cluster.local"));
    assert!(
        message.contains("spec.routes[0].condition.pathRegex: "),
        "{message}"
    );
    assert!(
        message.contains("spec.routes[1].responseClasses[0].condition.status"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 2, "{message}");
    let answer: Value = serde_json::from_slice(
        &Reviewed {
            uid: "u".into(),
            decision: Decision::Denied(message.clone()),
        }
        .to_json(),
    )
    .unwrap();
    assert_eq!(answer["response"]["allowed"], json!(false));
    assert_eq!(answer["response"]["status"]["code"], json!(400));
    assert_eq!(answer["response"]["status"]["message"], json!(message));
}

#[test]
fn unknown_fields_and_wrong_names_are_denied() {
    let spec = json!({"routes": [{"name": "a", "condition": {"method": "GET"}, "timout": "1s"}]});
    let message = denied(review(&body("CREATE", profile(spec)), "cluster.local"));
    assert!(message.starts_with("spec.routes[0]"), "{message}");
    assert!(message.contains("timout"), "{message}");

    let message = denied(review(&body("CREATE", profile(json!({}))), "example.org"));
    assert!(message.starts_with("metadata.name: "), "{message}");

    let mut object = profile(json!({}));
    object["extra"] = json!(1);
    let message = denied(review(&body("CREATE", object), "cluster.local"));
    assert!(message.contains("extra"), "{message}");
}

#[test]
fn delete_is_allowed_whatever_the_object() {
    let r = review(&body("DELETE", json!(null)), "cluster.local").unwrap();
    assert_eq!(r.decision, Decision::Allowed);
    let r = review(
        &body("DELETE", json!({"spec": {"bogus": 1}})),
        "cluster.local",
    )
    .unwrap();
    assert_eq!(r.decision, Decision::Allowed);
}

#[test]
fn other_kinds_and_missing_objects_are_denied() {
    let mut b: Value = serde_json::from_slice(&body("CREATE", profile(json!({})))).unwrap();
    b["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let message = denied(review(&serde_json::to_vec(&b).unwrap(), "cluster.local"));
    assert!(message.contains("not /Pod"), "{message}");
    let message = denied(review(&body("CREATE", json!(null)), "cluster.local"));
    assert!(message.starts_with("request.object"), "{message}");
}

#[test]
fn bodies_that_are_not_reviews_are_errors() {
    for (bytes, needle) in [
        (&b"not json"[..], "invalid AdmissionReview"),
        (b"{}", "apiVersion"),
        (b"[]", "invalid AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE"}}"#,
            "admission.k8s.io/v1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "request: required",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","operation":"CREATE"}}"#,
            "request.uid",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7,"operation":"CREATE"}}"#,
            "request.uid",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"PATCH"}}"#,
            "request.operation",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE"}} x"#,
            "trailing",
        ),
    ] {
        let error = review(bytes, "cluster.local").unwrap_err().to_string();
        assert!(error.contains(needle), "{needle}: {error}");
    }
}

#[test]
fn deep_or_odd_input_never_panics() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(review(deep.as_bytes(), "cluster.local").is_err());
    let mut not = json!({"method": "GET"});
    for _ in 0..120 {
        not = json!({"not": not});
    }
    let spec = json!({"routes": [{"name": "a", "condition": not}]});
    let _ = review(&body("CREATE", profile(spec)), "cluster.local");
    let _ = review(&[0xff, 0xfe, 0x00], "cluster.local");
}

#[test]
fn the_message_is_bounded() {
    let routes: Vec<Value> = (0..2000)
        .map(|i| json!({"name": format!("r{i}"), "condition": {"pathRegex": "(["}}))
        .collect();
    let message = denied(review(
        &body("CREATE", profile(json!({ "routes": routes }))),
        "cluster.local",
    ));
    assert!(message.len() <= MAX_MESSAGE + 64, "{}", message.len());
    assert!(message.ends_with("more problems"), "{message}");

    let huge = format!("é{}(", "x".repeat(3 * MAX_MESSAGE));
    let spec = json!({"routes": [{"name": "a", "condition": {"pathRegex": huge}}]});
    let message = denied(review(&body("CREATE", profile(spec)), "cluster.local"));
    assert!(message.len() <= MAX_MESSAGE + 64, "{}", message.len());
}

#[tokio::test]
async fn http_edge() {
    let reviews = Arc::new(Reviews::default());
    let webhook = Webhook::new("cluster.local", Arc::clone(&reviews));
    let post =
        |path: &str, b: Vec<u8>| Request::post(path).body(Full::new(Bytes::from(b))).unwrap();
    let rsp = webhook.handle(post("/nope", vec![])).await;
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    let rsp = webhook
        .handle(Request::get(PATH).body(Full::new(Bytes::new())).unwrap())
        .await;
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let rsp = webhook
        .handle(post(PATH, body("DELETE", json!(null))))
        .await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let rsp = webhook.handle(post(PATH, b"{".to_vec())).await;
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    let rsp = webhook.handle(post(PATH, vec![b' '; MAX_BODY + 1])).await;
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let rsp = webhook.handle(post(PATH, vec![b' '; MAX_DRAIN + 1])).await;
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reviews.total(Outcome::Allowed), 1);
    assert_eq!(reviews.total(Outcome::Error), 3);
    let mut out = String::new();
    reviews.render(&mut out);
    assert!(
        out.contains("webhook_reviews_total{result=\"error\"} 3\n"),
        "{out}"
    );
}

#[test]
fn webhook_reviews_are_exported_once_the_webhook_runs() {
    use crate::{index::Index, metrics::Metrics};
    let metrics = Metrics::default();
    let index = Index::new("cluster.local", "cluster.local");
    assert!(!metrics.render(&index).contains("webhook_reviews_total"));
    metrics.export(Arc::new(Reviews::default()));
    let text = metrics.render(&index);
    assert!(
        text.contains("webhook_reviews_total{result=\"allowed\"} 0"),
        "{text}"
    );
}
