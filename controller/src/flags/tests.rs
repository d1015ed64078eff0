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
    assert_eq!(
        config.scrape,
        ScrapeConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    );
    let config = parse(&[
        "--metrics-scrape-interval",
        "30s",
        "--metrics-scrape-timeout",
        "30s",
    ])
    .unwrap();
    assert_eq!(config.scrape.interval, Duration::from_secs(30));
    assert_eq!(config.scrape.timeout, Duration::from_secs(30));
}

/// A discovery file that exists, for flags that name one.
fn discovery_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "services: []\n").unwrap();
    file
}

#[test]
fn file_backend() {
    let file = discovery_file();
    let path = file.path().to_str().unwrap();
    let config = parse(&[
        "--backend",
        "file",
        "--file",
        path,
        "--cluster-domain",
        "example.org.",
        "--api-addr",
        "127.0.0.1:18084",
        "--tap-addr",
        "127.0.0.1:18088",
        "--parent-pid",
        "4242",
    ])
    .unwrap();
    assert!(matches!(&config.discovery, Discovery::File(p) if p.to_str() == Some(path)));
    assert_eq!(config.cluster_domain, "example.org");
    assert_eq!(config.api_addr, "127.0.0.1:18084".parse().unwrap());
    assert_eq!(config.tap_addr, "127.0.0.1:18088".parse().unwrap());
    assert_eq!(config.parent_pid, Some(4242));
}

#[test]
fn a_missing_discovery_file_is_an_error_at_start() {
    let error = parse(&["--backend", "file", "--file", "/typo.yaml"]).unwrap_err();
    assert_eq!(error, "cannot read --file /typo.yaml");
    let args = Args::try_parse_from([
        "mesh-controller",
        "--backend",
        "file",
        "--file",
        "/typo.yaml",
    ])
    .unwrap();
    let error = args.into_config().unwrap_err();
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(
        source.as_deref(),
        Some("No such file or directory (os error 2)")
    );
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, needle) in [
        (&["--backend", "file"][..], "--file"),
        (&["--file", "/x"][..], "--file"),
        (&["--backend", "consul"][..], "--backend"),
        (&["--destination-addr", "nope"][..], "--destination-addr"),
        (&["--admin-addr", "1.2.3.4"][..], "--admin-addr"),
        (&["--api-addr", "localhost"][..], "--api-addr"),
        (&["--parent-pid", "1"][..], "--parent-pid"),
        (&["--parent-pid", "me"][..], "--parent-pid"),
        (&["--cluster-domain", "bad domain"][..], "--cluster-domain"),
        (&["--trust-domain", ""][..], "--trust-domain"),
        (
            &["--control-plane-namespace", "Mesh"][..],
            "--control-plane-namespace",
        ),
        (&["--log", "info,[[["][..], "--log"),
        (
            &["--metrics-scrape-interval", "10"][..],
            "--metrics-scrape-interval",
        ),
        (
            &["--metrics-scrape-interval", "500ms"][..],
            "--metrics-scrape-interval",
        ),
        (
            &["--metrics-scrape-timeout", "11s"][..],
            "--metrics-scrape-timeout",
        ),
        (
            &["--metrics-scrape-timeout", "0s"][..],
            "--metrics-scrape-timeout",
        ),
        (&["--unknown"][..], "--unknown"),
    ] {
        let error = parse(args).unwrap_err();
        assert!(error.contains(needle), "{args:?}: {error}");
    }
}

/// Credentials written to files, as an operator would give them.
struct Creds {
    dir: tempfile::TempDir,
}

impl Creds {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (anchor, cert, key) =
            identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
        let (other_anchor, _, other_key) =
            identity::generate_anchor_and_issuer("cluster.local", Duration::from_secs(3600));
        for (name, text) in [
            ("anchors.pem", anchor.as_str()),
            ("issuer.pem", cert.as_str()),
            ("issuer.key", key.as_str()),
            ("other-anchors.pem", other_anchor.as_str()),
            ("other.key", other_key.as_str()),
            ("tokens", "t0k3n default/web\n"),
            ("bad-tokens", "t0k3n\n"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// The flags of a complete local-mode identity service, with `name` files
    /// substituted.
    fn args(&self, swap: &[(&str, &str)]) -> Vec<String> {
        let discovery = self.path("discovery.yaml");
        std::fs::write(&discovery, "services: []\n").unwrap();
        let mut args: Vec<String> = ["--backend", "file", "--file", &discovery]
            .map(String::from)
            .to_vec();
        for (flag, file) in [
            ("--identity-trust-anchors", "anchors.pem"),
            ("--identity-issuer-cert", "issuer.pem"),
            ("--identity-issuer-key", "issuer.key"),
            ("--identity-tokens", "tokens"),
        ] {
            let file = swap
                .iter()
                .find(|(f, _)| *f == flag)
                .map_or(file, |(_, file)| *file);
            if !file.is_empty() {
                args.push(flag.to_string());
                args.push(self.path(file));
            }
        }
        args
    }
}

fn parse_owned(args: &[String]) -> Result<Config, String> {
    parse(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn identity_is_off_by_default() {
    assert!(parse(&[]).unwrap().identity.is_none());
}

#[test]
fn identity_flags() {
    let creds = Creds::new();
    let mut args = creds.args(&[]);
    args.extend(["--identity-lifetime".into(), "90m".into()]);
    args.extend(["--identity-addr".into(), "192.0.2.1:8080".into()]);
    let identity = parse_owned(&args)
        .unwrap()
        .identity
        .expect("identity is on");
    assert_eq!(identity.addr, "192.0.2.1:8080".parse().unwrap());
    assert_eq!(identity.ca.lifetime(), Duration::from_secs(90 * 60));
    assert_eq!(identity.ca.trust_domain(), "cluster.local");
    assert!(matches!(identity.tokens, IdentityTokens::Bootstrap(_)));
    assert_eq!(
        identity.server_name,
        "mesh-identity.mesh-system.serviceaccount.identity.mesh.cluster.local"
    );
    assert_eq!(
        identity.destination_server_name,
        "mesh-destination.mesh-system.serviceaccount.identity.mesh.cluster.local"
    );
    let mut args = creds.args(&[]);
    args.extend([
        "--identity-server-name".into(),
        "CA.Ops.serviceaccount.identity.mesh.cluster.local".into(),
    ]);
    let identity = parse_owned(&args).unwrap().identity.unwrap();
    assert_eq!(
        identity.server_name,
        "ca.ops.serviceaccount.identity.mesh.cluster.local"
    );

    // Without a token file, the kubernetes backend checks tokens with TokenReview.
    let args = [
        "--identity-trust-anchors",
        &creds.path("anchors.pem"),
        "--identity-issuer-cert",
        &creds.path("issuer.pem"),
        "--identity-issuer-key",
        &creds.path("issuer.key"),
    ]
    .map(String::from);
    let identity = parse_owned(&args)
        .unwrap()
        .identity
        .expect("identity is on");
    assert!(matches!(identity.tokens, IdentityTokens::TokenReview));
    assert_eq!(identity.ca.lifetime(), Duration::from_secs(24 * 60 * 60));
}

#[test]
fn bad_identity_flags_name_the_flag_and_the_problem() {
    let creds = Creds::new();
    for (swap, needle) in [
        (
            &[("--identity-issuer-key", "")][..],
            "--identity-issuer-key is required",
        ),
        (
            &[("--identity-trust-anchors", "")],
            "--identity-trust-anchors is required",
        ),
        (
            &[("--identity-issuer-cert", "")],
            "--identity-issuer-cert is required",
        ),
        (
            &[("--identity-tokens", "")],
            "--identity-tokens is required with --backend file",
        ),
        (
            &[("--identity-issuer-key", "other.key")],
            "invalid --identity-issuer-key",
        ),
        (
            &[("--identity-trust-anchors", "other-anchors.pem")],
            "not signed by any",
        ),
        (
            &[("--identity-issuer-cert", "missing.pem")],
            "cannot read --identity-issuer-cert",
        ),
        (
            &[("--identity-issuer-cert", "issuer.key")],
            "invalid --identity-issuer-cert",
        ),
        (
            &[("--identity-tokens", "bad-tokens")],
            "invalid --identity-tokens",
        ),
        (
            &[
                ("--identity-issuer-cert", ""),
                ("--identity-issuer-key", ""),
            ],
            "--identity-trust-anchors is only used with",
        ),
    ] {
        let err = parse_owned(&creds.args(swap)).expect_err(needle);
        assert!(err.contains(needle), "{swap:?}: {err}");
    }
    let err = parse(&["--identity-tokens", &creds.path("tokens")]).unwrap_err();
    assert!(err.contains("--identity-tokens is only used with"), "{err}");
    let err = parse(&["--destination-server-name", "x"]).unwrap_err();
    assert!(
        err.contains("--destination-server-name is only used with"),
        "{err}"
    );
    let mut args = creds.args(&[]);
    args.extend(["--destination-server-name".into(), "dst.default".into()]);
    let err = parse_owned(&args).unwrap_err();
    assert!(err.contains("invalid --destination-server-name"), "{err}");
    let err = parse(&["--identity-server-name", "x"]).unwrap_err();
    assert!(
        err.contains("--identity-server-name is only used with"),
        "{err}"
    );
    for bad in [
        "mesh-identity.mesh-system.svc.cluster.local",
        "mesh-identity.mesh-system.serviceaccount.identity.mesh.example.org",
    ] {
        let mut args = creds.args(&[]);
        args.extend(["--identity-server-name".into(), bad.into()]);
        let err = parse_owned(&args).unwrap_err();
        assert!(
            err.contains("invalid --identity-server-name") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    for bad in ["24", "1w", "h", "30s"] {
        let mut args = creds.args(&[]);
        args.extend(["--identity-lifetime".into(), bad.into()]);
        let err = parse_owned(&args).unwrap_err();
        assert!(err.contains("--identity-lifetime"), "{bad}: {err}");
    }
}

/// The injector's flags as the install's Deployment passes them: the webhook's pair,
/// `--inject-config`, the anchors (without the issuer: the injector alone).
#[test]
fn inject_flags() {
    let creds = Creds::new();
    let ck =
        rcgen::generate_simple_self_signed(vec!["mesh-webhook.mesh-system.svc".into()]).unwrap();
    let (cert, key) = (creds.path("tls.crt"), creds.path("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let values = creds.path("values.yaml");
    std::fs::write(&values, mesh_core::install::Values::default().to_yaml()).unwrap();
    let anchors = creds.path("anchors.pem");
    let flags = |extra: &[&str]| {
        let mut args = vec![
            format!("--webhook-cert={cert}"),
            format!("--webhook-key={key}"),
            format!("--identity-trust-anchors={anchors}"),
            format!("--inject-config={values}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let config = parse_owned(&flags(&[])).unwrap();
    let files = config.webhook.unwrap().inject.expect("the injector is on");
    let inject = files.load().expect("loads");
    assert!(inject.trust_anchors.contains("BEGIN CERTIFICATE"));
    assert_eq!(inject.values, mesh_core::install::Values::default());
    assert!(
        config.identity.is_none(),
        "anchors alone do not start the identity service"
    );

    let e = parse_owned(&flags(&["--trust-domain=example.org"])).unwrap_err();
    assert!(
        e.contains("trustDomain") && e.contains("--trust-domain"),
        "{e}"
    );
    let discovery = creds.path("discovery.yaml");
    std::fs::write(&discovery, "services: []\n").unwrap();
    let e = parse_owned(&flags(&["--backend=file", &format!("--file={discovery}")])).unwrap_err();
    assert!(e.contains("--backend kubernetes"), "{e}");
    let e = parse_owned(&flags(&[])[1..].iter().skip(1).cloned().collect::<Vec<_>>()).unwrap_err();
    assert!(e.contains("--webhook-cert"), "{e}");
    let no_anchors: Vec<String> = flags(&[])
        .into_iter()
        .filter(|f| !f.contains("anchors"))
        .collect();
    let e = parse_owned(&no_anchors).unwrap_err();
    assert!(e.contains("--identity-trust-anchors"), "{e}");
    std::fs::write(&values, "proxy:\n  logLevl: debug\n").unwrap();
    let e = parse_owned(&flags(&[])).unwrap_err();
    assert!(
        e.contains("--inject-config") && e.contains("logLevl"),
        "{e}"
    );
    std::fs::write(&values, "proxy:\n  skipInboundPorts: ssh\n").unwrap();
    let e = parse_owned(&flags(&[])).unwrap_err();
    assert!(e.contains("skip-inbound-ports"), "{e}");
}

/// `--dashboard-allowed-host` takes DNS names, repeated, each then answered with any
/// port; anything else is refused naming the flag.
#[test]
fn dashboard_allowed_hosts() {
    assert_eq!(
        parse(&[]).unwrap().dashboard_allowed_hosts,
        crate::dashboard::AllowedHosts::default()
    );
    let config = parse(&[
        "--dashboard-allowed-host",
        "mesh.example.com",
        "--dashboard-allowed-host",
        "Dash.Internal",
    ])
    .unwrap();
    let hosts = &config.dashboard_allowed_hosts;
    assert!(hosts.allows("mesh.example.com:8084"));
    assert!(hosts.allows("dash.internal"));
    assert!(!hosts.allows("evil.example"));
    for bad in [
        "http://mesh.example.com",
        "mesh.example.com:8084",
        "*.example.com",
    ] {
        let e = parse(&["--dashboard-allowed-host", bad]).unwrap_err();
        assert!(
            e.contains("--dashboard-allowed-host") && e.contains(bad),
            "{e}"
        );
    }
}
