use super::*;

fn key(stream: u64) -> StreamKey {
    StreamKey {
        source: Some("192.0.2.1:40000".parse().unwrap()),
        destination: Some("192.0.2.2:8080".parse().unwrap()),
        base: 1,
        stream,
    }
}

fn init(source: &str, path: &str) -> RequestInit {
    RequestInit {
        source: source.into(),
        destination: "web-0".into(),
        method: "GET".into(),
        path: path.into(),
    }
}

/// One whole request: init, response headers, end.
fn request(top: &mut Top, stream: u64, source: &str, path: &str, status: u16, end: End, ms: u64) {
    top.request_init(key(stream), init(source, path));
    top.response_init(&key(stream), status);
    top.response_end(&key(stream), end, Duration::from_millis(ms));
}

#[test]
fn success_is_linkerds_rule() {
    assert!(is_success(Some(200), End::Complete));
    assert!(is_success(Some(499), End::Complete));
    assert!(!is_success(Some(500), End::Complete));
    assert!(!is_success(Some(503), End::Grpc(0)));
    // No headers: judged by the end.
    assert!(is_success(None, End::Complete));
    assert!(!is_success(None, End::Reset));
    assert!(!is_success(Some(200), End::Reset));
    for ok in [0, 1, 3, 5, 6, 7, 8, 9, 10, 11, 12, 16, 99] {
        assert!(is_success(Some(200), End::Grpc(ok)), "grpc {ok}");
    }
    for failed in [2, 4, 13, 14, 15] {
        assert!(!is_success(Some(200), End::Grpc(failed)), "grpc {failed}");
    }
}

#[test]
fn peers_are_pods_else_ips() {
    let addr = Some("192.0.2.7:41234".parse().unwrap());
    assert_eq!(peer_name(Some("web-0"), addr), "web-0");
    assert_eq!(peer_name(Some(""), addr), "192.0.2.7");
    assert_eq!(peer_name(None, addr), "192.0.2.7");
    assert_eq!(
        peer_name(None, Some("[2001:db8::1]:80".parse().unwrap())),
        "2001:db8::1"
    );
    assert_eq!(peer_name(None, None), "-");
}

#[test]
fn requests_are_joined_and_counted_in_their_row() {
    let mut top = Top::new(false);
    request(&mut top, 1, "bot", "/a", 200, End::Complete, 5);
    request(&mut top, 2, "bot", "/a", 500, End::Complete, 2);
    request(&mut top, 3, "bot", "/a", 200, End::Complete, 9);
    request(&mut top, 4, "bot", "/b", 200, End::Grpc(14), 1);
    let rows = top.rows_by_count();
    assert_eq!(rows.len(), 2);
    let a = rows[0];
    assert_eq!(
        (a.source.as_str(), a.destination.as_str(), a.method.as_str()),
        ("bot", "web-0", "GET")
    );
    assert_eq!((a.path.as_str(), a.count, a.successes), ("/a", 3, 2));
    assert_eq!(
        (a.best, a.worst, a.last),
        (
            Duration::from_millis(2),
            Duration::from_millis(9),
            Duration::from_millis(9)
        )
    );
    assert!((a.success_rate() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!((rows[1].path.as_str(), rows[1].successes), ("/b", 0));
    assert_eq!(top.completed(), 4);
    assert_eq!(top.open(), 0);
    assert_eq!(top.evictions(), Evictions::default());
}

#[test]
fn events_of_other_streams_do_not_mix() {
    let mut top = Top::new(false);
    top.request_init(key(1), init("bot", "/one"));
    top.request_init(key(2), init("bot", "/two"));
    top.response_init(&key(2), 503);
    top.response_init(&key(1), 200);
    top.response_end(&key(2), End::Complete, Duration::from_millis(2));
    top.response_end(&key(1), End::Complete, Duration::from_millis(1));
    let rows = top.rows_by_count();
    let one = rows.iter().find(|r| r.path == "/one").unwrap();
    let two = rows.iter().find(|r| r.path == "/two").unwrap();
    assert_eq!((one.successes, one.last), (1, Duration::from_millis(1)));
    assert_eq!((two.successes, two.last), (0, Duration::from_millis(2)));
    // Another destination with the same stream id is another request.
    let mut other = key(1);
    other.destination = Some("192.0.2.3:8080".parse().unwrap());
    top.request_init(key(1), init("bot", "/one"));
    top.response_end(&other, End::Complete, Duration::ZERO);
    assert_eq!(top.evictions().unmatched, 1);
    assert_eq!(top.open(), 1);
}

#[test]
fn sorted_by_count_then_name() {
    let mut top = Top::new(false);
    let mut stream = 0;
    for (path, n) in [("/c", 1), ("/a", 2), ("/b", 2), ("/d", 5)] {
        for _ in 0..n {
            stream += 1;
            request(&mut top, stream, "bot", path, 200, End::Complete, 1);
        }
    }
    let order: Vec<_> = top
        .rows_by_count()
        .iter()
        .map(|r| (r.path.clone(), r.count))
        .collect();
    assert_eq!(
        order,
        [
            ("/d".to_string(), 5),
            ("/a".to_string(), 2),
            ("/b".to_string(), 2),
            ("/c".to_string(), 1)
        ]
    );
}

#[test]
fn hidden_sources_merge_rows() {
    let mut top = Top::new(true);
    request(&mut top, 1, "bot-1", "/a", 200, End::Complete, 1);
    request(&mut top, 2, "bot-2", "/a", 200, End::Complete, 1);
    let rows = top.rows_by_count();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].source.as_str(), rows[0].count), ("", 2));
    assert!(top.hides_sources());
    let mut shown = Top::new(false);
    request(&mut shown, 1, "bot-1", "/a", 200, End::Complete, 1);
    request(&mut shown, 2, "bot-2", "/a", 200, End::Complete, 1);
    assert_eq!(shown.rows_by_count().len(), 2);
}

#[test]
fn open_requests_are_capped_oldest_first() {
    let limits = Limits {
        max_open: 3,
        max_rows: 10,
    };
    let mut top = Top::with_limits(false, limits);
    for stream in 1..=5 {
        top.request_init(key(stream), init("bot", "/a"));
    }
    assert_eq!(top.open(), 3);
    assert_eq!(top.evictions().open, 2);
    // 1 and 2 went; 3 to 5 are still joined.
    top.response_end(&key(1), End::Complete, Duration::ZERO);
    top.response_end(&key(5), End::Complete, Duration::ZERO);
    assert_eq!(top.evictions().unmatched, 1);
    assert_eq!(top.completed(), 1);
    // A key seen again replaces its request.
    top.request_init(key(3), init("bot", "/again"));
    top.response_end(&key(3), End::Complete, Duration::ZERO);
    assert!(top.rows_by_count().iter().any(|r| r.path == "/again"));
    assert_eq!(top.evictions().open, 3);
}

#[test]
fn rows_are_capped_and_the_busiest_stay() {
    let limits = Limits {
        max_open: 10,
        max_rows: 3,
    };
    let mut top = Top::with_limits(false, limits);
    let mut stream = 0;
    let mut send = |top: &mut Top, path: &str| {
        stream += 1;
        request(top, stream, "bot", path, 200, End::Complete, 1);
    };
    for _ in 0..3 {
        send(&mut top, "/busy");
    }
    send(&mut top, "/old");
    send(&mut top, "/newer");
    // Full: the least counted, least recently counted (`/old`) goes.
    send(&mut top, "/newest");
    let mut paths: Vec<_> = top.rows_by_count().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/busy", "/newer", "/newest"]);
    assert_eq!(top.evictions().rows, 1);
    // Counted again, `/newer` outranks `/newest`, which goes next.
    send(&mut top, "/newer");
    send(&mut top, "/last");
    let mut paths: Vec<_> = top.rows_by_count().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/busy", "/last", "/newer"]);
    assert_eq!(top.evictions().rows, 2);
    assert_eq!(top.completed(), 8);
    assert_eq!(top.rows_by_count()[0].count, 3);
}
