use super::*;
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
