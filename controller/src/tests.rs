use super::*;

fn parse(args: &[&str]) -> Result<Config, String> {
    let args = Args::try_parse_from(std::iter::once("mesh-controller").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    args.into_config().map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let config = parse(&[]).unwrap();
    assert!(matches!(
        &config.discovery,
        Discovery::Kubernetes { control_plane_namespace } if control_plane_namespace == "mesh-system"
    ));
    assert_eq!(config.destination_addr, "0.0.0.0:8086".parse().unwrap());
    assert_eq!(config.admin_addr, "0.0.0.0:9990".parse().unwrap());
    assert_eq!(config.cluster_domain, "cluster.local");
    assert_eq!(config.trust_domain, "cluster.local");
    assert_eq!(config.log, "info");
}

#[test]
fn file_backend() {
    let config = parse(&[
        "--backend",
        "file",
        "--file",
        "/tmp/x.yaml",
        "--cluster-domain",
        "example.org.",
    ])
    .unwrap();
    assert!(matches!(&config.discovery, Discovery::File(p) if p.to_str() == Some("/tmp/x.yaml")));
    assert_eq!(config.cluster_domain, "example.org");
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, needle) in [
        (&["--backend", "file"][..], "--file"),
        (&["--file", "/x"][..], "--file"),
        (&["--backend", "consul"][..], "--backend"),
        (&["--destination-addr", "nope"][..], "--destination-addr"),
        (&["--admin-addr", "1.2.3.4"][..], "--admin-addr"),
        (&["--cluster-domain", "bad domain"][..], "--cluster-domain"),
        (&["--trust-domain", ""][..], "--trust-domain"),
        (
            &["--control-plane-namespace", "Mesh"][..],
            "--control-plane-namespace",
        ),
        (&["--log", "info,[[["][..], "--log"),
        (&["--unknown"][..], "--unknown"),
    ] {
        let error = parse(args).unwrap_err();
        assert!(error.contains(needle), "{args:?}: {error}");
    }
}
