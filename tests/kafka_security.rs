//! leadflow on a TLS listener with SASL/SCRAM-SHA-512, as platform teams run Kafka: the test
//! makes its own CA and broker certificate, creates the SCRAM user when it formats the broker,
//! and every leadflow command (topics, gen, run) connects with a properties file. The secret
//! never appears in a log line or a metric; a wrong one is an error that names the cause.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::stack::{http_get, metric, produced, rules, Stack, StackOptions};
use common::{free_port, BrokerOptions};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// A CA and a certificate for 127.0.0.1/localhost signed by it, as PEM files in `dir`:
/// `ca.pem` (for clients) and `broker.pem` (private key and certificate, Kafka's PEM keystore).
fn make_certificates(dir: &Path) {
    fn key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
    }
    fn serial() -> openssl::asn1::Asn1Integer {
        let mut bn = BigNum::new().unwrap();
        bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
        bn.to_asn1_integer().unwrap()
    }
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", cn).unwrap();
        n.build()
    };
    let ca_key = key();
    let mut ca = X509::builder().unwrap();
    ca.set_version(2).unwrap();
    ca.set_serial_number(&serial()).unwrap();
    ca.set_subject_name(&name("leadflow test CA")).unwrap();
    ca.set_issuer_name(&name("leadflow test CA")).unwrap();
    ca.set_pubkey(&ca_key).unwrap();
    ca.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    ca.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    ca.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    ca.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build().unwrap())
        .unwrap();
    ca.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let ca = ca.build();

    let broker_key = key();
    let mut cert = X509::builder().unwrap();
    cert.set_version(2).unwrap();
    cert.set_serial_number(&serial()).unwrap();
    cert.set_subject_name(&name("localhost")).unwrap();
    cert.set_issuer_name(ca.subject_name()).unwrap();
    cert.set_pubkey(&broker_key).unwrap();
    cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    cert.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&cert.x509v3_context(Some(&ca), None))
        .unwrap();
    cert.append_extension(san).unwrap();
    cert.sign(&ca_key, MessageDigest::sha256()).unwrap();
    let cert = cert.build();

    std::fs::write(dir.join("ca.pem"), ca.to_pem().unwrap()).unwrap();
    let mut keystore = broker_key.private_key_to_pem_pkcs8().unwrap();
    keystore.extend(cert.to_pem().unwrap());
    keystore.extend(ca.to_pem().unwrap());
    std::fs::write(dir.join("broker.pem"), keystore).unwrap();
}

/// leadflow's client properties for the SASL_SSL listener.
fn client_properties(dir: &Path, password: &str) -> String {
    format!(
        "# leadflow's Kafka client, as a platform team would hand it out\n\
         security.protocol=SASL_SSL\n\
         sasl.mechanism=SCRAM-SHA-512\n\
         sasl.username=leadflow\n\
         sasl.password={password}\n\
         ssl.ca.location={}\n",
        dir.join("ca.pem").display()
    )
}

#[test]
fn leadflow_routes_through_sasl_ssl_with_scram_and_never_shows_the_secret() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let secret = format!("scram-secret-{}", std::process::id());
    let (plain, controller, sasl_ssl) = (free_port(), free_port(), free_port());
    let keystore = certs.path().join("broker.pem");
    let broker = BrokerOptions {
        port: Some(plain),
        controller_port: Some(controller),
        extra: vec![
            format!(
                "listeners=PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{sasl_ssl}"
            ),
            format!("advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl}"),
            "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
            "ssl.keystore.type=PEM".into(),
            format!("ssl.keystore.location={}", keystore.display()),
        ],
        format_args: vec![
            "--add-scram".into(),
            format!("SCRAM-SHA-512=[name=leadflow,password={secret}]"),
        ],
    };
    let mut stack = Stack::with(
        "sasl",
        &rules("tests/fixtures/route_all.rhai"),
        StackOptions {
            broker,
            create_topics: false,
            ..StackOptions::default()
        },
    );
    let props = certs.path().join("client.properties");
    std::fs::write(&props, client_properties(certs.path(), &secret)).unwrap();
    stack.bootstrap = format!("127.0.0.1:{sasl_ssl}");
    stack.client_args = vec!["--kafka-config".into(), props.display().to_string()];

    // Topics, traffic and the processor, all through SASL_SSL.
    stack.create_topics(6);
    stack.gen("600", "0.0");
    let want = produced(&stack);
    let inputs = want.contacts.len() + want.engagements.len();
    let (mut proc, metrics_url) = stack.start_with(
        &["--kafka", "debug=security,broker"],
        &[("RUST_LOG", "debug")],
    );
    common::wait_until("every record routed", Duration::from_secs(180), || {
        metric(&metrics_url, "leadflow_record_latency_seconds_count", "") >= inputs as f64
    });
    let out = stack.outputs();
    let decided: HashSet<&str> = out.decisions.iter().map(|d| d.event_id.as_str()).collect();
    assert!(want.contacts.iter().all(|id| decided.contains(id.as_str())));
    let (_, metrics) = http_get(&metrics_url).unwrap();
    assert!(!metrics.contains(&secret), "the secret is in /metrics");
    proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    let log = proc.log_text();
    assert!(
        log.contains("SASL"),
        "no security debug lines: the check proves little"
    );
    assert!(!log.contains(&secret), "the secret is in the log");

    // A wrong password: the processor stops at start-up and says why, without the password.
    let wrong = format!("wrong-{secret}");
    std::fs::write(&props, client_properties(certs.path(), &wrong)).unwrap();
    let (mut proc, _) = stack.start();
    let status = proc.wait_exit(Duration::from_secs(90));
    assert!(!status.success());
    let log = proc.log_text();
    assert!(
        log.contains("Authentication") || log.contains("authentication"),
        "the cause is missing:\n{log}"
    );
    assert!(
        !log.contains(&wrong),
        "the wrong password is in the log:\n{log}"
    );
    eprintln!(
        "wrong password: {}",
        log.lines().rfind(|l| l.starts_with("error:")).unwrap_or("")
    );
}
