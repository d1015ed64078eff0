use super::*;

#[test]
fn proxy_values_are_checked_by_the_injectors_rules() {
    for (key, ok) in [
        ("proxy.skipInboundPorts", "22,8000-8010"),
        ("proxy.skipOutboundPorts", " 1 , 65535 "),
        ("proxy.resources.cpuLimit", "2"),
    ] {
        let mut values = Values::default();
        values.set(key, ok).expect("set");
        assert!(check_values(&values).is_ok(), "{key}={ok:?}");
    }
    for (key, bad) in [
        ("proxy.skipInboundPorts", "0"),
        ("proxy.skipInboundPorts", "65536"),
        ("proxy.skipInboundPorts", "10-9"),
        ("proxy.skipOutboundPorts", "22,,http"),
        ("proxy.resources.memoryRequest", "lots"),
        ("proxy.resources.memoryRequest", "300Mi"),
    ] {
        let mut values = Values::default();
        values.set(key, bad).expect("set");
        let e = check_values(&values).unwrap_err().to_string();
        assert!(
            e.starts_with("--set: ") && e.contains(bad.trim()),
            "{key}={bad:?}: {e}"
        );
    }
}

#[test]
fn generated_certificates_name_the_webhook_service() {
    let args = InstallArgs {
        crds: false,
        registry: None,
        image_tag: None,
        ha: false,
        cluster_domain: Some("example.org".into()),
        identity_trust_domain: None,
        set: Vec::new(),
        identity_trust_anchors_file: None,
        identity_issuer_certificate_file: None,
        identity_issuer_key_file: None,
        webhook_ca_file: None,
        webhook_certificate_file: None,
        webhook_key_file: None,
    };
    let config = Config::try_from(args).expect("valid");
    // The generated issuer is one the identity service accepts.
    check_identity(&config.identity, &config.values, SystemTime::now()).expect("usable");
    let (_, cert) = x509_parser::pem::parse_x509_pem(config.webhook.cert.as_bytes()).expect("PEM");
    let cert = cert.parse_x509().expect("X.509");
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .expect("parses")
        .expect("has SANs")
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        sans,
        [
            "DNSName(mesh-webhook.mesh-system.svc)",
            "DNSName(mesh-webhook.mesh-system.svc.example.org)"
        ]
    );
}
