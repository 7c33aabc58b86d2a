//! Transport security (DOMAIN K7): certificates, the development certificate, the production
//! refusals, and client certificates (mutual TLS).

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The development certificate's files inside the data directory.
pub const DEV_CERT: &str = "dev-cert.pem";
pub const DEV_KEY: &str = "dev-key.pem";

/// Signature algorithms refused in production (the seeds: no MD5, no SHA-1).
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "MD2 with RSA"),
    ("1.2.840.113549.1.1.4", "MD5 with RSA"),
    ("1.2.840.113549.1.1.5", "SHA-1 with RSA"),
    ("1.2.840.10045.4.1", "ECDSA with SHA-1"),
    ("1.2.840.10040.4.3", "DSA with SHA-1"),
    ("1.3.14.3.2.29", "SHA-1 with RSA (OIW)"),
];

/// What is known about a certificate chain, for the production checks and the start message.
#[derive(Debug)]
pub struct ChainInfo {
    pub subject: String,
    pub self_signed: bool,
    /// A weak signature somewhere in the chain: (subject, algorithm).
    pub weak: Option<(String, &'static str)>,
}

/// Reads a PEM certificate chain.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the certificate {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected PEM blocks BEGIN CERTIFICATE)",
            path.display()
        ));
    }
    Ok(chain)
}

/// Reads a PEM private key.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

/// Inspects a chain: the leaf's subject, whether the leaf signs itself, weak signatures.
pub fn inspect(chain: &[CertificateDer<'_>]) -> Result<ChainInfo, String> {
    let mut info = None;
    let mut weak = None;
    for (i, der) in chain.iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate {i} cannot be parsed: {e}"))?;
        let oid = cert.signature_algorithm.algorithm.to_id_string();
        if weak.is_none()
            && let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(o, _)| *o == oid)
        {
            weak = Some((cert.subject().to_string(), *name));
        }
        if i == 0 {
            info = Some((cert.subject().to_string(), cert.subject() == cert.issuer()));
        }
    }
    let (subject, self_signed) = info.expect("chain is not empty");
    Ok(ChainInfo {
        subject,
        self_signed,
        weak,
    })
}

/// Refuses what production must not run with.
pub fn production_check(info: &ChainInfo, cert: &Path) -> Result<(), String> {
    if info.self_signed {
        return Err(format!(
            "--production refuses the self-signed certificate {} ({}); use a certificate issued by a trusted certificate authority",
            cert.display(),
            info.subject
        ));
    }
    if let Some((subject, alg)) = &info.weak {
        return Err(format!(
            "--production refuses {}: the certificate {subject} is signed with {alg}; reissue it with SHA-256 or stronger",
            cert.display()
        ));
    }
    Ok(())
}

/// The development certificate in the data directory, generated on first use (for localhost
/// and 127.0.0.1). Returns the paths and whether it was generated now.
pub fn dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf, bool), String> {
    let (cert, key) = (dir.join(DEV_CERT), dir.join(DEV_KEY));
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(|e| format!("cannot generate a development certificate: {e}"))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert, generated.cert.pem().as_bytes())?;
    Ok((cert, key, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The rustls configuration: TLS 1.2 and 1.3 with rustls' safe defaults; client certificates
/// requested (and verified against `client_ca`) when one is given, but not required, so that
/// clients with keys or passwords still connect.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_chain(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: the common name (CN) of its subject.
pub fn client_certificate_user(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = c
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(cn)
}
