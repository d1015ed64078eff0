//! The translation of watch events into index actions, driven with hand-made events:
//! the watcher's own protocol (paging, bookmarks, 410) is kube's, and is exercised
//! against the fake API server of `kube-fake/` by the tests in `integration-tests/`.

use super::*;
use k8s_openapi::{api::core::v1::ServiceSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};

fn svc(name: &str, ty: &str) -> core::Service {
    core::Service {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some(ty.into()),
            cluster_ip: Some("198.19.0.1".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn model(name: &str) -> model::Service {
    convert::service(&svc(name, "ClusterIP")).expect("converts")
}

fn key(name: &str) -> ObjKey {
    ObjKey::new("ns", name)
}

fn translate() -> Translate<fn(&core::Service) -> Option<model::Service>, model::Service> {
    Translate::new(convert::service)
}

#[test]
fn list_is_buffered_until_done() {
    let mut t = translate();
    assert_eq!(t.event(Event::Init), None, "the first list is no restart");
    assert_eq!(t.event(Event::InitApply(svc("a", "ClusterIP"))), None);
    assert_eq!(t.event(Event::InitApply(svc("b", "ClusterIP"))), None);
    assert_eq!(
        t.event::<core::Service>(Event::InitDone),
        Some(Action::Reset(vec![model("a"), model("b")]))
    );
}

#[test]
fn empty_list_resets_to_nothing() {
    let mut t = translate();
    assert_eq!(t.event::<core::Service>(Event::Init), None);
    assert_eq!(
        t.event::<core::Service>(Event::InitDone),
        Some(Action::Reset(vec![]))
    );
}

#[test]
fn unconvertible_objects_are_left_out_of_a_list() {
    let mut t = translate();
    t.event::<core::Service>(Event::Init);
    t.event(Event::InitApply(svc("alias", "ExternalName")));
    t.event(Event::InitApply(svc("a", "ClusterIP")));
    assert_eq!(
        t.event::<core::Service>(Event::InitDone),
        Some(Action::Reset(vec![model("a")]))
    );
}

#[test]
fn a_list_after_a_completed_one_is_a_restart() {
    let mut t = translate();
    assert_eq!(t.event::<core::Service>(Event::Init), None);
    t.event::<core::Service>(Event::InitDone);
    assert_eq!(
        t.event::<core::Service>(Event::Init),
        Some(Action::Restarted)
    );
    t.event::<core::Service>(Event::InitDone);
    assert_eq!(
        t.event::<core::Service>(Event::Init),
        Some(Action::Restarted)
    );
}

#[test]
fn failed_lists_are_not_restarts_until_one_completes() {
    let mut t = translate();
    // The first lists fail (the API server is down): no watch was ever established.
    for _ in 0..3 {
        assert_eq!(t.event::<core::Service>(Event::Init), None);
    }
    t.event::<core::Service>(Event::InitDone);
    // The watch restarts; its lists fail a few times: one restart, not one per try.
    assert_eq!(
        t.event::<core::Service>(Event::Init),
        Some(Action::Restarted)
    );
    for _ in 0..3 {
        assert_eq!(t.event::<core::Service>(Event::Init), None);
    }
    t.event::<core::Service>(Event::InitDone);
    assert_eq!(
        t.event::<core::Service>(Event::Init),
        Some(Action::Restarted)
    );
}

#[test]
fn a_list_that_failed_half_way_is_not_mixed_into_the_next() {
    let mut t = translate();
    t.event::<core::Service>(Event::Init);
    t.event(Event::InitApply(svc("gone", "ClusterIP")));
    // The list failed; the watcher starts over.
    assert_eq!(t.event::<core::Service>(Event::Init), None);
    t.event(Event::InitApply(svc("a", "ClusterIP")));
    assert_eq!(
        t.event::<core::Service>(Event::InitDone),
        Some(Action::Reset(vec![model("a")]))
    );
    // The buffer is gone once handed over.
    assert!(t.listing.is_none());
}

#[test]
fn applies_and_deletes() {
    let mut t = translate();
    t.event::<core::Service>(Event::Init);
    t.event::<core::Service>(Event::InitDone);
    assert_eq!(
        t.event(Event::Apply(svc("a", "ClusterIP"))),
        Some(Action::Apply(model("a")))
    );
    assert_eq!(
        t.event(Event::Delete(svc("a", "ClusterIP"))),
        Some(Action::Delete(key("a")))
    );
    // A service that became an alias may have been indexed before: delete it.
    assert_eq!(
        t.event(Event::Apply(svc("a", "ExternalName"))),
        Some(Action::Delete(key("a")))
    );
    // Deleting an alias is harmless, and still said.
    assert_eq!(
        t.event(Event::Delete(svc("alias", "ExternalName"))),
        Some(Action::Delete(key("alias")))
    );
}

#[test]
fn objects_without_a_key_are_ignored() {
    let mut t = translate();
    let mut nameless = svc("x", "ClusterIP");
    nameless.metadata.name = None;
    assert_eq!(t.event(Event::Apply(nameless.clone())), None);
    assert_eq!(t.event(Event::Delete(nameless)), None);
}

#[test]
fn pods_translate_with_the_control_plane_namespace() {
    let cp = String::from("mesh-system");
    let mut t = Translate::new(|p: &core::Pod| convert::pod(p, &cp));
    let mut p = core::Pod {
        metadata: ObjectMeta {
            namespace: Some("ns".into()),
            name: Some("web-0".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    p.metadata.labels = Some([(CONTROL_PLANE_NS_LABEL.to_string(), cp.clone())].into());
    match t.event(Event::Apply(p)) {
        Some(Action::Apply(pod)) => assert!(pod.meshed),
        other => panic!("expected an apply, got {other:?}"),
    }
}
