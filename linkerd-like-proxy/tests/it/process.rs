//! The `mesh-proxy` binary as a process: configuration errors, signals, `init`.
// Waiting on a child process is real elapsed time, which is what std's clock is for.
#![allow(clippy::disallowed_types)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    for (var, value) in [
        ("MESH_PROXY_DETECT_TIMEOUT", "10"),
        ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "nowhere"),
        ("MESH_PROXY_OPAQUE_PORTS", "1-0"),
        ("MESH_PROXY_LOG", "[[["),
        ("MESH_PROXY_DESTINATION_ADDR", "controller"),
    ] {
        let out = Command::new(BIN).env(var, value).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(var) && err.contains("invalid configuration"),
            "{err}"
        );
    }
    let out = Command::new(BIN)
        .arg("init")
        .arg("--inbound-port")
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--inbound-port \"x\""));
}

#[test]
fn address_in_use_is_reported() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .env("MESH_PROXY_OUTBOUND_LISTEN_ADDR", addr.to_string())
        .env("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("failed to bind the outbound listener on {addr}")),
        "{err}"
    );
}

#[test]
fn init_dry_run_prints_the_rules() {
    let out = Command::new(BIN)
        .args(["init", "--dry-run", "--skip-outbound-ports", "22"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("iptables -t nat -A MESH_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN"),
        "{err}"
    );
    assert!(
        err.contains("iptables -t nat -A MESH_PROXY_OUTPUT -p tcp --dport 22 -j RETURN"),
        "{err}"
    );
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// SIGTERM lets an in-flight request finish, then the proxy exits 0.
#[test]
fn sigterm_drains_then_exits_zero() {
    // A backend that answers one request only after we say so.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (admin, outbound) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .env("MESH_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string())
        .env("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0")
        .env("MESH_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("MESH_PROXY_SHUTDOWN_GRACE_PERIOD", "10s")
        .env("MESH_PROXY_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("proxy listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "proxy exited before listening"
        );
    }

    let mut client = TcpStream::connect(outbound).unwrap();
    write!(
        client,
        "GET http://{backend_addr}/ HTTP/1.1\r\nHost: b\r\n\r\n"
    )
    .unwrap();
    let (mut upstream, _) = backend.accept().unwrap();
    let mut buf = [0u8; 1024];
    let _ = upstream.read(&mut buf).unwrap();

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    while !line.contains("draining") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "proxy exited without draining"
        );
    }
    // New connections are refused while the old request is still in flight.
    assert!(TcpStream::connect(outbound).is_err());
    upstream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nlate\n")
        .unwrap();
    let mut got = String::new();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = client.read_to_string(&mut got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("late\n"),
        "{got:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
