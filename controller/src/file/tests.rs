use super::*;
use crate::policy::PolicyIndex;
use std::io::Write as _;

const TD: &str = "cluster.local";

struct TempFile(tempfile::NamedTempFile);

impl TempFile {
    fn new(text: &str) -> Self {
        let f = tempfile::NamedTempFile::new().unwrap();
        let t = Self(f);
        t.write(text);
        t
    }

    /// Replaces the content the way editors do: write a sibling, rename it over.
    fn write(&self, text: &str) {
        let dir = self.0.path().parent().unwrap();
        let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
        tmp.write_all(text.as_bytes()).unwrap();
        tmp.persist(self.0.path()).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.0.path().to_path_buf()
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoints(index: &Index, path: &str) -> Vec<String> {
    let mut sub = index.subscribe(index.parse(path, "").unwrap());
    sub.current()
        .endpoints
        .iter()
        .map(|e| e.addr.to_string())
        .collect()
}

#[tokio::test]
async fn follows_edits_and_keeps_the_last_good_state() {
    let file =
        TempFile::new("services:\n  - name: a\n    endpoints: [{address: \"198.18.0.1:80\"}]\n");
    let index = Index::new("cluster.local", TD);
    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::default());
    let task = tokio::spawn(run(
        file.path(),
        index.clone(),
        PolicyIndex::new(Default::default()),
        metrics.clone(),
        shutdown.clone(),
    ));

    wait_for("ready", || index.is_ready()).await;
    assert_eq!(endpoints(&index, "a.default:80"), ["198.18.0.1:80"]);

    file.write("services:\n  - name: a\n    endpoints: [{address: \"198.18.0.2:80\"}]\n");
    wait_for("the edit", || {
        endpoints(&index, "a.default:80") == ["198.18.0.2:80"]
    })
    .await;

    // A bad edit, once read and rejected, changes nothing.
    file.write("services:\n  - name: a\n    endpoints: [{adress: \"198.18.0.9:80\"}]\n");
    wait_for("the rejection", || metrics.file_loads(false) == 1).await;
    assert_eq!(endpoints(&index, "a.default:80"), ["198.18.0.2:80"]);
    assert!(index.is_ready());

    // The next good edit applies.
    file.write(
        "services:\n  - name: a\n    endpoints: [{address: \"198.18.0.3:80\"}]\n  - name: b\n",
    );
    wait_for("the good edit", || {
        endpoints(&index, "a.default:80") == ["198.18.0.3:80"]
    })
    .await;
    assert_eq!(index.stats().services, 2);

    // Removing a service from the file removes it from the index.
    file.write("services: []\n");
    wait_for("the removal", || index.stats().services == 0).await;
    assert_eq!(metrics.file_loads(true), 4);

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn bad_content_is_kept_out_of_the_index() {
    // Deterministic version of the above: drive the watcher directly.
    let file =
        TempFile::new("services:\n  - name: a\n    endpoints: [{address: \"198.18.0.1:80\"}]\n");
    let mut watcher = Watcher::new(file.path());
    let first = watcher.poll().await.unwrap().expect("first read");
    assert!(parse(&first, TD).is_ok());
    assert_eq!(watcher.poll().await.unwrap(), None, "unchanged");
    file.write("services: [\n");
    let bad = watcher.poll().await.unwrap().expect("changed");
    assert!(parse(&bad, TD).is_err());
    assert_eq!(
        watcher.poll().await.unwrap(),
        None,
        "same bad content is not re-reported"
    );
}

#[tokio::test]
async fn a_missing_file_leaves_the_index_not_ready_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("discovery.yaml");
    let index = Index::new("cluster.local", TD);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        path.clone(),
        index.clone(),
        PolicyIndex::new(Default::default()),
        Arc::default(),
        shutdown.clone(),
    ));

    let mut watcher = Watcher::new(path.clone());
    assert!(matches!(watcher.poll().await, Err(LoadError::Read { .. })));
    assert!(!index.is_ready());

    std::fs::write(&path, "services:\n  - name: late\n").unwrap();
    wait_for("ready", || index.is_ready()).await;
    assert_eq!(index.stats().services, 1);
    shutdown.cancel();
    task.await.unwrap();
}

/// The file's policies and pods reach the policy index; an invalid policy is rejected
/// (the last good state stays), and a policy removed from the file is deleted.
#[tokio::test]
async fn policies_follow_the_file_and_an_invalid_one_keeps_the_last_good() {
    const POD: &str = "services:\n  - name: web\n    endpoints:\n      - address: 198.18.0.1\n        labels: {pod: web-1, deployment: web}\n        defaultInboundPolicy: deny\n        namedPorts: {http: 8080}\n        probes: [{port: 8080, path: /ready}]\n";
    let server = |port: &str| {
        format!("policies:\n  - apiVersion: policy.mesh.rs/v1alpha1\n    kind: Server\n    metadata: {{name: web}}\n    spec: {{podSelector: {{matchLabels: {{deployment: web}}}}, port: {port}}}\n")
    };
    let file = TempFile::new(&format!("{POD}{}", server("http")));
    let index = Index::new("cluster.local", TD);
    let policy = PolicyIndex::new(Default::default());
    let metrics = Arc::new(Metrics::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        file.path(),
        index.clone(),
        policy.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));
    wait_for("synced", || policy.is_synced()).await;
    let get = |port| policy.lock().get("default", "web-1", port).unwrap();
    let server_of = |port| get(port).server.unwrap();
    assert_eq!(server_of(8080).name, "web", "the named port resolves");
    // The pod's own default, with its probe route.
    assert_eq!(server_of(9090).name, "deny");
    // The probe the file gives the pod gets its route on its port.
    let routes: Vec<String> = get(8080)
        .http_routes
        .iter()
        .map(|r| r.meta.as_ref().unwrap().name.clone())
        .collect();
    assert!(routes.contains(&"probe".to_string()), "{routes:?}");
    assert!(get(9090)
        .http_routes
        .iter()
        .all(|r| r.meta.as_ref().unwrap().name != "probe"));

    // An invalid Server: rejected with its field, the last good one stays.
    file.write(&format!("{POD}{}", server("0")));
    wait_for("the rejection", || metrics.file_loads(false) == 1).await;
    assert_eq!(server_of(8080).name, "web");
    let text = std::fs::read_to_string(file.path()).unwrap();
    let error = parse(&text, TD).unwrap_err();
    assert!(error.field.starts_with("policies[0].spec.port"), "{error}");

    // Removed from the file: the pod's default again.
    file.write(POD);
    wait_for("the removal", || server_of(8080).name == "deny").await;
    shutdown.cancel();
    task.await.unwrap();
}
