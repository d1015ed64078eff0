//! Compiles `proto/*.proto` into prost messages and tonic clients and servers, with
//! protox (pure Rust), so no system `protoc` is needed. The clients and servers are
//! behind the crate's `grpc` feature.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/net.proto",
        "proto/destination.proto",
        "proto/identity.proto",
        "proto/tap.proto",
        "proto/policy.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Clients and servers exist only with the `grpc` feature: without it the crate is
    // messages alone, with no tonic, for the controller's pure core.
    let grpc_only = "#[cfg(feature = \"grpc\")]";
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .client_mod_attribute(".", grpc_only)
        .server_mod_attribute(".", grpc_only)
        .compile_fds(fds)?;
    Ok(())
}
