//! The registry's rules alone: which requests a filter takes, what a stream may ask,
//! and how labels are read back.

use super::{filter::View, *};
use mesh_api::tap::observe_request::{
    r#match::{self as m, http::Match as HttpMatch, string_match, tcp},
    Match as MatchProto,
};

fn view<'a>(labels: &'a str, method: &'a Method) -> View<'a> {
    View {
        source: ([10, 1, 2, 3], 40000).into(),
        destination: ([198, 18, 0, 9], 8080).into(),
        labels: Some(labels),
        method,
        scheme: "http",
        authority: "Web.Test:8080",
        path: "/api/vote",
        route: "vote",
    }
}

fn http(h: HttpMatch) -> MatchProto {
    MatchProto {
        r#match: Some(m::Match::Http(m::Http { r#match: Some(h) })),
    }
}

fn net(ip: [u8; 4], mask: u32) -> MatchProto {
    MatchProto {
        r#match: Some(m::Match::Source(m::Tcp {
            r#match: Some(tcp::Match::Netmask(tcp::Netmask {
                ip: Some(std::net::IpAddr::from(ip).into()),
                mask,
            })),
        })),
    }
}

fn ports(min: u32, max: u32) -> MatchProto {
    MatchProto {
        r#match: Some(m::Match::Destination(m::Tcp {
            r#match: Some(tcp::Match::Ports(tcp::PortRange { min, max })),
        })),
    }
}

fn prefix(p: &str) -> m::StringMatch {
    m::StringMatch {
        r#match: Some(string_match::Match::Prefix(p.into())),
    }
}

fn seq(all: bool, matches: Vec<MatchProto>) -> MatchProto {
    let s = m::Seq { matches };
    MatchProto {
        r#match: Some(if all {
            m::Match::All(s)
        } else {
            m::Match::Any(s)
        }),
    }
}

fn not(x: MatchProto) -> MatchProto {
    MatchProto {
        r#match: Some(m::Match::Not(Box::new(x))),
    }
}

fn label(key: &str, value: &str) -> MatchProto {
    MatchProto {
        r#match: Some(m::Match::DestinationLabel(m::Label {
            key: key.into(),
            value: value.into(),
        })),
    }
}

#[test]
fn filters_take_what_they_name() {
    let labels = r#"dst_namespace="default",dst_pod="web-0""#;
    let get = Method::GET;
    let v = view(labels, &get);
    let holds = |m: MatchProto| filter::Match::compile(Some(&m)).unwrap().matches(&v);
    assert!(filter::Match::compile(None).unwrap().matches(&v));
    assert!(holds(net([10, 1, 0, 0], 16)));
    assert!(!holds(net([10, 2, 0, 0], 16)));
    assert!(holds(net([0, 0, 0, 0], 0)));
    assert!(holds(ports(8000, 8080)));
    assert!(holds(ports(8080, 0)), "max 0: the one port");
    assert!(!holds(ports(80, 0)));
    assert!(holds(label("pod", "web-0")));
    assert!(!holds(label("pod", "web-1")));
    assert!(holds(http(HttpMatch::Method("GET".into()))));
    assert!(!holds(http(HttpMatch::Method("POST".into()))));
    assert!(
        holds(http(HttpMatch::Authority(prefix("web.test")))),
        "case ignored"
    );
    assert!(holds(http(HttpMatch::Path(prefix("/api/")))));
    assert!(
        !holds(http(HttpMatch::Path(prefix("/API/")))),
        "paths are exact"
    );
    assert!(!holds(http(HttpMatch::Path(prefix("/api/vote/more")))));
    assert!(holds(http(HttpMatch::Route("vote".into()))));
    assert!(holds(http(HttpMatch::Scheme("HTTP".into()))));
    let post = http(HttpMatch::Method("POST".into()));
    assert!(holds(not(post.clone())));
    assert!(holds(seq(false, vec![post.clone(), label("pod", "web-0")])));
    assert!(!holds(seq(true, vec![post, label("pod", "web-0")])));
    assert!(holds(seq(true, vec![])) && !holds(seq(false, vec![])));
}

#[test]
fn a_stream_that_cannot_be_served_is_refused_with_its_reason() {
    let registry = Arc::new(Registry::new(None, Metrics::new()));
    let ask = |limit, m: Option<MatchProto>| {
        registry
            .subscribe(ObserveRequest {
                limit,
                r#match: m,
                extract: None,
                max_rps: 0,
            })
            .map(drop)
            .map_err(|e| e.to_string())
    };
    assert_eq!(ask(0, None), Err("limit must be at least 1".into()));
    let bad = [
        (MatchProto { r#match: None }, "a match has no condition"),
        (
            net([10, 0, 0, 0], 33),
            "netmask /33 is longer than its address",
        ),
        (ports(9000, 80), "port range 9000-80"),
        (ports(70000, 0), "port range 70000-70000"),
        (
            http(HttpMatch::Method("GE T".into())),
            "is not an HTTP method",
        ),
        (
            http(HttpMatch::Path(m::StringMatch { r#match: None })),
            "neither `exact` nor `prefix`",
        ),
    ];
    for (m, why) in bad {
        let err = ask(1, Some(m)).expect_err(why);
        assert!(err.contains(why), "{err}");
    }
    let mut deep = label("pod", "web-0");
    for _ in 0..20 {
        deep = not(deep);
    }
    assert!(ask(1, Some(deep)).unwrap_err().contains("deeper"));
    assert!(registry.is_idle(), "nothing refused was added");

    let held: Vec<Subscription> = (0..MAX_SUBSCRIBERS)
        .map(|_| {
            registry
                .subscribe(ObserveRequest {
                    limit: 1,
                    ..Default::default()
                })
                .unwrap()
        })
        .collect();
    assert_eq!(
        ask(1, None),
        Err(format!("too many tap streams (at most {MAX_SUBSCRIBERS})"))
    );
    drop(held);
    assert!(registry.is_idle());
}

#[test]
fn labels_are_read_back_from_their_rendering() {
    let rendered = crate::metrics::dst_labels(
        [
            (&"namespace".to_string(), &"default".to_string()),
            (&"pod".to_string(), &"web-0".to_string()),
        ],
        [(
            &"note".to_string(),
            &"a \"quoted\"\\ line\nnext".to_string(),
        )],
    )
    .unwrap();
    assert_eq!(
        parse_labels(&rendered),
        vec![
            ("namespace".to_string(), "default".to_string()),
            ("note".to_string(), "a \"quoted\"\\ line\nnext".to_string()),
            ("pod".to_string(), "web-0".to_string()),
        ]
    );
    // Anything unexpected ends the list rather than panicking.
    assert_eq!(
        parse_labels("dst_a=\"1\",dst_b=\"unterminated"),
        vec![("a".into(), "1".into())]
    );
    assert!(parse_labels("garbage").is_empty());
}
