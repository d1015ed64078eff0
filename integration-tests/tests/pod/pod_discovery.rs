//! Pod-level test of discovery in transparent mode: an application in a meshed client pod
//! connects to a service's cluster IP, an address that exists nowhere (there is no
//! kube-proxy here), and its connection still reaches the service's endpoints, because
//! the proxy looks the original destination up in the controller and balances over what
//! it is told.
//!
//! Two network namespaces joined by a veth pair: the client pod (`mesh-proxy init`, a
//! transparent proxy as uid 2102, curl and a TCP client as the app) and the server pod
//! (two HTTP backends, a TCP echo server, and `mesh-controller` on its file backend).
//! Needs root.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use anyhow::{ensure, Context as _};
use mesh_integration_tests::{
    bin_path, helper_path,
    mesh::{
        require_built, start_pod_controller, start_pod_proxy, DESTINATION_PORT,
        PROXY_ADMIN as ADMIN,
    },
    Pod, Process,
};

/// Cluster IPs: virtual addresses no interface has, from the benchmarking range.
const WEB_IP: &str = "198.19.0.10";
const ECHO_IP: &str = "198.19.0.11";
const STARTUP: Duration = Duration::from_secs(15);

pub(crate) fn cluster_ips_resolve_through_the_controller() -> anyhow::Result<()> {
    require_built(&["mesh-proxy", "mesh-controller", "mesh-test-app"])?;
    let (client, server) = Pod::pair("dclient", "dserver")?;
    // The app routes everything through its veth, as a pod's default route does; the
    // cluster IPs are not reachable that way, only through the proxy.
    client.run([
        "ip",
        "route",
        "add",
        "default",
        "via",
        &server.ip.to_string(),
    ])?;
    let _servers = start_servers(&server)?;
    let _controller = start_controller(&server)?;
    let _proxy = start_proxy(&client, server.ip)?;

    // HTTP to the web service's cluster IP: answered by both endpoints.
    let mut answers: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        let (status, body) = client.http_get(&format!("http://{WEB_IP}/"))?;
        ensure!(status == 200, "GET http://{WEB_IP}/: {status}");
        *answers
            .entry(String::from_utf8_lossy(&body).trim().to_string())
            .or_default() += 1;
    }
    let names: Vec<&str> = answers.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["hello from web-a", "hello from web-b"],
        "both endpoints answer: {answers:?}"
    );

    // Opaque TCP to the echo service's cluster IP: balanced per connection.
    let echoed = client
        .run([
            "python3".as_ref(),
            helper_path("tcp_client.py").as_os_str(),
            "echo".as_ref(),
            format!("{ECHO_IP}:7").as_ref(),
            "1000".as_ref(),
        ])
        .context("echo through the echo service's cluster IP")?;
    let echoed = String::from_utf8_lossy(&echoed);
    ensure!(
        echoed.contains("sent 1000 received 1000"),
        "the echo came back whole: {echoed}"
    );

    // The proxy's outbound metrics carry what discovery said of each endpoint.
    let metrics = client.metrics(ADMIN)?;
    for pod in ["web-a", "web-b"] {
        let n = metrics.sum(
            "request_total",
            &[
                ("direction", "outbound"),
                ("dst_namespace", "default"),
                ("dst_service", "web"),
                ("dst_pod", pod),
            ],
        );
        assert!(
            n > 0.0,
            "no outbound requests to {pod}:\n{}",
            metrics.show("request_total", &[])
        );
    }
    let echo_conns = metrics.sum(
        "tcp_open_total",
        &[
            ("direction", "outbound"),
            ("peer", "dst"),
            ("dst_service", "echo"),
        ],
    );
    assert!(
        echo_conns >= 1.0,
        "the echo connection went to a discovered endpoint:\n{}",
        metrics.show("tcp_open_total", &[])
    );
    Ok(())
}

fn start_servers(server: &Pod) -> anyhow::Result<Vec<Process>> {
    let mut out = Vec::new();
    for (name, port) in [("web-a", 8080), ("web-b", 8081)] {
        let mut args = vec![
            "--name".to_string(),
            name.to_string(),
            "--http".to_string(),
            format!("0.0.0.0:{port}"),
        ];
        if name == "web-a" {
            args.extend(["--tcp-echo".to_string(), "0.0.0.0:9000".to_string()]);
        }
        let mut app = server
            .process(name, bin_path("mesh-test-app"))
            .args(&args)
            .spawn()?;
        app.wait_for_line("listening http", STARTUP)?;
        out.push(app);
    }
    Ok(out)
}

/// The controller with a destinations file naming the two services, as a cluster's
/// Services and EndpointSlices would.
fn start_controller(server: &Pod) -> anyhow::Result<Process> {
    let sip = server.ip;
    let file = server.log_dir().join("destinations.yaml");
    std::fs::write(
        &file,
        format!(
            "services:
  - name: web
    namespace: default
    clusterIPs: [\"{WEB_IP}\"]
    ports: [{{port: 80, targetPort: 8080}}]
    endpoints:
      - {{address: \"{sip}:8080\", labels: {{pod: web-a, deployment: web}}}}
      - {{address: \"{sip}:8081\", labels: {{pod: web-b, deployment: web}}}}
  - name: echo
    namespace: default
    clusterIPs: [\"{ECHO_IP}\"]
    ports: [{{port: 7, targetPort: 9000}}]
    endpoints:
      - {{address: \"{sip}\", labels: {{pod: web-a, deployment: web}}}}
"
        ),
    )?;
    start_pod_controller(server, &file, std::iter::empty::<&str>())
}

fn start_proxy(client: &Pod, controller: Ipv4Addr) -> anyhow::Result<Process> {
    start_pod_proxy(
        client,
        &[
            (
                "MESH_PROXY_DESTINATION_ADDR",
                &format!("{controller}:{DESTINATION_PORT}"),
            ),
            ("MESH_PROXY_DESTINATION_CONTEXT", r#"{"ns":"default"}"#),
        ],
    )
}
