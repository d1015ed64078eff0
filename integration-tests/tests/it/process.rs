//! Process-level tests of the harness itself: the test backend on loopback, and the
//! `promtool` check. No root needed; these make sure that a failure in the pod test is
//! about the proxy, not about the tools it stands on.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context as _};
use mesh_integration_tests::{bin_path, promtool_check, scratch_dir, wait_for_port, Process};

const STARTUP: Duration = Duration::from_secs(10);

struct App {
    _process: Process,
    http: SocketAddr,
    echo: SocketAddr,
    banner: SocketAddr,
}

fn start_app(test: &str) -> anyhow::Result<App> {
    let mut cmd = Command::new(bin_path("mesh-test-app"));
    cmd.args(["--name", "loop", "--http", "127.0.0.1:0"]).args([
        "--tcp-echo",
        "127.0.0.1:0",
        "--tcp-banner",
        "127.0.0.1:0",
    ]);
    let stderr = scratch_dir().join(format!("mesh-test-app-{test}.stderr"));
    let mut process = Process::spawn("mesh-test-app", cmd, stderr)?;
    let mut addr = |kind: &str| -> anyhow::Result<SocketAddr> {
        let line = process.wait_for_line(&format!("listening {kind} "), STARTUP)?;
        let addr = line.rsplit(' ').next().context("no address")?;
        addr.parse()
            .with_context(|| format!("bad address in {line:?}"))
    };
    let (http, echo, banner) = (addr("http")?, addr("tcp-echo")?, addr("tcp-banner")?);
    wait_for_port(http, STARTUP)?;
    Ok(App {
        _process: process,
        http,
        echo,
        banner,
    })
}

/// `curl -sS -i` with `args`, stdout as text with `date` lines dropped.
fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-m", "10"])
        .args(args)
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("date:"))
        .collect::<Vec<_>>()
        .join("\n"))
}

#[test]
fn test_app_answers_deterministically_over_http1_and_h2c() -> anyhow::Result<()> {
    let app = start_app("http")?;
    let base = format!("http://{}", app.http);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let hello = curl(&[version, &format!("{base}/anything")])?;
        assert_eq!(hello, "hello from loop");

        let status = curl(&[
            version,
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{base}/status/418"),
        ])?;
        assert_eq!(status, "418");

        let bytes = Command::new("curl")
            .args([
                "-sS",
                "--noproxy",
                "*",
                version,
                &format!("{base}/bytes/70000"),
            ])
            .output()?
            .stdout;
        let want: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        assert!(bytes == want, "/bytes/70000 over {version}");

        let echoed = curl(&[
            version,
            "--data-binary",
            "ping pong",
            &format!("{base}/echo"),
        ])?;
        assert_eq!(echoed, "ping pong");

        let headers = curl(&[version, "-H", "x-probe: 1", &format!("{base}/headers")])?;
        assert!(headers.contains("\nx-probe: 1"), "{headers}");
        let first = headers.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("GET ") && first.contains("/headers"),
            "{headers}"
        );

        let trailers = curl(&[
            version,
            "-i",
            "-H",
            "TE: trailers",
            &format!("{base}/trailers"),
        ])?;
        assert!(trailers.contains("x-test-trailer: yes"), "{trailers}");
    }
    Ok(())
}

#[test]
fn test_app_tcp_echo_honours_half_close_and_banner_speaks_first() -> anyhow::Result<()> {
    let app = start_app("tcp")?;
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();

    let mut echo = TcpStream::connect(app.echo)?;
    echo.set_read_timeout(Some(STARTUP))?;
    echo.write_all(&payload)?;
    echo.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    echo.read_to_end(&mut back)?;
    assert!(back == payload, "echo returned {} bytes", back.len());

    let mut banner = TcpStream::connect(app.banner)?;
    banner.set_read_timeout(Some(STARTUP))?;
    let mut greeting = [0u8; 25];
    banner.read_exact(&mut greeting)?;
    assert_eq!(&greeting, b"220 mesh-test-app ready\r\n");
    banner.write_all(b"quit")?;
    banner.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    banner.read_to_end(&mut rest)?;
    assert_eq!(rest, b"quit");
    Ok(())
}

#[test]
fn promtool_check_accepts_linkerd_names_and_rejects_broken_text() {
    let good = concat!(
        "# HELP request_total Total count of HTTP requests.\n",
        "# TYPE request_total counter\n",
        "request_total{direction=\"outbound\",target_addr=\"198.18.0.2:8080\"} 3\n",
        "# HELP response_latency_ms Elapsed times between a request's headers being received and its response stream completing.\n",
        "# TYPE response_latency_ms histogram\n",
        "response_latency_ms_bucket{le=\"1\"} 1\n",
        "response_latency_ms_bucket{le=\"+Inf\"} 1\n",
        "response_latency_ms_sum 1\n",
        "response_latency_ms_count 1\n",
    );
    promtool_check(good).expect("valid exposition with Linkerd's names passes");
    assert!(
        promtool_check("request_total{ 1\n").is_err(),
        "parse errors fail"
    );
    assert!(
        promtool_check("# TYPE request_total counter\nrequest_total 1\n").is_err(),
        "a missing HELP fails"
    );
}
