//! Hand-written scrapes whose right answers are computed by hand in each test.

use super::quantile::quantile;
use super::*;
use crate::index::ObjKey;

const S: fn(u64) -> Duration = Duration::from_secs;

fn pod(ns: &str, name: &str, owner: Option<(&str, &str)>, meshed: bool) -> PodMeta {
    PodMeta {
        namespace: ns.into(),
        name: name.into(),
        owner: owner.map(|(k, n)| (k.into(), n.into())),
        identity: meshed
            .then(|| format!("{name}.{ns}.serviceaccount.identity.mesh.cluster.local").into()),
        meshed,
    }
}

fn web(i: usize) -> PodMeta {
    pod(
        "demo",
        &format!("web-{i}"),
        Some(("deployment", "web")),
        true,
    )
}

/// A page of inbound responses.
fn inbound(success: u64, failure: u64) -> String {
    format!(
        "# TYPE response_total counter\n\
         response_total{{direction=\"inbound\",target_addr=\"10.0.0.1:80\",tls=\"true\",client_id=\"x\",status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {success}\n\
         response_total{{direction=\"inbound\",target_addr=\"10.0.0.1:80\",tls=\"true\",client_id=\"x\",status_code=\"500\",classification=\"failure\",grpc_status=\"\",error=\"\"}} {failure}\n"
    )
}

/// Outbound responses to a destination, with its `dst_*` labels.
fn outbound(dst: &str, tls: Option<&str>, success: u64, failure: u64) -> String {
    let tls = match tls {
        Some(id) => format!("tls=\"true\",server_id=\"{id}\""),
        None => "tls=\"false\"".to_string(),
    };
    format!(
        "response_total{{direction=\"outbound\",authority=\"a.demo.svc.cluster.local:80\",target_addr=\"10.0.0.9:80\",{tls},{dst},status_code=\"200\",classification=\"success\",grpc_status=\"\",error=\"\"}} {success}\n\
         response_total{{direction=\"outbound\",authority=\"a.demo.svc.cluster.local:80\",target_addr=\"10.0.0.9:80\",{tls},{dst},status_code=\"503\",classification=\"failure\",grpc_status=\"\",error=\"no-endpoints\"}} {failure}\n"
    )
}

/// Latency buckets (Linkerd's bounds) with the given cumulative counts at each bound
/// and `total` at `+Inf`.
fn latency(direction: &str, labels: &str, cumulative: &[(u64, u64)], total: u64) -> String {
    const BOUNDS: [u64; 25] = [
        1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
        10_000, 20_000, 30_000, 40_000, 50_000,
    ];
    let mut out = String::from("# TYPE response_latency_ms histogram\n");
    let mut n = 0;
    for le in BOUNDS {
        if let Some(&(_, c)) = cumulative.iter().find(|(b, _)| *b == le) {
            n = c;
        }
        out.push_str(&format!(
            "response_latency_ms_bucket{{direction=\"{direction}\",{labels}le=\"{le}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "response_latency_ms_bucket{{direction=\"{direction}\",{labels}le=\"+Inf\"}} {total}\n"
    ));
    out
}

fn record(stats: &mut Stats, pod: &PodMeta, at: u64, page: &str) {
    let scrape = stats.parser().parse(page).expect("the page parses");
    stats.record(&pod.key(), S(at), scrape).expect("recorded");
}

fn stat(stats: &Stats, selector: &str, window: u64, now: u64) -> StatAnswer {
    let q = StatQuery::new(
        Selector::parse(selector, Some("demo")).expect("selector"),
        S(window),
    );
    stats.stat(&q, S(now)).expect("answered")
}

fn row<'a>(answer: &'a StatAnswer, name: &str) -> &'a StatRow {
    answer
        .rows
        .iter()
        .find(|r| &*r.resource.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {answer:#?}"))
}

#[test]
fn a_pod_of_the_index_is_described_by_its_identity() {
    let pod = crate::index::Pod {
        key: ObjKey::new("demo", "web-0"),
        ips: vec!["198.18.0.1".parse().unwrap()],
        running: true,
        service_account: "web".into(),
        owner: Some(("deployment".into(), "web".into())),
        meshed: true,
        opaque_ports: crate::index::PortSet::default(),
        admin: None,
        tap: None,
    };
    let meta = PodMeta::of(&pod, "cluster.local");
    assert_eq!(
        meta.identity.as_deref(),
        Some("web.demo.serviceaccount.identity.mesh.cluster.local"),
        "its service account's"
    );
    assert_eq!(
        PodMeta {
            identity: web(0).identity,
            ..meta
        },
        web(0)
    );
    let unmeshed = crate::index::Pod {
        meshed: false,
        ..pod
    };
    assert_eq!(PodMeta::of(&unmeshed, "cluster.local").identity, None);
}

#[test]
fn counts_and_rates_are_exact() {
    let mut stats = Stats::new(Limits::default());
    let idle = pod("demo", "web-9", Some(("deployment", "web")), false);
    stats.set_pods([web(0), web(1), idle]);
    // web-0: 10/2 before the window, then +30/+5, then +60/+3.
    record(&mut stats, &web(0), 0, &inbound(10, 2));
    record(&mut stats, &web(0), 10, &inbound(40, 7));
    record(&mut stats, &web(0), 20, &inbound(100, 10));
    // web-1: +4/+0 in the last ten seconds only.
    record(&mut stats, &web(1), 1, &inbound(0, 0));
    record(&mut stats, &web(1), 11, &inbound(6, 1));
    record(&mut stats, &web(1), 21, &inbound(10, 1));

    // The last ten seconds: web-0 60/3 over [10, 20], web-1 4/0 over [11, 21]... but at
    // now = 21 the window starts at 11, so web-0 is read from its scrape at 10.
    let a = stat(&stats, "deploy", 10, 21);
    let r = row(&a, "web");
    assert_eq!(
        r.pods,
        Some(PodCount {
            meshed: 2,
            total: 3
        })
    );
    assert_eq!(
        r.traffic.responses,
        Responses {
            success: 64,
            failure: 3
        }
    );
    assert_eq!(r.traffic.success_rate, Some(64.0 / 67.0));
    assert!((r.traffic.rps - (63.0 / 10.0 + 4.0 / 10.0)).abs() < 1e-9);

    // A minute: everything since each pod's first scrape, over 20 s each.
    let a = stat(&stats, "deploy/web", 60, 21);
    let r = row(&a, "web");
    assert_eq!(
        r.traffic.responses,
        Responses {
            success: 100,
            failure: 9
        }
    );
    assert!((r.traffic.rps - (98.0 / 20.0 + 11.0 / 20.0)).abs() < 1e-9);
    assert_eq!(r.traffic.seconds, 20.0);

    // Per pod, and per namespace.
    let a = stat(&stats, "po", 60, 21);
    assert_eq!(row(&a, "web-0").traffic.responses.success, 90);
    assert_eq!(row(&a, "web-1").traffic.responses.success, 10);
    assert_eq!(
        row(&a, "web-9").pods,
        Some(PodCount {
            meshed: 0,
            total: 1
        })
    );
    assert_eq!(row(&a, "web-9").traffic.success_rate, None);
    let a = stat(&stats, "ns", 60, 21);
    assert_eq!(row(&a, "demo").traffic.responses.failure, 9);
    // Another namespace selects nothing.
    let q = StatQuery::new(Selector::parse("deploy", Some("other")).unwrap(), S(60));
    assert!(stats.stat(&q, S(21)).unwrap().rows.is_empty());
}

/// A page of inbound authorization decisions, as a proxy with policy on writes them:
/// HTTP denials by client (one meshed, one plaintext), refused TCP connections,
/// audits, and allows (which are not counted here).
fn authz(http_denied: [u64; 2], tcp_denied: u64, audited: u64, allowed: u64) -> String {
    let srv = "srv_group=\"policy.mesh.rs\",srv_kind=\"server\",srv_name=\"voting-http\",srv_port=\"7030\"";
    let route = "route_group=\"\",route_kind=\"default\",route_name=\"default\"";
    let [meshed, plain] = http_denied;
    format!(
        "# TYPE inbound_http_authz_allow_total counter\n\
         inbound_http_authz_allow_total{{{srv},{route},authz_group=\"policy.mesh.rs\",authz_kind=\"authorizationpolicy\",authz_name=\"voting-from-web\",tls=\"true\",client_id=\"web.demo.serviceaccount.identity.mesh.cluster.local\"}} {allowed}\n\
         # TYPE inbound_http_authz_deny_total counter\n\
         inbound_http_authz_deny_total{{{srv},{route},tls=\"true\",client_id=\"vote-bot.demo.serviceaccount.identity.mesh.cluster.local\"}} {meshed}\n\
         inbound_http_authz_deny_total{{{srv},{route},tls=\"false\"}} {plain}\n\
         # TYPE inbound_http_authz_audit_total counter\n\
         inbound_http_authz_audit_total{{srv_group=\"\",srv_kind=\"default\",srv_name=\"audit\",srv_port=\"7031\",{route},tls=\"false\"}} {audited}\n\
         # TYPE inbound_http_route_not_found_total counter\n\
         # TYPE inbound_tcp_authz_allow_total counter\n\
         # TYPE inbound_tcp_authz_deny_total counter\n\
         inbound_tcp_authz_deny_total{{{srv},tls=\"false\"}} {tcp_denied}\n\
         # TYPE inbound_tcp_authz_audit_total counter\n\
         # TYPE inbound_tcp_authz_terminate_total counter\n"
    )
}

#[test]
fn denials_are_counted_apart_from_audits_and_allows() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0), web(1)]);
    // web-0: +6 meshed and +4 plaintext HTTP denials, +2 refused connections, +10
    // audited, +100 allowed over [0, 10]; web-1: +3 HTTP denials over [1, 11], with a
    // restart (its counter going down) counted as an increase from zero.
    let page = |p: String| format!("{}{p}", inbound(0, 0));
    record(&mut stats, &web(0), 0, &page(authz([1, 1], 1, 0, 0)));
    record(&mut stats, &web(0), 10, &page(authz([7, 5], 3, 10, 100)));
    record(&mut stats, &web(1), 1, &page(authz([5, 0], 0, 0, 0)));
    record(&mut stats, &web(1), 11, &page(authz([3, 0], 0, 0, 0)));

    let a = stat(&stats, "deploy", 60, 11);
    let r = row(&a, "web");
    // (6 + 4 + 2) / 10 s + 3 / 10 s.
    assert!((r.unauthorized_rps - 1.5).abs() < 1e-9, "{r:?}");
    assert!((r.audit_rps - 1.0).abs() < 1e-9, "{r:?}");
    // Decisions are not responses: those come from `response_total` alone.
    assert_eq!(r.traffic.responses, Responses::default());
    let a = stat(&stats, "po", 60, 11);
    assert!((row(&a, "web-1").unauthorized_rps - 0.3).abs() < 1e-9);
    assert_eq!(row(&a, "web-1").audit_rps, 0.0);

    // Read from the pods' own (inbound) side only: what they sent is not theirs.
    let q = StatQuery {
        to: Some(Selector::parse("deploy/web", Some("demo")).unwrap()),
        ..StatQuery::new(Selector::parse("deploy", Some("demo")).unwrap(), S(60))
    };
    let a = stats.stat(&q, S(11)).unwrap();
    assert!(a.rows.iter().all(|r| r.unauthorized_rps == 0.0), "{a:?}");

    // And federated under the proxy's names.
    let text = stats.export();
    assert!(
        text.contains("# TYPE inbound_http_authz_deny_total counter\n")
            && text.contains("inbound_tcp_authz_deny_total{namespace=\"demo\",pod=\"web-0\",deployment=\"web\",direction=\"inbound\",tls=\"false\"}"),
        "{text}"
    );
}

/// The policy's denials are on the edge from the caller, found by its identity: the
/// edge its proxy reports (which says nothing of denials: a 403 is a response like
/// another), or one of their own when the caller's proxy reports nothing. A client
/// whose identity several workloads share, or none, is on no edge.
#[test]
fn denials_are_on_the_edge_from_the_caller_by_its_identity() {
    let id = |sa: &str| -> std::sync::Arc<str> {
        format!("{sa}.demo.serviceaccount.identity.mesh.cluster.local").into()
    };
    let meta = |name: &str, deploy: &str, sa: &str| PodMeta {
        identity: Some(id(sa)),
        ..pod("demo", name, Some(("deployment", deploy)), true)
    };
    let (bot, voting, shared_a, shared_b) = (
        meta("vote-bot-0", "vote-bot", "vote-bot"),
        meta("voting-0", "voting", "voting"),
        meta("a-0", "a", "shared"),
        meta("b-0", "b", "shared"),
    );
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([
        bot.clone(),
        voting.clone(),
        shared_a.clone(),
        shared_b.clone(),
    ]);
    let to_voting = dst("demo", "voting", ("deployment", "voting"), "voting-0");
    let bot_page = |n: u64| outbound(&to_voting, Some(&id("voting")), n, 0);
    let denials = |bot: u64, shared: u64, plain: u64| {
        let srv = "srv_group=\"policy.mesh.rs\",srv_kind=\"server\",srv_name=\"voting-http\",srv_port=\"8080\",route_group=\"\",route_kind=\"default\",route_name=\"default\"";
        format!(
            "inbound_http_authz_deny_total{{{srv},tls=\"true\",client_id=\"{}\"}} {bot}\n\
             inbound_http_authz_deny_total{{{srv},tls=\"true\",client_id=\"{}\"}} {shared}\n\
             inbound_http_authz_deny_total{{{srv},tls=\"false\"}} {plain}\n",
            id("vote-bot"),
            id("shared"),
        )
    };
    record(&mut stats, &bot, 0, &bot_page(0));
    record(&mut stats, &bot, 10, &bot_page(10));
    record(&mut stats, &voting, 0, &denials(0, 0, 0));
    record(&mut stats, &voting, 10, &denials(10, 5, 7));

    let q = EdgesQuery {
        kind: ResourceKind::Deployment,
        namespace: Some("demo".into()),
        window: S(60),
    };
    let edges = stats.edges(&q, S(10)).unwrap().edges;
    let [edge] = &edges[..] else {
        panic!("one edge, vote-bot → voting: {edges:#?}")
    };
    assert_eq!((&*edge.src.name, &*edge.dst.name), ("vote-bot", "voting"));
    assert_eq!(edge.client_id, Some(id("vote-bot")));
    assert_eq!(edge.server_id, Some(id("voting")));
    assert!((edge.rps - 1.0).abs() < 1e-9, "{edge:?}");
    assert!((edge.unauthorized_rps - 1.0).abs() < 1e-9, "{edge:?}");
    // voting's own row counts every denial, whoever the client.
    assert!((row(&stat(&stats, "deploy", 60, 10), "voting").unauthorized_rps - 2.2).abs() < 1e-9);

    // Without the caller's own report, the denials make the edge.
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([bot.clone(), voting.clone()]);
    record(&mut stats, &voting, 0, &denials(0, 0, 0));
    record(&mut stats, &voting, 10, &denials(20, 0, 0));
    let a = stats
        .namespace(
            &NamespaceQuery {
                namespace: "demo".into(),
                window: S(60),
            },
            S(10),
        )
        .unwrap();
    let [edge] = &a.edges[..] else {
        panic!("one edge, vote-bot → voting: {:#?}", a.edges)
    };
    assert_eq!((&*edge.src.name, &*edge.dst.name), ("vote-bot", "voting"));
    assert!(
        edge.secured && edge.rps == 0.0 && edge.success_rate.is_none(),
        "{edge:?}"
    );
    assert!((edge.unauthorized_rps - 2.0).abs() < 1e-9, "{edge:?}");
}

#[test]
fn a_window_with_no_recent_scrape_has_no_traffic() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &inbound(0, 0));
    record(&mut stats, &web(0), 10, &inbound(5, 0));
    // At 100 s, the last scrape (10 s) is older than a 60 s window.
    let a = stat(&stats, "deploy", 60, 100);
    assert_eq!(row(&a, "web").traffic.responses, Responses::default());
    assert_eq!(row(&a, "web").traffic.rps, 0.0);
}

#[test]
fn counter_resets_count_as_increase_does() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &inbound(100, 0));
    record(&mut stats, &web(0), 10, &inbound(150, 0));
    // The proxy restarted: 20 since.
    record(&mut stats, &web(0), 20, &inbound(20, 0));
    record(&mut stats, &web(0), 30, &inbound(50, 0));
    let a = stat(&stats, "deploy", 30, 30);
    assert_eq!(row(&a, "web").traffic.responses.success, 50 + 20 + 30);
    // A window ending before the restart does not see it.
    let a = stat(&stats, "deploy", 10, 10);
    assert_eq!(row(&a, "web").traffic.responses.success, 50);
}

#[test]
fn a_series_new_since_the_last_scrape_counts_from_zero() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, "");
    // The proxy creates a series at its first use: all of it is new.
    record(&mut stats, &web(0), 10, &inbound(7, 1));
    let a = stat(&stats, "deploy", 10, 10);
    assert_eq!(
        row(&a, "web").traffic.responses,
        Responses {
            success: 7,
            failure: 1
        }
    );
    // But the first scrape of a pod is only its baseline.
    stats.set_pods([web(0), web(1)]);
    record(&mut stats, &web(1), 10, &inbound(1000, 0));
    let a = stat(&stats, "po/web-1", 10, 10);
    assert_eq!(row(&a, "web-1").traffic.responses.success, 0);
}

#[test]
fn raw_series_are_summed_after_their_own_resets() {
    // Two status codes reduce to one series; one of them restarts while the other
    // grows, so their sum goes up: only following each raw series sees the reset.
    let page = |ok: u64, created: u64| {
        format!(
            "response_total{{direction=\"inbound\",status_code=\"200\",classification=\"success\"}} {ok}\n\
             response_total{{direction=\"inbound\",status_code=\"201\",classification=\"success\"}} {created}\n"
        )
    };
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &page(10, 1000));
    record(&mut stats, &web(0), 10, &page(5, 1100));
    let a = stat(&stats, "deploy", 10, 10);
    assert_eq!(row(&a, "web").traffic.responses.success, 5 + 100);
}

#[test]
fn latency_quantiles_fall_in_the_right_bucket() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &latency("inbound", "", &[], 0));
    // 100 responses: 50 took 4–5 ms, 40 took 5–10 ms, 10 took 10–20 ms.
    record(
        &mut stats,
        &web(0),
        10,
        &latency("inbound", "", &[(5, 50), (10, 90), (20, 100)], 100),
    );
    let a = stat(&stats, "deploy", 10, 10);
    let l = row(&a, "web").traffic.latency_ms;
    // Ranks 50, 95, 99, interpolated inside (4, 5], (10, 20], (10, 20].
    let near = |q: Option<f64>, want: f64| q.is_some_and(|q| (q - want).abs() < 1e-9);
    assert!(near(l.p50, 5.0), "{l:?}");
    assert!(near(l.p95, 15.0), "{l:?}");
    assert!(near(l.p99, 19.0), "{l:?}");
    // Only the window's increase counts: 100 more, all in (40, 50].
    record(
        &mut stats,
        &web(0),
        20,
        &latency(
            "inbound",
            "",
            &[(5, 50), (10, 90), (20, 100), (50, 200)],
            200,
        ),
    );
    let a = stat(&stats, "deploy", 10, 20);
    let l = row(&a, "web").traffic.latency_ms;
    for q in [l.p50, l.p95, l.p99] {
        let q = q.expect("a quantile");
        assert!(q > 40.0 && q <= 50.0, "{q}");
    }
}

#[test]
fn quantile_follows_histogram_quantile() {
    let inf = f64::INFINITY;
    assert_eq!(quantile(0.5, &[]), None);
    assert_eq!(quantile(0.5, &[(1.0, 3.0)]), None, "no +Inf bucket");
    assert_eq!(
        quantile(0.5, &[(1.0, 0.0), (inf, 0.0)]),
        None,
        "nothing observed"
    );
    assert_eq!(quantile(1.5, &[(1.0, 1.0), (inf, 1.0)]), None);
    // In the first bucket, from 0.
    assert_eq!(quantile(0.5, &[(10.0, 4.0), (inf, 4.0)]), Some(5.0));
    // Beyond the last finite bound: that bound.
    assert_eq!(quantile(0.99, &[(10.0, 1.0), (inf, 4.0)]), Some(10.0));
    // Counts that go down are read as flat.
    assert_eq!(
        quantile(0.75, &[(1.0, 2.0), (2.0, 1.0), (4.0, 4.0), (inf, 4.0)]),
        Some(3.0)
    );
}

#[test]
fn tcp_connections_and_bytes() {
    let page = |open: u64, read: u64, written: u64| {
        format!(
            "tcp_open_connections{{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:80\",tls=\"true\",client_id=\"a\"}} {open}\n\
             tcp_open_connections{{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:80\",tls=\"false\"}} 1\n\
             tcp_open_connections{{direction=\"inbound\",peer=\"dst\",target_addr=\"127.0.0.1:80\"}} 9\n\
             tcp_read_bytes_total{{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:80\",tls=\"false\"}} {read}\n\
             tcp_write_bytes_total{{direction=\"inbound\",peer=\"src\",target_addr=\"10.0.0.1:80\",tls=\"false\"}} {written}\n"
        )
    };
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &page(5, 1000, 0));
    record(&mut stats, &web(0), 10, &page(3, 3000, 500));
    let a = stat(&stats, "deploy", 10, 10);
    let tcp = row(&a, "web").tcp;
    // The gauge at the window's end, of the connections the proxy accepted only.
    assert_eq!(tcp.open_connections, 3 + 1);
    assert_eq!(tcp.read_bytes_per_second, 200.0);
    assert_eq!(tcp.write_bytes_per_second, 50.0);
}

fn dst(ns: &str, svc: &str, owner: (&str, &str), pod: &str) -> String {
    format!(
        "dst_namespace=\"{ns}\",dst_service=\"{svc}\",dst_{}=\"{}\",dst_pod=\"{pod}\",dst_serviceaccount=\"{svc}\"",
        owner.0, owner.1
    )
}

const VOTING_ID: &str = "voting.demo.serviceaccount.identity.mesh.cluster.local";

/// web-0 sends to voting-0 (mTLS) and to db-0 (a pod of a statefulset, plaintext).
fn two_destinations(stats: &mut Stats) {
    let voting = pod("demo", "voting-0", Some(("deployment", "voting")), true);
    let db = pod("demo", "db-0", Some(("statefulset", "db")), false);
    stats.set_pods([web(0), voting.clone(), db]);
    let page = |v: (u64, u64), d: (u64, u64)| {
        outbound(
            &dst("demo", "voting", ("deployment", "voting"), "voting-0"),
            Some(VOTING_ID),
            v.0,
            v.1,
        ) + &outbound(
            &dst("demo", "db", ("statefulset", "db"), "db-0"),
            None,
            d.0,
            d.1,
        )
    };
    record(stats, &web(0), 0, &page((0, 0), (0, 0)));
    record(stats, &web(0), 10, &page((30, 10), (5, 0)));
    record(stats, &voting, 0, &inbound(0, 0));
    record(stats, &voting, 10, &inbound(40, 10));
}

#[test]
fn to_and_from_read_the_outbound_side() {
    let mut stats = Stats::new(Limits::default());
    two_destinations(&mut stats);
    let sel = |s: &str| Selector::parse(s, Some("demo")).unwrap();

    // web's traffic to voting only.
    let mut q = StatQuery::new(sel("deploy/web"), S(10));
    q.to = Some(sel("deploy/voting"));
    let a = stats.stat(&q, S(10)).unwrap();
    assert_eq!(a.rows.len(), 1);
    assert_eq!(
        a.rows[0].traffic.responses,
        Responses {
            success: 30,
            failure: 10
        }
    );
    assert_eq!(a.rows[0].traffic.success_rate, Some(0.75));
    assert_eq!(
        a.rows[0].pods,
        Some(PodCount {
            meshed: 1,
            total: 1
        })
    );

    // What web sent to, by deployment: voting (db is a statefulset), with voting's pods.
    let mut q = StatQuery::new(sel("deploy"), S(10));
    q.from = Some(sel("deploy/web"));
    let a = stats.stat(&q, S(10)).unwrap();
    assert_eq!(a.rows.len(), 1);
    assert_eq!(&*a.rows[0].resource.name, "voting");
    assert_eq!(a.rows[0].traffic.rps, 4.0);
    assert_eq!(
        a.rows[0].pods,
        Some(PodCount {
            meshed: 1,
            total: 1
        })
    );
    q.selector = sel("sts");
    let a = stats.stat(&q, S(10)).unwrap();
    assert_eq!(row(&a, "db").traffic.responses.success, 5);
    assert_eq!(
        row(&a, "db").pods,
        Some(PodCount {
            meshed: 0,
            total: 1
        })
    );

    // Services, from every client's outbound side, with no pod counts.
    let a = stat(&stats, "svc", 10, 10);
    assert_eq!(row(&a, "voting").traffic.responses.failure, 10);
    assert_eq!(row(&a, "voting").pods, None);
    assert_eq!(row(&a, "db").traffic.responses.success, 5);
    let a = stat(&stats, "authority", 10, 10);
    assert_eq!(
        row(&a, "a.demo.svc.cluster.local:80")
            .traffic
            .responses
            .success,
        35
    );

    // The default view of voting: its own inbound side.
    let a = stat(&stats, "deploy/voting", 10, 10);
    assert_eq!(
        row(&a, "voting").traffic.responses,
        Responses {
            success: 40,
            failure: 10
        }
    );
}

#[test]
fn edges_carry_both_identities() {
    let mut stats = Stats::new(Limits::default());
    two_destinations(&mut stats);
    let q = EdgesQuery {
        kind: ResourceKind::Pod,
        namespace: Some("demo".into()),
        window: S(60),
    };
    let a = stats.edges(&q, S(10)).unwrap();
    assert_eq!(a.edges.len(), 2, "{a:#?}");
    let web_id = web(0).identity;
    let to_db = &a.edges[0];
    assert_eq!((&*to_db.src.name, &*to_db.dst.name), ("web-0", "db-0"));
    assert_eq!(to_db.client_id, web_id);
    assert_eq!(to_db.server_id, None);
    assert!(!to_db.secured);
    let to_voting = &a.edges[1];
    assert_eq!(
        (&*to_voting.src.name, &*to_voting.dst.name),
        ("web-0", "voting-0")
    );
    assert_eq!(to_voting.client_id, web_id);
    assert_eq!(to_voting.server_id.as_deref(), Some(VOTING_ID));
    assert!(to_voting.secured);
    assert_eq!(
        to_voting.responses,
        Responses {
            success: 30,
            failure: 10
        }
    );
    // By deployment, the statefulset is not an end.
    let q = EdgesQuery {
        kind: ResourceKind::Deployment,
        ..q
    };
    let a = stats.edges(&q, S(10)).unwrap();
    assert_eq!(a.edges.len(), 1);
    // Services are not made of pods.
    let q = EdgesQuery {
        kind: ResourceKind::Service,
        ..q
    };
    assert!(matches!(
        stats.edges(&q, S(10)),
        Err(InvalidQuery::NotPods { .. })
    ));
}

#[test]
fn a_namespace_at_one_moment_is_stat_of_each_kind_and_workload_edges() {
    let mut stats = Stats::new(Limits::default());
    two_destinations(&mut stats);
    let q = NamespaceQuery {
        namespace: "demo".into(),
        window: S(60),
    };
    let a = stats.namespace(&q, S(10)).unwrap();
    // Each kind's rows are what `stat` answers of it, at the same moment.
    let kinds: Vec<_> = a.stat.keys().copied().collect();
    assert_eq!(kinds, NamespaceAnswer::KINDS);
    for (kind, short) in [
        (ResourceKind::Deployment, "deploy"),
        (ResourceKind::StatefulSet, "sts"),
        (ResourceKind::DaemonSet, "ds"),
        (ResourceKind::Pod, "po"),
        (ResourceKind::Service, "svc"),
    ] {
        assert_eq!(a.stat[&kind], stat(&stats, short, 60, 10).rows, "{short}");
    }
    assert!(a.stat[&ResourceKind::DaemonSet].is_empty());
    // Edges join workloads of any kind: web (a deployment) to db (a statefulset)
    // too, which edges of one kind leave out.
    let ends: Vec<_> = a
        .edges
        .iter()
        .map(|e| {
            (
                e.src.kind,
                &*e.src.name,
                e.dst.kind,
                &*e.dst.name,
                e.secured,
            )
        })
        .collect();
    assert_eq!(
        ends,
        [
            (
                ResourceKind::Deployment,
                "web",
                ResourceKind::Deployment,
                "voting",
                true
            ),
            (
                ResourceKind::Deployment,
                "web",
                ResourceKind::StatefulSet,
                "db",
                false
            ),
        ]
    );
    assert_eq!(a.edges[0].success_rate, Some(0.75));
    assert_eq!(a.edges[0].rps, 4.0);
    assert_eq!(a.edges[0].server_id.as_deref(), Some(VOTING_ID));
    assert_eq!(a.edges[1].success_rate, Some(1.0));
    // Another namespace has none of it; a bad window is refused as any query's.
    let other = stats
        .namespace(
            &NamespaceQuery {
                namespace: "other".into(),
                window: S(60),
            },
            S(10),
        )
        .unwrap();
    assert!(other.edges.is_empty() && other.stat.values().all(Vec::is_empty));
    assert_eq!(
        stats.namespace(
            &NamespaceQuery {
                namespace: "demo".into(),
                window: S(0),
            },
            S(10)
        ),
        Err(InvalidQuery::WindowZero)
    );
}

#[test]
fn routes_by_service_and_name() {
    let page = |vote: u64, default: u64| {
        format!(
            "route_response_total{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",status_code=\"200\",classification=\"success\"}} {vote}\n\
             route_response_total{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",status_code=\"200\",classification=\"success\"}} {default}\n\
             route_response_total{{direction=\"outbound\",dst=\"web.demo.svc.cluster.local:80\",rt_route=\"GET /\",status_code=\"500\",classification=\"failure\"}} {default}\n\
             route_response_latency_ms_bucket{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",le=\"10\"}} {vote}\n\
             route_response_latency_ms_bucket{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",le=\"+Inf\"}} {vote}\n"
        )
    };
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &page(0, 0));
    record(&mut stats, &web(0), 10, &page(20, 3));
    let q = RoutesQuery {
        service: Some(Selector::parse("svc/voting", Some("demo")).unwrap()),
        from: None,
        window: S(10),
    };
    let a = stats.routes(&q, S(10)).unwrap();
    assert_eq!(a.routes.len(), 2);
    let vote = &a.routes[0];
    assert_eq!(vote.route.as_deref(), Some("POST /vote"));
    assert_eq!(vote.traffic.responses.success, 20);
    assert_eq!(vote.traffic.rps, 2.0);
    assert_eq!(vote.traffic.latency_ms.p50, Some(5.0));
    assert_eq!(a.routes[1].route, None);
    assert_eq!(a.routes[1].traffic.responses.success, 3);
    assert_eq!(vote.actual, None, "no proxy reported attempts");
    // All services; and from a deployment that sent nothing.
    let q = RoutesQuery { service: None, ..q };
    assert_eq!(stats.routes(&q, S(10)).unwrap().routes.len(), 3);
    let q = RoutesQuery {
        from: Some(Selector::parse("deploy/voting", Some("demo")).unwrap()),
        ..q
    };
    assert!(stats.routes(&q, S(10)).unwrap().routes.is_empty());
}

#[test]
fn routes_show_attempts_beside_requests() {
    // 20 requests, all successful after retries: 26 attempts, 6 of which failed.
    let page = |ok: u64, attempts_ok: u64, attempts_failed: u64| {
        format!(
            "route_response_total{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",classification=\"success\"}} {ok}\n\
             route_actual_response_total{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",status_code=\"200\",classification=\"success\"}} {attempts_ok}\n\
             route_actual_response_total{{direction=\"outbound\",dst=\"voting.demo.svc.cluster.local:80\",rt_route=\"POST /vote\",status_code=\"503\",classification=\"failure\"}} {attempts_failed}\n"
        )
    };
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &page(0, 0, 0));
    record(&mut stats, &web(0), 10, &page(20, 20, 6));
    let q = RoutesQuery {
        service: Some(Selector::parse("svc/voting", Some("demo")).unwrap()),
        from: None,
        window: S(10),
    };
    let a = stats.routes(&q, S(10)).unwrap();
    assert_eq!(a.routes.len(), 1, "{a:?}");
    let vote = &a.routes[0];
    assert_eq!(vote.traffic.success_rate, Some(1.0));
    assert_eq!(vote.traffic.rps, 2.0);
    let actual = vote.actual.expect("the attempts");
    assert_eq!(
        (actual.responses.success, actual.responses.failure),
        (20, 6)
    );
    assert_eq!(actual.rps, 2.6);
    assert_eq!(actual.success_rate, Some(20.0 / 26.0));
    // Exported for federation under their own name.
    let text = stats.export();
    assert!(
        text.contains("# TYPE route_actual_response_total counter"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("route_actual_response_total{") && l.ends_with("} 6")),
        "{text}"
    );
}

#[test]
fn a_pod_that_goes_away_is_dropped_with_its_window() {
    let limits = Limits {
        max_series: 2,
        ..Limits::default()
    };
    let mut stats = Stats::new(limits);
    stats.set_pods([web(0), web(1)]);
    record(&mut stats, &web(0), 0, &inbound(1, 1));
    // The budget is spent on web-0.
    record(&mut stats, &web(1), 0, &inbound(1, 1));
    assert_eq!(stats.overflow().samples, 2);
    stats.set_pods([web(1)]);
    assert!(stats
        .record(&web(0).key(), S(10), Scrape::default())
        .is_err());
    let a = stat(&stats, "po", 60, 10);
    assert_eq!(a.rows.len(), 1);
    // Its series went back to the budget; web-1's series, left out before, start
    // from a baseline rather than counting all they hold as new.
    record(&mut stats, &web(1), 10, &inbound(1, 1));
    assert_eq!(stats.overflow().samples, 0);
    record(&mut stats, &web(1), 20, &inbound(2, 1));
    let a = stat(&stats, "po", 20, 20);
    assert_eq!(
        row(&a, "web-1").traffic.responses,
        Responses {
            success: 1,
            failure: 0
        }
    );
}

#[test]
fn the_caps_count_what_they_leave_out() {
    let limits = Limits {
        max_pods: 1,
        max_series_per_pod: 1,
        ..Limits::default()
    };
    let mut stats = Stats::new(limits);
    stats.set_pods([web(0), web(1), pod("demo", "x", None, false)]);
    assert_eq!(stats.overflow().pods, 1);
    assert_eq!(stats.tracked().count(), 1);
    let kept = stats.tracked().next().unwrap().clone();
    assert_eq!(&*kept.name, "web-0", "the first in order");
    record(&mut stats, &kept, 0, &inbound(1, 1));
    record(&mut stats, &kept, 10, &inbound(5, 3));
    assert_eq!(
        stats.overflow(),
        Overflow {
            pods: 1,
            samples: 1
        }
    );
    let a = stat(&stats, "deploy", 10, 10);
    assert_eq!(
        a.overflow,
        Overflow {
            pods: 1,
            samples: 1
        }
    );
    assert_eq!(
        row(&a, "web").traffic.responses,
        Responses {
            success: 4,
            failure: 0
        }
    );
    // The pod over the cap is still counted as a pod.
    assert_eq!(
        row(&a, "web").pods,
        Some(PodCount {
            meshed: 2,
            total: 2
        })
    );
    // Re-listing keeps the pod already kept.
    stats.set_pods([web(1), web(0)]);
    assert_eq!(&*stats.tracked().next().unwrap().name, "web-0");

    // Raw series: one per pod.
    let limits = Limits {
        max_raw_per_pod: 1,
        ..Limits::default()
    };
    let mut stats = Stats::new(limits);
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 0, &inbound(1, 1));
    assert_eq!(stats.overflow().samples, 1);
}

#[test]
fn the_window_is_bounded() {
    let limits = Limits {
        retention: S(60),
        max_points: 4,
        ..Limits::default()
    };
    let mut stats = Stats::new(limits);
    stats.set_pods([web(0)]);
    for i in 0..10 {
        record(&mut stats, &web(0), i * 10, &inbound(i * 10, 0));
    }
    // Four points kept (60..90): a minute reads from 60 on.
    let a = stat(&stats, "deploy", 60, 90);
    assert_eq!(row(&a, "web").traffic.responses.success, 30);
    assert_eq!(row(&a, "web").traffic.seconds, 30.0);
    let q = StatQuery::new(Selector::parse("deploy", None).unwrap(), S(61));
    assert_eq!(
        stats.stat(&q, S(90)),
        Err(InvalidQuery::WindowTooLong {
            asked: S(61),
            kept: S(60)
        })
    );
    // A scrape after a gap longer than the retention starts over.
    record(&mut stats, &web(0), 200, &inbound(5000, 0));
    let a = stat(&stats, "deploy", 60, 200);
    assert_eq!(row(&a, "web").traffic.responses.success, 0);
}

#[test]
fn older_scrapes_are_kept_a_minute_apart() {
    let mut stats = Stats::new(Limits::for_interval(S(10)));
    assert_eq!(stats.limits().max_points, 23);
    stats.set_pods([web(0)]);
    // One response a second, for twenty minutes.
    for i in 0..=120 {
        record(&mut stats, &web(0), i * 10, &inbound(i * 10, 0));
    }
    let points = stats.pods[&web(0).key()].window.as_ref().unwrap().points();
    assert!(points <= 23, "{points}");
    // A minute reads exact scrapes.
    let a = stat(&stats, "deploy", 60, 1200);
    assert_eq!(row(&a, "web").traffic.seconds, 60.0);
    assert_eq!(row(&a, "web").traffic.responses.success, 60);
    // Ten minutes start within a minute before their start, and say so; the count is
    // exact over that span.
    let a = stat(&stats, "deploy", 600, 1200);
    let r = row(&a, "web");
    assert!((600.0..660.0).contains(&r.traffic.seconds), "{r:?}");
    assert_eq!(r.traffic.responses.success as f64, r.traffic.seconds);
    assert!((r.traffic.rps - 1.0).abs() < 1e-9);
}

#[test]
fn series_nothing_feeds_any_more_are_dropped() {
    let limits = Limits {
        retention: S(20),
        max_series: 2,
        ..Limits::default()
    };
    let mut stats = Stats::new(limits);
    stats.set_pods([web(0)]);
    let voting = |n: u64| {
        outbound(
            &dst("demo", "voting", ("deployment", "voting"), "voting-0"),
            None,
            n,
            n,
        )
    };
    let emoji = |n: u64| {
        outbound(
            &dst("demo", "emoji", ("deployment", "emoji"), "emoji-0"),
            None,
            n,
            n,
        )
    };
    // Two series to voting use the budget.
    record(&mut stats, &web(0), 0, &voting(1));
    record(&mut stats, &web(0), 10, &voting(2));
    // The proxy expired voting's series, and talks to emoji now: not yet room for it,
    // since voting's increase is still in the window.
    record(&mut stats, &web(0), 20, &emoji(1));
    assert_eq!(stats.overflow().samples, 2);
    record(&mut stats, &web(0), 30, &emoji(2));
    assert_eq!(stats.overflow().samples, 2);
    // Once the window no longer sees voting's increase, its series are dropped, and
    // emoji's are taken, from a baseline: they may have been left out before.
    record(&mut stats, &web(0), 40, &emoji(3));
    record(&mut stats, &web(0), 50, &emoji(4));
    assert_eq!(stats.overflow().samples, 0);
    let a = stat(&stats, "svc", 10, 50);
    assert_eq!(row(&a, "emoji").traffic.responses.success, 1);
}

#[test]
fn pages_that_are_not_metrics_are_refused() {
    let parser = ScrapeParser::new();
    assert!(matches!(
        parser.parse("<html>502 Bad Gateway</html>"),
        Err(InvalidScrape::Parse(_))
    ));
    let bad = [
        "response_total{direction=\"inbound\",classification=\"success\"} NaN",
        "response_total{direction=\"inbound\",classification=\"success\"} -1",
        "tcp_open_connections{direction=\"inbound\",peer=\"src\"} +Inf",
        "response_latency_ms_bucket{direction=\"inbound\",le=\"soon\"} 1",
        "response_latency_ms_bucket{direction=\"inbound\",le=\"-1\"} 1",
        "response_latency_ms_bucket{direction=\"inbound\"} 1",
        "response_total{classification=\"success\"} 1",
        "response_total{direction=\"sideways\",classification=\"success\"} 1",
    ];
    for page in bad {
        let err = parser.parse(page).expect_err(page);
        assert!(!err.to_string().is_empty());
    }
    // What the answers do not read is not checked.
    let ok = parser
        .parse("process_cpu_seconds_total NaN\nresponse_total{direction=\"inbound\",classification=\"\"} 1\n")
        .unwrap();
    assert!(ok.samples.is_empty());
}

#[test]
fn scrapes_must_move_forward() {
    let mut stats = Stats::new(Limits::default());
    stats.set_pods([web(0)]);
    record(&mut stats, &web(0), 10, &inbound(1, 0));
    let scrape = stats.parser().parse(&inbound(2, 0)).unwrap();
    assert!(matches!(
        stats.record(&web(0).key(), S(10), scrape),
        Err(RecordError::OutOfOrder(_))
    ));
    let unknown = ObjKey::new("demo", "nobody");
    assert_eq!(
        stats.record(&unknown, S(20), Scrape::default()),
        Err(RecordError::NotTracked(unknown))
    );
}

#[test]
fn queries_are_checked() {
    let stats = Stats::new(Limits::default());
    let sel = |s: &str| Selector::parse(s, None).unwrap();
    let mut q = StatQuery::new(sel("deploy"), S(0));
    assert_eq!(stats.stat(&q, S(0)), Err(InvalidQuery::WindowZero));
    q.window = S(60);
    q.to = Some(sel("deploy/a"));
    q.from = Some(sel("deploy/b"));
    assert_eq!(stats.stat(&q, S(0)), Err(InvalidQuery::ToAndFrom));
    let mut q = StatQuery::new(sel("svc"), S(60));
    q.to = Some(sel("deploy/a"));
    assert!(matches!(
        stats.stat(&q, S(0)),
        Err(InvalidQuery::NotPods { .. })
    ));
    let mut q = StatQuery::new(sel("deploy"), S(60));
    q.from = Some(sel("svc/a"));
    assert!(matches!(
        stats.stat(&q, S(0)),
        Err(InvalidQuery::NotPods { .. })
    ));
    let q = RoutesQuery {
        service: Some(sel("deploy/web")),
        from: None,
        window: S(60),
    };
    assert_eq!(
        stats.routes(&q, S(0)),
        Err(InvalidQuery::NotService(ResourceKind::Deployment))
    );

    assert_eq!(
        Selector::parse("deployment/web", Some("demo")),
        Ok(Selector {
            kind: ResourceKind::Deployment,
            namespace: Some("demo".into()),
            name: Some("web".into()),
        })
    );
    for bad in ["", "/web", "deploy/", "cronjobz"] {
        assert!(Selector::parse(bad, None).is_err(), "{bad}");
    }
}

#[test]
fn the_aggregates_export_as_prometheus_text() {
    let mut stats = Stats::new(Limits::default());
    two_destinations(&mut stats);
    record(
        &mut stats,
        &web(0),
        20,
        &(latency("inbound", "target_addr=\"10.0.0.1:80\",", &[(5, 3)], 4)
            + "route_response_total{direction=\"outbound\",dst=\"v.demo.svc.cluster.local:80\",rt_route=\"say \\\"hi\\\"\",classification=\"success\"} 2\n"),
    );
    let text = stats.export();
    let samples = mesh_api::prom::parse(&text).expect("the export parses");
    let find = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
            .map(|s| s.value)
            .sum::<f64>()
    };
    // voting-0's inbound successes, with the labels a scrape job would add.
    assert_eq!(
        find(
            "response_total",
            &[
                ("pod", "voting-0"),
                ("deployment", "voting"),
                ("classification", "success")
            ]
        ),
        40.0
    );
    // web-0's outbound to voting, kept until the window no longer needs it.
    assert_eq!(
        find(
            "response_total",
            &[
                ("pod", "web-0"),
                ("dst_deployment", "voting"),
                ("tls", "true"),
                ("server_id", VOTING_ID)
            ]
        ),
        40.0
    );
    assert_eq!(
        find(
            "response_latency_ms_bucket",
            &[("pod", "web-0"), ("le", "5")]
        ),
        3.0
    );
    assert_eq!(
        find(
            "response_latency_ms_bucket",
            &[("pod", "web-0"), ("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(
        find("route_response_total", &[("rt_route", "say \"hi\"")]),
        2.0
    );
    // Each family is written once, whole.
    assert_eq!(text.matches("# TYPE response_total counter").count(), 1);
}

/// Ten minutes of scrapes every 10 s from two pods of `web` (pod i serves i + 1
/// successes and 1 failure a second, with a failure-free burst in the last minute),
/// and outbound traffic to `voting`.
fn ten_minutes(stats: &mut Stats) {
    let voting = dst("demo", "voting", ("deployment", "voting"), "voting-0");
    let (a, b) = (web(0), web(1));
    stats.set_pods([a.clone(), b.clone()]);
    for t in (0..=600u64).step_by(10) {
        for (i, p) in [&a, &b].into_iter().enumerate() {
            let i = i as u64 + 1;
            let burst = t.saturating_sub(540) * 5;
            let page = format!(
                "{}{}",
                inbound(t * i + burst, t),
                outbound(&voting, Some("voting.id"), t * 2, 0)
            );
            record(stats, p, t, &page);
        }
    }
}

fn series(stats: &Stats, selector: &str, step: u64, span: u64, now: u64) -> SeriesAnswer {
    let q = SeriesQuery {
        stat: StatQuery::new(
            Selector::parse(selector, Some("demo")).expect("selector"),
            S(step),
        ),
        span: S(span),
    };
    stats.series(&q, S(now)).expect("answered")
}

#[test]
fn each_point_of_a_series_is_the_stat_answer_of_its_step() {
    let mut stats = Stats::new(Limits::for_interval(S(10)));
    ten_minutes(&mut stats);
    for (selector, step, span, now) in [
        ("deploy/web", 10, 600, 600),
        ("deploy", 10, 300, 600),
        ("po", 30, 600, 605),
        ("deploy/web", 60, 600, 600),
    ] {
        let answer = series(&stats, selector, step, span, now);
        assert_eq!(
            answer.points.len() as u64,
            span / step,
            "{selector} {step}s"
        );
        assert_eq!(answer.step_seconds, step as f64);
        for (k, point) in answer.points.iter().rev().enumerate() {
            let ago = k as u64 * step;
            assert_eq!(point.seconds_ago, ago as f64);
            let stat = stat(&stats, selector, step, now - ago);
            assert_eq!(point.rows, stat.rows, "{selector}: the point {ago}s ago");
        }
    }
    // And by hand: the last 10 s of web, both pods: (1+5 + 2+5) successes and 2
    // failures a second.
    let answer = series(&stats, "deploy/web", 10, 600, 600);
    let now = &answer.points.last().unwrap().rows[0].traffic;
    assert_eq!(now.responses.success, 130);
    assert_eq!(now.responses.failure, 20);
    assert_eq!(now.rps, 15.0);
    // Two minutes ago, before the burst: 3 successes and 2 failures a second.
    let before = &answer.points[answer.points.len() - 13].rows[0].traffic;
    assert_eq!(before.success_rate, Some(0.6));
}

#[test]
fn a_point_whose_step_holds_no_scrape_has_no_span() {
    let mut stats = Stats::new(Limits::for_interval(S(10)));
    ten_minutes(&mut stats);
    let answer = series(&stats, "deploy/web", 10, 600, 600);
    // Past the full-resolution span one scrape a minute is kept: of the six steps of a
    // coarse minute, one reads a span (over the minute), five read nothing.
    let old: Vec<f64> = answer.points[..30]
        .iter()
        .map(|p| p.rows[0].traffic.seconds)
        .collect();
    assert_eq!(old.iter().filter(|s| **s == 60.0).count(), 5, "{old:?}");
    assert!(old.iter().all(|s| *s == 0.0 || *s == 60.0), "{old:?}");
    // Within it, every step does.
    assert!(answer.points[50..]
        .iter()
        .all(|p| p.rows[0].traffic.seconds == 10.0));
}

#[test]
fn a_series_starts_no_earlier_than_the_store() {
    let mut stats = Stats::new(Limits::for_interval(S(10)));
    ten_minutes(&mut stats);
    // Twenty seconds after the origin, a ten-minute series has three points.
    let answer = series(&stats, "deploy/web", 10, 600, 20);
    let ago: Vec<f64> = answer.points.iter().map(|p| p.seconds_ago).collect();
    assert_eq!(ago, [20.0, 10.0, 0.0]);
}

#[test]
fn bad_series_are_refused_with_what_was_wrong() {
    let stats = Stats::new(Limits::default());
    let q = |step: u64, span: u64| SeriesQuery {
        stat: StatQuery::new(Selector::parse("deploy", Some("demo")).unwrap(), S(step)),
        span: S(span),
    };
    let err = |step, span| {
        stats
            .series(&q(step, span), S(600))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(err(0, 60), "window must be longer than zero");
    assert!(
        err(10, 3600).contains("longer than the 600s"),
        "{}",
        err(10, 3600)
    );
    assert!(err(60, 10).contains("at least one step"), "{}", err(60, 10));
    let q = SeriesQuery {
        stat: StatQuery::new(
            Selector::parse("deploy", Some("demo")).unwrap(),
            Duration::from_millis(1),
        ),
        span: S(60),
    };
    let e = stats.series(&q, S(600)).unwrap_err().to_string();
    assert!(e.contains("60000 points") && e.contains("360"), "{e}");
}
