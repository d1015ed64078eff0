//! Memory and CPU of a `mesh-controller` process at scale: the file backend with
//! 1k services / 10k endpoints / 10k (synthetic) pods, then 2,000 open `Get` streams.
//!
//! ```text
//! cargo build --release -p mesh-controller --examples
//! target/release/examples/scale [path/to/mesh-controller] [services] [endpoints-per-service] [streams]
//! ```
//!
//! Prints the controller's `process_resident_memory_bytes` and CPU seconds after
//! indexing and after the streams are open.
// Benchmark timing is real elapsed time.
#![allow(clippy::disallowed_types, clippy::print_stdout)]

use mesh_api::destination::{destination_client::DestinationClient, GetDestination};
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn arg<T: std::str::FromStr>(n: usize, default: T) -> T {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bin: String = arg(1, "target/release/mesh-controller".to_string());
    let services: usize = arg(2, 1000);
    let per_service: usize = arg(3, 10);
    let streams: usize = arg(4, 2000);

    let dir = std::env::temp_dir().join(format!("mesh-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("discovery.yaml");
    let mut yaml = String::from("services:\n");
    for s in 0..services {
        let _ = writeln!(
            yaml,
            "  - name: svc-{s}\n    namespace: ns-{}\n    clusterIPs: [\"198.19.{}.{}\"]\n    ports: [{{port: 80, name: http, targetPort: 8080}}]\n    endpoints:",
            s % 50,
            s / 250,
            s % 250
        );
        for e in 0..per_service {
            let n = s * per_service + e;
            let _ = writeln!(
                yaml,
                "      - {{address: \"198.{}.{}.{}\", labels: {{pod: svc-{s}-{e}-7d9f8c6b5-x2x4z, deployment: svc-{s}, serviceaccount: svc-{s}}}, identity: {}}}",
                18 + n / 65536,
                (n / 256) % 256,
                n % 256,
                mesh_api::names::ServiceAccount::new(format!("ns-{}", s % 50), format!("svc-{s}"))
                    .identity("cluster.local")
            );
        }
    }
    std::fs::write(&file, &yaml)?;
    println!(
        "file: {} bytes, {services} services, {} endpoints",
        yaml.len(),
        services * per_service
    );

    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args(["--backend", "file", "--file"])
        .arg(&file)
        .args([
            "--destination-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
            "--tap-addr",
            "127.0.0.1:0",
            "--log",
            "warn,mesh_controller=info",
        ])
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
    let listening = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("controller exited"))??;
        if line.contains("listening") {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        let rest = &listening[listening
            .find(key)
            .ok_or_else(|| anyhow::anyhow!("no {key}"))?
            + key.len()..];
        Ok(rest.split_whitespace().next().unwrap_or_default().parse()?)
    };
    let (destination, admin) = (addr("destination=")?, addr("admin=")?);
    while http_get(admin, "/ready").0 != 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("ready after {:?}", started.elapsed());
    report(admin, "indexed");

    let connections = streams.div_ceil(100).max(1);
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(DestinationClient::connect(format!("http://{destination}")).await?);
    }
    let opened = Instant::now();
    let mut held = Vec::with_capacity(streams);
    let mut firsts = Vec::with_capacity(streams);
    for i in 0..streams {
        let s = i % services;
        let req = GetDestination {
            path: format!("svc-{s}.ns-{}.svc.cluster.local:80", s % 50),
            context_token: String::new(),
        };
        let mut client = clients[i % connections].clone();
        firsts.push(tokio::spawn(async move {
            let mut stream = client.get(req).await?.into_inner();
            stream.message().await?;
            Ok::<_, tonic::Status>(stream)
        }));
    }
    for first in firsts {
        held.push(first.await??);
    }
    println!(
        "{streams} streams open with their first update after {:?}",
        opened.elapsed()
    );
    report(admin, "streams open");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn report(admin: SocketAddr, when: &str) {
    let metrics = http_get(admin, "/metrics").1;
    let samples = mesh_api::prom::parse(&metrics).unwrap_or_default();
    let value = |name: &str| -> f64 {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map_or(f64::NAN, |s| s.value)
    };
    println!(
        "{when}: rss {:.1} MiB, cpu {:.2} s",
        value("process_resident_memory_bytes") / (1024.0 * 1024.0),
        value("process_cpu_seconds_total")
    );
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
