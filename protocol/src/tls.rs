//! The mutual-TLS identity scheme.
//!
//! Every certificate is issued by the cluster CA (see [`crate::pki`]). Its subject carries the
//! peer's role in the organisational-unit field (`presage-agent`, `presage-operator`,
//! `presage-coordinator`) and its name in the common name: the host id for agents, the person or
//! robot for operators. The coordinator authorises on that pair: an agent may only speak for the
//! host its certificate names, and only operators may use the operator API.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors loading TLS material or reading a peer's identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} file {path} holds no usable PEM {expected}: {detail}")]
    BadPem { what: &'static str, path: PathBuf, expected: &'static str, detail: String },
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    #[error("peer certificate is unreadable: {0}")]
    BadPeerCertificate(String),
    #[error("peer certificate has no presage role (organisational unit), got {0:?}")]
    NoRole(String),
    #[error("peer certificate has no common name")]
    NoName,
}

/// What a peer is allowed to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Agent,
    /// A person or robot that reads the operator API and acts on the cluster.
    Operator,
    Coordinator,
    /// Reads the operator API; acts on nothing.
    Viewer,
    /// Everything an operator may, and manages the cluster's rules (dependency declarations).
    Admin,
    /// A metrics scraper (Prometheus): reads `/metrics`, nothing else.
    Metrics,
}

/// What an operator-API call does, for the roles that may make it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// Scrapes `/metrics`: metrics scrapers, viewers, operators and admins.
    Scrape,
    /// Reads state: viewers, operators and admins.
    Read,
    /// Changes what runs where (moves, drains, reservations): operators and admins.
    Act,
    /// Changes the cluster's rules (dependency declarations): admins only.
    Manage,
}

impl Role {
    /// The organisational-unit value that encodes this role in a certificate.
    pub fn ou(self) -> &'static str {
        match self {
            Role::Agent => "presage-agent",
            Role::Operator => "presage-operator",
            Role::Coordinator => "presage-coordinator",
            Role::Viewer => "presage-viewer",
            Role::Admin => "presage-admin",
            Role::Metrics => "presage-metrics",
        }
    }

    fn from_ou(ou: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.ou() == ou)
    }

    pub const ALL: [Role; 6] = [Role::Agent, Role::Operator, Role::Coordinator, Role::Viewer, Role::Admin, Role::Metrics];

    /// Whether this role may make operator-API calls of `access`.
    pub fn may(self, access: Access) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => access <= Access::Act,
            Role::Viewer => access <= Access::Read,
            Role::Metrics => access == Access::Scrape,
            Role::Agent | Role::Coordinator => false,
        }
    }

    /// Parses `viewer`, `operator`, `admin` (the people roles) or `metrics` (a scraper).
    pub fn person(name: &str) -> Option<Role> {
        match name {
            "metrics" => Some(Role::Metrics),
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Coordinator => "coordinator",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
            Role::Metrics => "metrics",
        })
    }
}

/// Who is on the other end of an authenticated connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: Role,
    pub name: String,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.role, self.name)
    }
}

/// Reads the role and name from a DER certificate that the TLS layer has already verified
/// against the cluster CA.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    let subject = parsed.subject();
    let ou = subject.iter_organizational_unit().filter_map(|a| a.as_str().ok()).collect::<Vec<_>>();
    let role = ou.iter().find_map(|v| Role::from_ou(v)).ok_or_else(|| TlsError::NoRole(ou.join(",")))?;
    let name = subject.iter_common_name().filter_map(|a| a.as_str().ok()).next().ok_or(TlsError::NoName)?.to_string();
    Ok(PeerIdentity { role, name })
}

/// The three files every presage process needs for mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// This process's certificate (PEM), issued by the cluster CA.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM).
    pub key: PathBuf,
}

/// PEM material read from [`TlsFiles`], checked to contain what each file should.
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    ca_certs: Vec<CertificateDer<'static>>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn certs_from(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::BadPem {
        what,
        path: path.to_owned(),
        expected: "certificate",
        detail: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem { what, path: path.to_owned(), expected: "certificate", detail: "no CERTIFICATE block found".into() });
    }
    Ok(certs)
}

impl TlsFiles {
    /// Conventional file names inside a directory made by `presagectl certs init`.
    pub fn in_dir(dir: &Path, stem: &str) -> TlsFiles {
        TlsFiles { ca: dir.join(crate::pki::CA_CERT_FILE), cert: dir.join(format!("{stem}.pem")), key: dir.join(format!("{stem}.key")) }
    }

    /// Reads and checks the three files; every error names the file at fault.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let ca_pem = read("CA certificate", &self.ca)?;
        let cert_pem = read("certificate", &self.cert)?;
        let key_pem = read("private key", &self.key)?;
        let ca_certs = certs_from("CA certificate", &self.ca, &ca_pem)?;
        let certs = certs_from("certificate", &self.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadPem {
            what: "private key",
            path: self.key.clone(),
            expected: "private key",
            detail: e.to_string(),
        })?;
        Ok(TlsMaterial { ca_pem, cert_pem, key_pem, ca_certs, certs, key })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// The identity this process's own certificate carries.
    pub fn own_identity(&self) -> Result<PeerIdentity, TlsError> {
        peer_identity(&self.certs[0])
    }

    /// The cluster CA as the only trust anchor.
    fn cluster_roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in &self.ca_certs {
            roots.add(ca.clone()).map_err(|e| TlsError::Config(format!("CA certificate rejected: {e}")))?;
        }
        Ok(roots)
    }

    /// A rustls server configuration that requires a client certificate issued by the cluster CA
    /// and speaks HTTP/2 (gRPC) and HTTP/1.1 (the REST API).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(self.cluster_roots()?), provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
        // gRPC speaks h2; the REST API on the same port also takes HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A rustls client configuration for the REST API (HTTP/1.1): presents this process's
    /// certificate and trusts only the cluster CA.
    pub fn rest_client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.cluster_roots()?)
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(format!("certificate and key do not match: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A tonic client configuration presenting this process's certificate and trusting only the
    /// cluster CA; `server_name` is the name the coordinator's certificate must carry.
    pub fn client_config(&self, server_name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(server_name.to_string())
    }
}
