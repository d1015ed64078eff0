//! The proxy's HTTP/1 server edge on arbitrary client bytes: detection, then hyper's
//! request-head parser, the proxy's routing and header handling, with a proxy whose
//! upstream is unreachable. Must never panic, whatever the client sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let env: HashMap<&str, &str> = [
            ("MESH_PROXY_OUTBOUND_LISTEN_ADDR", "127.0.0.1:0"),
            ("MESH_PROXY_INBOUND_LISTEN_ADDR", "127.0.0.1:0"),
            ("MESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
            ("MESH_PROXY_DETECT_TIMEOUT", "50ms"),
            ("MESH_PROXY_CONNECT_TIMEOUT", "50ms"),
            ("MESH_PROXY_HTTP1_HEADER_READ_TIMEOUT", "100ms"),
        ]
        .into_iter()
        .collect();
        let config = mesh_proxy::config::Config::from_env(&env).expect("valid config");
        let bound = mesh_proxy::bind(config).await.expect("bind");
        let (_, outbound, _) = bound.addrs();
        let proxy = bound.proxy();
        let server = tokio::spawn(bound.serve());
        if let Ok(mut s) = tokio::net::TcpStream::connect(outbound).await {
            let _ = s.write_all(data).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(300), s.read_to_end(&mut sink)).await;
        }
        proxy.shutdown.cancel();
        let _ = server.await;
    });
});
