use super::*;

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn refresh_at_70_percent_clamped() {
    assert_eq!(refresh_in(S(100), S(10), S(86400)), S(70));
    assert_eq!(
        refresh_in(S(24 * 3600), S(10), S(86400)),
        S(24 * 3600 * 7 / 10)
    );
    // Short certificates still wait the minimum; long ones at most the maximum.
    assert_eq!(refresh_in(S(5), S(10), S(86400)), S(10));
    assert_eq!(refresh_in(Duration::ZERO, S(10), S(86400)), S(10));
    assert_eq!(refresh_in(S(100), S(1), S(30)), S(30));
}

#[test]
fn backoff_doubles_with_jitter_within_bounds() {
    let (min, max) = (S(1), S(60));
    assert_eq!(backoff(1, min, max, 0.0), S(1));
    assert_eq!(backoff(2, min, max, 0.0), S(2));
    assert_eq!(backoff(4, min, max, 0.0), S(8));
    assert_eq!(backoff(3, min, max, 0.5), Duration::from_secs(5));
    // Capped, even with jitter and absurd failure counts.
    assert_eq!(backoff(7, min, max, 0.99), S(60));
    assert_eq!(backoff(u32::MAX, min, max, 0.9), S(60));
    assert_eq!(backoff(0, min, max, f64::NAN), S(1));
    for failures in 1..40 {
        for jitter in [0.0, 0.3, 0.999] {
            let d = backoff(failures, S(10), S(86400), jitter);
            assert!((S(10)..=S(86400)).contains(&d), "{failures} {jitter} {d:?}");
        }
    }
}

mod verify {
    use super::super::*;
    use mesh_controller::identity::{self as ctl, Ca};

    const WEB: &str = "web.default.serviceaccount.identity.mesh.cluster.local";
    const API: &str = "api.default.serviceaccount.identity.mesh.cluster.local";

    struct Root {
        ca: Ca,
        anchor: CertificateDer<'static>,
    }

    fn root() -> Root {
        let (anchor, cert, key) =
            ctl::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
        let ca = Ca::new(
            "cluster.local",
            Duration::from_secs(3600),
            &cert,
            &key,
            &anchor,
            SystemTime::now(),
        )
        .unwrap();
        let der = x509_parser::pem::Pem::iter_from_buffer(anchor.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .contents;
        Root {
            ca,
            anchor: CertificateDer::from(der),
        }
    }

    impl Root {
        fn issue(&self, name: &str, key: &Key) -> CertifyResponse {
            let issued = self.ca.certify(name, &key.csr, SystemTime::now()).unwrap();
            CertifyResponse {
                leaf_certificate: issued.leaf,
                intermediate_certificates: issued.chain,
                valid_until: None,
            }
        }

        fn anchors(&self) -> Vec<TrustAnchor<'_>> {
            vec![webpki::anchor_from_trusted_cert(&self.anchor).unwrap()]
        }
    }

    #[test]
    fn accepts_our_certificate() {
        let root = root();
        let key = Key::generate(WEB).unwrap();
        let rsp = root.issue(WEB, &key);
        let not_after = verify(&rsp, &root.anchors(), WEB, &key.pair, UnixTime::now()).unwrap();
        let left = not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3621));
    }

    #[test]
    fn rejects_what_is_not_ours() {
        let root = root();
        let key = Key::generate(WEB).unwrap();
        let rsp = root.issue(WEB, &key);

        // Another trust root.
        let other = self::root();
        let err = verify(&rsp, &other.anchors(), WEB, &key.pair, UnixTime::now()).unwrap_err();
        assert!(err.contains("trust anchors"), "{err}");
        // No chain.
        let bare = CertifyResponse {
            intermediate_certificates: vec![],
            ..rsp.clone()
        };
        assert!(verify(&bare, &root.anchors(), WEB, &key.pair, UnixTime::now()).is_err());
        // Another name.
        let api_key = Key::generate(API).unwrap();
        let api = root.issue(API, &api_key);
        let err = verify(&api, &root.anchors(), WEB, &api_key.pair, UnixTime::now()).unwrap_err();
        assert!(err.contains("not for"), "{err}");
        // Another key.
        let other_key = Key::generate(WEB).unwrap();
        let err = verify(&rsp, &root.anchors(), WEB, &other_key.pair, UnixTime::now()).unwrap_err();
        assert!(err.contains("another key"), "{err}");
        // Expired.
        let later = UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(2 * 3600),
        );
        assert!(verify(&rsp, &root.anchors(), WEB, &key.pair, later).is_err());
        // Garbage never panics.
        for junk in [vec![], vec![0x30], vec![0xff; 64]] {
            let rsp = CertifyResponse {
                leaf_certificate: junk.clone(),
                intermediate_certificates: vec![junk],
                valid_until: None,
            };
            assert!(verify(&rsp, &root.anchors(), WEB, &key.pair, UnixTime::now()).is_err());
        }
    }

    #[test]
    fn credentials_debug_hides_the_key() {
        let key = Key::generate(WEB).unwrap();
        let creds = Credentials {
            name: WEB.into(),
            leaf: CertificateDer::from(vec![1]),
            chain: vec![],
            key: PrivatePkcs8KeyDer::from(key.pair.serialize_der()),
            not_after: SystemTime::UNIX_EPOCH,
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains(WEB) && !shown.contains("key"), "{shown}");
    }
}

/// The refresh loop on paused time, with scripted answers: when it asks again after
/// a success and after each failure, and that failures keep the current certificate.
#[tokio::test(start_paused = true)]
async fn renewal_and_backoff_schedule() {
    use std::sync::Mutex;
    use tokio::time::Instant;

    let creds = |valid_for: Duration| Credentials {
        name: "web".into(),
        leaf: CertificateDer::from(vec![1]),
        chain: vec![],
        key: PrivatePkcs8KeyDer::from(vec![2]),
        not_after: SystemTime::now() + valid_for,
    };
    // Ok (renew at 70% of 100s), three failures (1s, 2s, 4s, each plus up to half of
    // jitter), Ok (a long certificate: the 1h maximum), then failures forever: seven
    // requests make two successes and five failures.
    let script = Arc::new(Mutex::new(vec![
        Ok(S(100)),
        Err(()),
        Err(()),
        Err(()),
        Ok(S(100 * 3600)),
    ]));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let request = {
        let (script, calls) = (script.clone(), calls.clone());
        move || {
            calls.lock().unwrap().push(Instant::now());
            let next = {
                let mut s = script.lock().unwrap();
                if s.is_empty() {
                    Err(())
                } else {
                    s.remove(0)
                }
            };
            async move {
                next.map(creds)
                    .map_err(|()| Error::Invalid("scripted".into()))
            }
        }
    };
    let (tx, rx) = watch::channel(None);
    let metrics = Metrics::new();
    metrics.identity().enable();
    let task = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            refresh_loop(request, (S(1), S(3600)), "web", &tx, &metrics).await;
        })
    };

    let start = Instant::now();
    while calls.lock().unwrap().len() < 7 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // After the first certificate, failures never take it away.
        if calls.lock().unwrap().len() > 1 {
            assert!(rx.borrow().is_some());
        }
    }
    task.abort();
    let at: Vec<Duration> = calls.lock().unwrap().iter().map(|t| *t - start).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let within = |d: Duration, lo: Duration, hi: Duration| {
        assert!(
            d >= lo && d <= hi,
            "{d:?} not in [{lo:?}, {hi:?}]: {gaps:?}"
        );
    };
    assert_eq!(at[0], Duration::ZERO);
    within(gaps[0], S(69), S(71));
    within(gaps[1], S(1), Duration::from_millis(1500));
    within(gaps[2], S(2), S(3));
    within(gaps[3], S(4), S(6));
    within(gaps[4], S(3600), S(3600));
    // The backoff starts over after a success.
    within(gaps[5], S(1), Duration::from_millis(1500));
    let m = metrics.encode();
    assert!(
        m.contains("identity_cert_refresh_total{result=\"ok\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("identity_cert_refresh_total{result=\"failure\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("identity_cert_expiration_timestamp_seconds "),
        "{m}"
    );
}
