use super::*;
use rand::{rngs::StdRng, SeedableRng};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, i], 8080))
}

fn found(addrs: &[u8]) -> Vec<Discovered> {
    addrs
        .iter()
        .map(|&i| Discovered {
            addr: addr(i),
            labels: None,
            identity: None,
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Closed-loop clients, each sending one request at a time, in paused time: every
/// pick, pending count and sample goes through the production code, and only the
/// endpoints' latencies are simulated.
async fn simulate(latency_ms: &[u64], clients: usize, requests: usize) -> Vec<usize> {
    let endpoints: Vec<Arc<Endpoint>> = add(
        &[],
        found(&(1..=latency_ms.len() as u8).collect::<Vec<_>>()),
        true,
        Instant::now(),
    );
    let endpoints = Arc::new(endpoints);
    let latency: HashMap<SocketAddr, u64> = endpoints
        .iter()
        .zip(latency_ms)
        .map(|(e, l)| (e.addr, *l))
        .collect();
    let latency = Arc::new(latency);
    let counts = Arc::new(Mutex::new(vec![0usize; latency_ms.len()]));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (endpoints, latency, counts) = (endpoints.clone(), latency.clone(), counts.clone());
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(c as u64);
            for _ in 0..requests / clients {
                let load = pick(&endpoints, None).expect("endpoints");
                let i = endpoints
                    .iter()
                    .position(|e| e.addr == load.addr())
                    .unwrap();
                counts.lock().unwrap()[i] += 1;
                // ±20% jitter, so that equal endpoints are not exactly equal.
                let base = latency[&load.addr()] as f64;
                let l = base * rng.gen_range(0.8..1.2);
                tokio::time::sleep(Duration::from_secs_f64(l / 1000.0)).await;
                load.observe();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let counts = counts.lock().unwrap().clone();
    counts
}

#[tokio::test(start_paused = true)]
async fn a_ten_times_slower_endpoint_gets_under_ten_percent() {
    for clients in [1, 4, 16] {
        let counts = simulate(&[10, 10, 100], clients, 6000).await;
        let total: usize = counts.iter().sum();
        let slow = counts[2] as f64 / total as f64;
        assert!(slow < 0.10, "clients={clients}: {counts:?}");
        // The fast endpoints both take traffic.
        assert!(
            counts[0] > total / 10 && counts[1] > total / 10,
            "{counts:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn equal_endpoints_share_load() {
    // Sequential requests too: an endpoint that was sampled does not look better
    // than its peers just for that.
    for clients in [1, 16] {
        let counts = simulate(&[10, 10, 10], clients, 6000).await;
        for c in &counts {
            assert!(*c > 6000 / 6, "clients={clients}: {counts:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn pending_requests_raise_the_cost() {
    let now = Instant::now();
    let eps = add(&[], found(&[1, 2]), true, now);
    let held: Vec<Load> = (0..3).map(|_| Load::new(eps[0].clone(), now)).collect();
    assert_eq!(eps[0].pending(), 3);
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..100 {
        // Equal estimates: the endpoint with nothing pending always wins.
        assert_eq!(p2c(&eps, None, now, &mut rng).unwrap().addr, addr(2));
    }
    drop(held);
    assert_eq!(eps[0].pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn estimates_peak_then_decay() {
    let start = Instant::now();
    let e = PeakEwma::new(DEFAULT_RTT.as_nanos() as f64, start);
    // A slower sample replaces the estimate at once.
    e.observe(Duration::from_millis(100), start);
    assert!((e.estimate(start) / 1e6 - 100.0).abs() < 1e-6);
    // With no samples it fades: 1/e after the decay constant.
    tokio::time::advance(DECAY).await;
    let faded = e.estimate(Instant::now()) / 1e6;
    assert!(
        (faded - 100.0 / std::f64::consts::E).abs() < 0.01,
        "{faded}"
    );
    // A faster sample does not raise it, nor cut it short: it keeps fading...
    e.observe(Duration::from_millis(10), Instant::now());
    assert!((e.estimate(Instant::now()) / 1e6 - faded).abs() < 1e-6);
    // ...down to the level of the faster samples (36.8ms to 10ms: 13s), where they
    // hold it.
    let mut reached = None;
    for i in 1..=300 {
        tokio::time::advance(Duration::from_millis(100)).await;
        e.observe(Duration::from_millis(10), Instant::now());
        let now = e.estimate(Instant::now()) / 1e6;
        assert!(now >= 10.0 - 1e-6, "never below the samples: {now}");
        if reached.is_none() && (now - 10.0).abs() < 1e-6 {
            reached = Some(i);
        }
    }
    assert_eq!(reached, Some(131), "after 13.1s");
    let settled = e.estimate(Instant::now()) / 1e6;
    assert!((settled - 10.0).abs() < 1e-6, "{settled}");
    // And a slow one jumps straight back up.
    e.observe(Duration::from_millis(80), Instant::now());
    assert!((e.estimate(Instant::now()) / 1e6 - 80.0).abs() < 1e-6);
}

#[tokio::test(start_paused = true)]
async fn a_first_answer_replaces_the_prior() {
    let now = Instant::now();
    let e = PeakEwma::new(DEFAULT_RTT.as_nanos() as f64, now);
    // Faster than the prior: taken as is, not left to fade from 30ms.
    e.observe(Duration::from_millis(2), now);
    assert!((e.estimate(now) / 1e6 - 2.0).abs() < 1e-9);
    // From then on, faster samples do not cut the estimate short.
    e.observe(Duration::from_millis(1), now);
    assert!((e.estimate(now) / 1e6 - 2.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_yet_to_answer_competes_as_its_rivals_equal() {
    let now = Instant::now();
    // The first Add: every prior is the default.
    let eps = add(&[], found(&[1, 2, 3]), true, now);
    eps[0].load.observe(Duration::from_millis(1), now);
    eps[1].load.observe(Duration::from_millis(50), now);
    let mut rng = StdRng::seed_from_u64(5);
    let mut third = 0;
    for _ in 0..600 {
        let e = p2c(&eps, None, now, &mut rng).unwrap();
        // The slow one never wins: the one yet to answer counts as no slower than
        // its prior, 30ms.
        assert_ne!(e.addr, addr(2));
        third += usize::from(e.addr == addr(3));
    }
    // It wins every draw against the slow one (a third of all) and, as an equal,
    // half of those against the fast one (a sixth): about half of all.
    assert!(third > 600 / 3, "{third} of 600");
    // Its first answer makes it an ordinary endpoint.
    eps[2].load.observe(Duration::from_millis(10), now);
    for _ in 0..100 {
        assert_eq!(
            p2c(&eps, Some(addr(1)), now, &mut rng).unwrap().addr,
            addr(3)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn new_endpoints_start_at_the_lowest_peer_estimate() {
    let now = Instant::now();
    let eps = add(&[], found(&[1, 2]), true, now);
    assert_eq!(eps[0].estimate(now), DEFAULT_RTT);
    for _ in 0..600 {
        tokio::time::advance(Duration::from_millis(100)).await;
        eps[0]
            .load
            .observe(Duration::from_millis(100), Instant::now());
        eps[1]
            .load
            .observe(Duration::from_millis(2), Instant::now());
    }
    let now = Instant::now();
    let lowest = eps[1].estimate(now);
    assert!(ms(lowest) < 3.0, "{lowest:?}");
    let eps = add(&eps, found(&[3]), false, now);
    assert_eq!(eps.len(), 3);
    assert_eq!(eps[2].estimate(now), lowest);
    // So the new replica is preferred to the slow one, and on par with the fast one.
    let mut rng = StdRng::seed_from_u64(1);
    let mut third = 0;
    for _ in 0..300 {
        let e = p2c(&eps, None, now, &mut rng).unwrap();
        assert_ne!(e.addr, addr(1));
        third += usize::from(e.addr == addr(3));
    }
    assert!(third > 50, "{third}");
}

#[tokio::test(start_paused = true)]
async fn a_repeated_add_keeps_load_and_takes_new_labels() {
    let now = Instant::now();
    let eps = add(&[], found(&[1, 2]), true, now);
    let load = Load::new(eps[0].clone(), now);
    eps[0].load.observe(Duration::from_millis(70), now);
    let relabeled = vec![Discovered {
        addr: addr(1),
        labels: Some("dst_pod=\"web-1\"".into()),
        identity: Some("web.ns.serviceaccount.identity.mesh.cluster.local".into()),
    }];
    let next = add(&eps, relabeled.clone(), false, now);
    assert_eq!(next.len(), 2);
    assert_eq!(next[0].labels().map(|l| &**l), Some("dst_pod=\"web-1\""));
    // The pod became meshed: the endpoint takes its identity and keeps its load.
    assert_eq!(
        next[0].identity().map(|i| &**i),
        Some("web.ns.serviceaccount.identity.mesh.cluster.local")
    );
    assert_eq!(next[0].pending(), 1);
    assert_eq!(ms(next[0].estimate(now)), 70.0);
    // The same Add again changes nothing: the same endpoint is kept.
    let again = add(&next, relabeled, false, now);
    assert!(Arc::ptr_eq(&again[0], &next[0]));
    // A replacing Add drops what it does not name, and keeps what it does.
    let replaced = add(&again, found(&[1, 3]), true, now);
    let addrs: Vec<_> = replaced.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, [addr(1), addr(3)]);
    assert_eq!(replaced[0].pending(), 1);
    drop(load);
    assert_eq!(replaced[0].pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn removal_while_requests_are_pending_is_harmless() {
    let eps = add(&[], found(&[1, 2, 3]), true, Instant::now());
    let loads: Vec<Load> = (0..10).filter_map(|_| pick(&eps, None)).collect();
    let eps = remove(&eps, &[addr(1), addr(2), addr(3)]);
    assert!(eps.is_empty());
    assert!(pick(&eps, None).is_none());
    // Requests in flight on removed endpoints finish and record as usual.
    for l in &loads {
        l.observe();
    }
    drop(loads);
}

#[test]
fn exclusion_and_single_endpoints() {
    let now = Instant::now();
    let mut rng = StdRng::seed_from_u64(3);
    let one = add(&[], found(&[1]), true, now);
    assert_eq!(p2c(&one, None, now, &mut rng).unwrap().addr, addr(1));
    assert!(p2c(&one, Some(addr(1)), now, &mut rng).is_none());
    let three = add(&[], found(&[1, 2, 3]), true, now);
    for _ in 0..100 {
        assert_ne!(
            p2c(&three, Some(addr(2)), now, &mut rng).unwrap().addr,
            addr(2)
        );
    }
    assert!(p2c(&[], None, now, &mut rng).is_none());
}

#[test]
fn copies_of_a_load_count_separately() {
    let eps = add(&[], found(&[1]), true, Instant::now());
    let a = pick(&eps, None).unwrap();
    let b = a.clone();
    assert_eq!(eps[0].pending(), 2);
    drop(a);
    assert_eq!(eps[0].pending(), 1);
    drop(b);
    assert_eq!(eps[0].pending(), 0);
}

/// Property: whatever sequence of adds and removes discovery sends, a pick only ever
/// returns an endpoint in the current list, and every endpoint in it can be picked.
#[test]
fn picks_come_from_the_current_list_only() {
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut eps: Vec<Arc<Endpoint>> = Vec::new();
        let mut model: HashSet<SocketAddr> = HashSet::new();
        let now = Instant::now();
        for _ in 0..50 {
            let some: Vec<u8> = (0..rng.gen_range(0..4))
                .map(|_| rng.gen_range(1..12))
                .collect();
            match rng.gen_range(0..3) {
                0 => {
                    eps = add(&eps, found(&some), false, now);
                    model.extend(some.iter().map(|&i| addr(i)));
                }
                1 => {
                    eps = add(&eps, found(&some), true, now);
                    model = some.iter().map(|&i| addr(i)).collect();
                }
                _ => {
                    let gone: Vec<SocketAddr> = some.iter().map(|&i| addr(i)).collect();
                    eps = remove(&eps, &gone);
                    for g in &gone {
                        model.remove(g);
                    }
                }
            }
            let listed: HashSet<SocketAddr> = eps.iter().map(|e| e.addr).collect();
            assert_eq!(listed, model, "seed {seed}");
            assert_eq!(eps.len(), model.len(), "no duplicates; seed {seed}");
            let mut seen = HashSet::new();
            for _ in 0..200 {
                match p2c(&eps, None, now, &mut rng) {
                    Some(e) => {
                        assert!(model.contains(&e.addr), "seed {seed}");
                        seen.insert(e.addr);
                    }
                    None => assert!(model.is_empty()),
                }
            }
            // With equal costs, every endpoint wins some draws.
            if model.len() > 1 {
                assert_eq!(seen, model, "seed {seed}");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn endpoints_failing_more_than_their_peers_get_fewer_requests() {
    let now = Instant::now();
    let picks_of = |eps: &[Arc<Endpoint>], i: usize, seed: u64| {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..3000)
            .filter(|_| p2c(eps, None, now, &mut rng).unwrap().addr == eps[i].addr)
            .count()
    };
    // Three replicas as fast as each other; the first fails nearly everything.
    let eps = add(&[], found(&[1, 2, 3]), true, now);
    for e in &eps {
        e.load.observe(Duration::from_millis(5), now);
    }
    let even = picks_of(&eps, 0, 1);
    assert!(
        (800..=1200).contains(&even),
        "a third each before failures: {even}"
    );
    for _ in 0..100 {
        eps[0].load.outcome(true, now);
        eps[1].load.outcome(false, now);
        eps[2].load.outcome(false, now);
    }
    let bad = picks_of(&eps, 0, 1);
    assert!(bad < 30, "the failing replica still got {bad} of 3000");

    // Replicas failing alike (25% each) keep the latency order: the fast one wins.
    let eps = add(&[], found(&[1, 2]), true, now);
    eps[0].load.observe(Duration::from_millis(1), now);
    eps[1].load.observe(Duration::from_millis(20), now);
    for i in 0..200 {
        for e in &eps {
            e.load.outcome(i % 4 == 0, now);
        }
    }
    assert_eq!(picks_of(&eps, 0, 2), 3000);

    // What is known of failures fades: a minute later the avoided replica is healthy
    // again as far as the balancer knows, and gets tried.
    let later = now + Duration::from_secs(60);
    let bad = add(&[], found(&[1]), true, now);
    for _ in 0..100 {
        bad[0].load.outcome(true, now);
    }
    assert!(bad[0].load.snapshot(now).success < 0.1);
    assert!(bad[0].load.snapshot(later).success > 0.9);
}
