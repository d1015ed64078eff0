use super::*;
use mesh_api::tap::tap_event::{self, http, http::Event, EndpointMeta};
use std::net::SocketAddr;

fn event(pod: Option<&str>, e: Event) -> TapEvent {
    let meta = |pod: Option<&str>| {
        Some(EndpointMeta {
            labels: pod
                .map(|p| ("pod".to_string(), p.to_string()))
                .into_iter()
                .collect(),
            identity: String::new(),
        })
    };
    TapEvent {
        source: Some("192.0.2.1:40000".parse::<SocketAddr>().unwrap().into()),
        source_meta: meta(None),
        destination: Some("192.0.2.2:8080".parse::<SocketAddr>().unwrap().into()),
        destination_meta: meta(pod),
        http: Some(tap_event::Http { event: Some(e) }),
        ..Default::default()
    }
}

fn id(stream: u64) -> Option<http::StreamId> {
    Some(http::StreamId { base: 1, stream })
}

/// The three events of one request.
fn request(view: &mut View, stream: u64, path: &str, status: u32, ms: u64) {
    let pod = Some("web-0");
    view.record(&event(
        pod,
        Event::RequestInit(http::RequestInit {
            id: id(stream),
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        }),
    ));
    view.record(&event(
        pod,
        Event::ResponseInit(http::ResponseInit {
            id: id(stream),
            http_status: status,
            ..Default::default()
        }),
    ));
    view.record(&event(
        pod,
        Event::ResponseEnd(http::ResponseEnd {
            id: id(stream),
            since_request_init: Some(prost_types::Duration {
                seconds: 0,
                nanos: i32::try_from(ms * 1_000_000).unwrap(),
            }),
            ..Default::default()
        }),
    ));
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn frames_show_the_busiest_rows_first() {
    let mut view = View::new("mesh top deploy/web -n demo".into(), Top::new(false));
    request(&mut view, 1, "/b", 200, 5);
    request(&mut view, 2, "/a", 500, 2);
    request(&mut view, 3, "/a", 200, 900);
    request(&mut view, 4, "/a", 200, 1500);
    let frame = view.frame(160, 12);
    assert_eq!(frame.len(), 12);
    assert!(
        frame[0].starts_with("mesh top deploy/web -n demo"),
        "{frame:#?}"
    );
    assert_eq!(
        words(&frame[2]),
        [
            "Source",
            "Destination",
            "Method",
            "Path",
            "Count",
            "Best",
            "Worst",
            "Last",
            "Success",
            "Rate"
        ]
    );
    assert_eq!(
        words(&frame[3]),
        [
            "192.0.2.1",
            "web-0",
            "GET",
            "/a",
            "3",
            "2ms",
            "1.50s",
            "1.50s",
            "66.67%"
        ]
    );
    assert_eq!(
        words(&frame[4]),
        [
            "192.0.2.1",
            "web-0",
            "GET",
            "/b",
            "1",
            "5ms",
            "5ms",
            "5ms",
            "100.00%"
        ]
    );
    // Columns line up: each header starts where its cells do.
    let at = |line: &str, cell: &str| line.find(cell).unwrap();
    assert_eq!(at(&frame[2], "Count"), at(&frame[3], "3 "));
    let footer = frame.last().unwrap();
    assert!(
        footer.starts_with("events 12 (") && footer.contains("requests 4  rows 2  open 0"),
        "{footer}"
    );
    // Narrow terminals cut lines; nothing is wider than the terminal.
    assert!(view.frame(20, 12).iter().all(|l| l.chars().count() <= 20));
}

#[test]
fn hidden_sources_have_no_column() {
    let mut view = View::new("t".into(), Top::new(true));
    request(&mut view, 1, "/a", 200, 1);
    let frame = view.frame(100, 8);
    assert_eq!(words(&frame[2])[0], "Destination");
    assert_eq!(words(&frame[3])[0], "web-0");
}

#[test]
fn keys_quit_and_scroll() {
    use crossterm::event::KeyEventState;
    let key = |code, modifiers| {
        TermEvent::Key(KeyEvent {
            code,
            modifiers,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    };
    let none = KeyModifiers::NONE;
    let mut view = View::new("t".into(), Top::new(false));
    for quit in [
        key(KeyCode::Char('q'), none),
        key(KeyCode::Esc, none),
        key(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        assert!(matches!(view.on_terminal(&quit), Some(Exit::Quit)));
    }
    assert!(view.on_terminal(&key(KeyCode::Char('c'), none)).is_none());
    for stream in 0..30 {
        request(&mut view, stream, &format!("/{stream:02}"), 200, 1);
    }
    // 10 lines: 5 rows fit.
    view.frame(100, 10);
    view.on_terminal(&key(KeyCode::PageDown, none));
    let frame = view.frame(100, 10);
    assert_eq!(words(&frame[3])[3], "/05");
    assert!(frame[9].contains("[from row 6]"), "{}", frame[9]);
    // Past the end stops at the last page.
    for _ in 0..20 {
        view.on_terminal(&key(KeyCode::PageDown, none));
    }
    let frame = view.frame(100, 10);
    assert_eq!(words(&frame[3])[3], "/25");
    view.on_terminal(&key(KeyCode::Home, none));
    view.on_terminal(&key(KeyCode::Char('d'), none));
    let frame = view.frame(100, 10);
    // "Source" padded to the width of "192.0.2.1", 8 characters scrolled off.
    assert!(frame[2].starts_with("   Destination"), "{}", frame[2]);
    view.on_terminal(&key(KeyCode::Left, none));
    assert!(view.frame(100, 10)[2].starts_with("Source"));
}

#[test]
fn latencies_read_as_linkerds() {
    assert_eq!(latency(Duration::from_micros(450)), "450µs");
    assert_eq!(latency(Duration::from_micros(1_700)), "1ms");
    assert_eq!(latency(Duration::from_millis(999)), "999ms");
    assert_eq!(latency(Duration::from_millis(2_345)), "2.35s");
}

#[test]
fn the_rate_is_over_the_last_seconds() {
    let mut view = View::new("t".into(), Top::new(false));
    let start = Instant::now();
    view.sample(start);
    view.events = 500;
    view.sample(start + Duration::from_secs(1));
    assert_eq!(view.rate(), 500.0);
    view.events = 600;
    // The first sample falls out of the window.
    view.sample(start + Duration::from_secs(3));
    assert_eq!(view.rate(), 50.0);
}
