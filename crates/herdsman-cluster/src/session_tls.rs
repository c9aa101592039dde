//! Mutual TLS for node sessions: the certificate and key a node presents, and the CA it
//! verifies its peers against, loaded from PEM files into the acceptor its node server
//! uses (`IncomingEncryptionMode::Tls`) and the connector an agent joins with
//! (`client_connect_enc`). The cookie challenge still runs inside the encrypted session.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::{aws_lc_rs, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::ClusterError;

/// Largest PEM file read: certificates and keys are a few KiB; this bounds a mistake
/// such as pointing the flag at a log file.
const MAX_PEM: u64 = 1024 * 1024;

/// Where a node's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// This node's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificate(s) (PEM) every peer's certificate must chain to.
    pub ca: PathBuf,
}

/// A node's TLS settings, loaded and checked: it both accepts and connects with them.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Load `files`: the node presents its certificate on both sides of a session and
    /// accepts only peers whose certificate chains to the CA.
    ///
    /// # Errors
    /// [`ClusterError::Tls`] naming the file that cannot be read, holds no PEM item of
    /// the expected kind or holds an invalid one, or whose key does not match the
    /// certificate.
    pub fn load(files: &TlsFiles) -> Result<NodeTls, ClusterError> {
        let certs = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.ca)? {
            roots.add(ca).map_err(|e| fail(&files.ca, e))?;
        }
        let roots = Arc::new(roots);
        // Both aws-lc-rs and ring are compiled in (other crates enable each), so rustls
        // cannot pick a process default: name the provider.
        let provider: Arc<CryptoProvider> = Arc::new(aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| fail(&files.ca, e))?;
        let pair = || format!("{} with key {}", files.cert.display(), files.key.display());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&files.cert, e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| ClusterError::Tls {
                path: pair(),
                why: e.to_string(),
            })?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(&files.cert, e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| ClusterError::Tls {
                path: pair(),
                why: e.to_string(),
            })?;
        Ok(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// What the node server accepts sessions with.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// What an agent joins with.
    pub(crate) fn connector(&self) -> TlsConnector {
        self.connector.clone()
    }
}

/// The name the coordinator's certificate must carry when joined at `join` (`HOST:PORT`
/// or `IP:PORT`): its host part, an IP address or a DNS name.
///
/// # Errors
/// [`ClusterError::Tls`] when the host part is not a valid name.
pub fn server_name(join: &str) -> Result<ServerName<'static>, ClusterError> {
    let host = match join.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => join,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| ClusterError::Tls {
        path: format!("--join {join}"),
        why: format!("{host:?} is not a host name or IP address: {e}"),
    })
}

fn fail(path: &Path, why: impl fmt::Display) -> ClusterError {
    ClusterError::Tls {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ClusterError> {
    let meta = std::fs::metadata(path).map_err(|e| fail(path, e))?;
    if meta.len() > MAX_PEM {
        return Err(fail(path, format!("larger than {MAX_PEM} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(path, e))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterError> {
    let pem = read_pem(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(path, "no PEM certificate in it"));
    }
    // A certificate that does not parse is refused here, not at the first handshake.
    for cert in &certs {
        webpki_check(path, cert)?;
    }
    Ok(certs)
}

fn webpki_check(path: &Path, cert: &CertificateDer<'_>) -> Result<(), ClusterError> {
    let mut store = RootCertStore::empty();
    store
        .add(cert.clone().into_owned())
        .map_err(|e| fail(path, format!("not a valid certificate: {e}")))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClusterError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        tokio_rustls::rustls::pki_types::pem::Error::NoItemsFound => {
            fail(path, "no PEM private key in it")
        }
        e => fail(path, format!("invalid PEM: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_address_names_its_host_for_the_certificate() {
        assert_eq!(
            server_name("127.0.0.1:4697").expect("ip"),
            ServerName::try_from("127.0.0.1").expect("ip")
        );
        assert_eq!(
            server_name("coord.example:4697").expect("dns"),
            ServerName::try_from("coord.example").expect("dns")
        );
        assert_eq!(
            server_name("[::1]:4697").expect("ipv6"),
            ServerName::try_from("::1").expect("ipv6")
        );
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn files_that_hold_no_pem_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let files = TlsFiles {
            cert: junk.clone(),
            key: junk.clone(),
            ca: junk.clone(),
        };
        let err = NodeTls::load(&files).expect_err("refused").to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let missing = TlsFiles {
            cert: dir.path().join("missing.pem"),
            ..files
        };
        let err = NodeTls::load(&missing).expect_err("refused").to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
