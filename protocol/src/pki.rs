//! Issuing the cluster's certificates: one CA per cluster, then certificates for the coordinator,
//! each agent (by host id) and each operator, all following the identity scheme in
//! [`crate::tls`]. Used by `presagectl certs`, the local demo and the tests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::tls::{Role, TlsFiles};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
/// How long leaf certificates are valid.
pub const LEAF_VALIDITY_DAYS: i64 = 825;
/// How long the cluster CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} already exists; refusing to overwrite a cluster CA (remove it first)")]
    Exists { path: PathBuf },
    #[error("invalid name {name:?} for a {role} certificate: {why}")]
    BadName { name: String, role: Role, why: &'static str },
    #[error("{path}: {what}")]
    Pkcs12 { path: PathBuf, what: String },
}

/// Writes `files`' certificate, its key and the cluster CA as a PKCS#12 bundle at `out`
/// (PBES2/PBKDF2-HMAC-SHA256/AES-256-CBC, HMAC-SHA256 MAC, as current browsers and OpenSSL 3
/// read), owner-readable only: what an operator imports into a browser for the web view.
pub fn write_pkcs12(files: &crate::tls::TlsFiles, out: &Path, password: &str) -> Result<(), PkiError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
    let bad = |path: &Path, what: String| PkiError::Pkcs12 { path: path.to_owned(), what };
    let der_certs = |path: &Path| -> Result<Vec<Certificate>, PkiError> {
        let pem = std::fs::read(path).map_err(io_err(path))?;
        CertificateDer::pem_slice_iter(&pem)
            .map(|c| {
                c.map_err(|e| bad(path, format!("not a PEM certificate: {e}")))
                    .and_then(|c| Certificate::from_der(&c).map_err(|e| bad(path, e.to_string())))
            })
            .collect()
    };
    let mut chain = der_certs(&files.cert)?;
    chain.extend(der_certs(&files.ca)?);
    let key_pem = std::fs::read(&files.key).map_err(io_err(&files.key))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&key_pem).map_err(|e| bad(&files.key, format!("not a PKCS#8 PEM key: {e}")))?;
    let key = PrivateKey::from_der(key.secret_pkcs8_der()).map_err(|e| bad(&files.key, e.to_string()))?;
    let alias = files.cert.file_stem().and_then(|s| s.to_str()).unwrap_or("presage").to_string();
    let mut store = KeyStore::new();
    store.add_entry(&alias, KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(alias.as_bytes(), key, chain)));
    let bytes = store.writer(password).write().map_err(|e| bad(out, e.to_string()))?;
    write_bytes(out, &bytes, true)
}

/// A certificate and its key, both PEM.
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA, able to issue certificates.
pub struct ClusterCa {
    cert_pem: String,
    /// The CA's subject, key identifier method and signing key, exactly as in its certificate.
    issuer: Issuer<'static, KeyPair>,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_owned(), source }
}

/// Checks a host or operator name before it goes into a certificate and a file name.
pub fn validate_name(name: &str, role: Role) -> Result<(), PkiError> {
    let bad = |why| PkiError::BadName { name: name.to_string(), role, why };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must be 1 to 63 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_') {
        return Err(bad("only letters, digits, '-', '.' and '_' are allowed"));
    }
    if name.starts_with(['-', '.']) {
        return Err(bad("must not start with '-' or '.'"));
    }
    Ok(())
}

impl ClusterCa {
    /// Creates a new CA named after the cluster.
    pub fn generate(cluster: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("presage cluster CA ({cluster})"));
        dn.push(DnType::OrganizationName, "presage");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Loads the CA written by [`ClusterCa::write`] from `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(ClusterCa { cert_pem, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.pem` and `ca.key` (mode 0600) into `dir`; refuses to overwrite an existing CA.
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            return Err(PkiError::Exists { path: key_path });
        }
        write_file(&dir.join(CA_CERT_FILE), &self.cert_pem, false)?;
        write_file(&key_path, &self.issuer.key().serialize_pem(), true)
    }

    /// Issues a certificate for `role` and `name`. Coordinator certificates also carry
    /// `extra_names` (DNS names or IP addresses agents will dial) as subject alternative names.
    pub fn issue(&self, role: Role, name: &str, extra_names: &[String]) -> Result<IssuedCert, PkiError> {
        validate_name(name, role)?;
        let mut sans = Vec::new();
        if role == Role::Coordinator {
            sans.push(crate::COORDINATOR_TLS_NAME.to_string());
            sans.push("localhost".to_string());
            sans.push("127.0.0.1".to_string());
            sans.push("::1".to_string());
        }
        sans.extend(extra_names.iter().cloned());
        sans.dedup();
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationalUnitName, role.ou());
        dn.push(DnType::OrganizationName, "presage");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match role {
            Role::Coordinator => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Role::Agent | Role::Operator | Role::Viewer | Role::Admin | Role::Metrics => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a certificate and writes `<stem>.pem` / `<stem>.key` next to a copy of the CA
    /// certificate in `dir`, returning the file set a process configures.
    pub fn issue_to(&self, dir: &Path, stem: &str, role: Role, name: &str, extra_names: &[String]) -> Result<TlsFiles, PkiError> {
        let issued = self.issue(role, name, extra_names)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let files = TlsFiles::in_dir(dir, stem);
        if !files.ca.exists() {
            write_file(&files.ca, &self.cert_pem, false)?;
        }
        write_file(&files.cert, &issued.cert_pem, false)?;
        write_file(&files.key, &issued.key_pem, true)?;
        Ok(files)
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    write_bytes(path, contents.as_bytes(), private)
}

fn write_bytes(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(contents).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::peer_identity;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn a_pkcs12_bundle_holds_the_key_the_certificate_and_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("t").unwrap();
        ca.write(dir.path()).unwrap();
        let files = ca.issue_to(dir.path(), "operator-vera", Role::Operator, "vera", &[]).unwrap();
        let out = dir.path().join("operator-vera.p12");
        write_pkcs12(&files, &out, "s3cret").unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let store = p12_keystore::KeyStore::from_pkcs12(&bytes, "s3cret", p12_keystore::Pkcs12ImportPolicy::Strict).unwrap();
        let (_, chain) = store.private_key_chain().expect("a key with its chain");
        let cert = rustls_pki_types::CertificateDer::from_pem_file(&files.cert).unwrap();
        let ca_cert = rustls_pki_types::CertificateDer::from_pem_file(&files.ca).unwrap();
        assert_eq!(chain.certs()[0].as_der(), cert.as_ref());
        assert_eq!(chain.certs()[1].as_der(), ca_cert.as_ref());
        let key = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(&files.key).unwrap();
        assert_eq!(chain.key().as_der(), key.secret_pkcs8_der());
        assert!(p12_keystore::KeyStore::from_pkcs12(&bytes, "wrong", p12_keystore::Pkcs12ImportPolicy::Strict).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o077, 0, "only its owner reads it");
        }
        // A key that is not PEM is named.
        std::fs::write(&files.key, "nonsense").unwrap();
        let e = write_pkcs12(&files, &out, "x").unwrap_err().to_string();
        assert!(e.contains("operator-vera.key"), "{e}");
    }

    #[test]
    fn issued_certificates_carry_role_and_name() {
        let ca = ClusterCa::generate("t").unwrap();
        for role in Role::ALL {
            let issued = ca.issue(role, "hv-07", &[]).unwrap();
            let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            let id = peer_identity(&der).unwrap();
            assert_eq!(id.role, role);
            assert_eq!(id.name, "hv-07");
        }
    }

    #[test]
    fn reloaded_ca_issues_certificates_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        ClusterCa::generate("t").unwrap().write(dir.path()).unwrap();
        let ca = ClusterCa::load(dir.path()).unwrap();
        let files = ca.issue_to(dir.path(), "coordinator", Role::Coordinator, "coord", &[]).unwrap();
        // The server configuration only builds when the CA file and the leaf agree.
        files.load().unwrap().server_config().unwrap();
        assert!(matches!(ClusterCa::generate("t").unwrap().write(dir.path()), Err(PkiError::Exists { .. })));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("hv-01.rack2", Role::Agent).is_ok());
        for bad in ["", "a/b", "-x", "a b", &"x".repeat(64)] {
            assert!(validate_name(bad, Role::Agent).is_err(), "{bad:?}");
        }
    }
}
