use super::*;

#[test]
fn port_lists_are_ports_and_ordered_ranges() {
    for ok in ["", "22", "22,8000-8010", " 1 , 65535 "] {
        assert!(port_list("k", ok).is_ok(), "{ok:?}");
    }
    for bad in ["0", "65536", "10-9", "x", "1-", "22,,http"] {
        let e = port_list("proxy.skipInboundPorts", bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("proxy.skipInboundPorts"), "{bad:?}: {e}");
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
