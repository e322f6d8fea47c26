//! The run's certificate authority and the certificates it issues, by
//! name. Every key is Ed25519, its seed derived from the scenario's name
//! and the certificate's name (SHA-256), serial numbers from the
//! certificate's name, validity fixed: every run of a scenario makes the
//! same certificates, byte for byte, and no key is ever stored in the
//! repository (they are made again on each run).
//!
//! Knows certificates and their files; nothing of who serves them.

use std::collections::BTreeMap;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, PKCS_ED25519,
};
use ring::digest::{digest, SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::spec::CertSpec;

/// A certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate `{name}`: {message}")]
    Cert { name: String, message: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no certificate `{0}` in the run's CA")]
    Unknown(String),
}

/// One issued certificate with its key.
#[derive(Clone)]
pub struct Issued {
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    /// PKCS#8 (RFC 8410 v1) of the Ed25519 seed.
    pub key_der: Vec<u8>,
    pub key_pem: String,
}

impl Issued {
    /// The chain rustls presents (the certificate alone: peers trust the CA).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The run's CA and its certificates.
#[derive(Clone)]
pub struct Pki {
    pub ca: Issued,
    pub certs: BTreeMap<String, Issued>,
}

/// The validity of every certificate: fixed, so nothing depends on the day.
const NOT_BEFORE: (i32, u8, u8) = (2025, 1, 1);
const NOT_AFTER: (i32, u8, u8) = (2035, 1, 1);

/// SHA-256 of the parts, each ended by a 0 byte, after a fixed label.
fn derive(parts: &[&str]) -> [u8; 32] {
    let mut m = b"hoplab pki v1\0".to_vec();
    for p in parts {
        m.extend_from_slice(p.as_bytes());
        m.push(0);
    }
    let d = digest(&SHA256, &m);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// PKCS#8 v1 (RFC 8410) of an Ed25519 private key seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// The key pair of certificate `name` of scenario `scenario`.
fn key_pair(scenario: &str, name: &str) -> Result<(KeyPair, Vec<u8>), rcgen::Error> {
    let der = ed25519_pkcs8(&derive(&["key", scenario, name]));
    let kp = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.clone()),
        &PKCS_ED25519,
    )?;
    Ok((kp, der))
}

/// 8 bytes from the name, positive and without a leading zero byte.
fn serial(scenario: &str, name: &str) -> SerialNumber {
    let d = derive(&["serial", scenario, name]);
    let mut s = [0u8; 8];
    s.copy_from_slice(&d[..8]);
    s[0] = (s[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&s)
}

fn base_params(
    sans: Vec<String>,
    cn: &str,
    serial: SerialNumber,
) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(sans)?;
    p.not_before = rcgen::date_time_ymd(NOT_BEFORE.0, NOT_BEFORE.1, NOT_BEFORE.2);
    p.not_after = rcgen::date_time_ymd(NOT_AFTER.0, NOT_AFTER.1, NOT_AFTER.2);
    p.serial_number = Some(serial);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    Ok(p)
}

fn issued(cert: &rcgen::Certificate, key: &KeyPair, key_der: Vec<u8>) -> Issued {
    Issued {
        cert_der: cert.der().to_vec(),
        cert_pem: cert.pem(),
        key_der,
        key_pem: key.serialize_pem(),
    }
}

impl Pki {
    /// The CA of scenario `scenario` and the certificates `certs`.
    pub fn new(scenario: &str, certs: &BTreeMap<String, CertSpec>) -> Result<Pki, PkiError> {
        let err = |name: &str| {
            let name = name.to_string();
            move |e: rcgen::Error| PkiError::Cert {
                name,
                message: e.to_string(),
            }
        };
        let ca_name = "hoplab CA";
        let (ca_key, ca_key_der) = key_pair(scenario, "(ca)").map_err(err(ca_name))?;
        let mut ca_params = base_params(
            Vec::new(),
            &format!("hoplab CA of {scenario}"),
            serial(scenario, "(ca)"),
        )
        .map_err(err(ca_name))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err(ca_name))?;
        let ca = issued(&ca_cert, &ca_key, ca_key_der);
        let issuer = Issuer::new(ca_params, ca_key);
        let mut out = BTreeMap::new();
        for (name, spec) in certs {
            let sans: Vec<String> = spec
                .dns
                .iter()
                .cloned()
                .chain(spec.ip.iter().map(|a| a.to_string()))
                .collect();
            let (key, key_der) = key_pair(scenario, name).map_err(err(name))?;
            let mut p = base_params(sans, name, serial(scenario, name)).map_err(err(name))?;
            p.is_ca = IsCa::NoCa;
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = if spec.self_signed {
                p.self_signed(&key)
            } else {
                p.signed_by(&key, &issuer)
            }
            .map_err(err(name))?;
            out.insert(name.clone(), issued(&cert, &key, key_der));
        }
        Ok(Pki { ca, certs: out })
    }

    pub fn get(&self, name: &str) -> Result<&Issued, PkiError> {
        self.certs
            .get(name)
            .ok_or_else(|| PkiError::Unknown(name.to_string()))
    }

    /// Write `dir/ca.crt`, and for each certificate `NAME.crt`, `NAME.key`
    /// (mode 0600) and `NAME.pem` (certificate, then key).
    pub fn write(&self, dir: &Path) -> Result<(), PkiError> {
        use std::os::unix::fs::OpenOptionsExt;
        let write = |name: String, text: &str, mode: u32| {
            let path = dir.join(name);
            let w = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(mode)
                    .open(&path)?;
                f.write_all(text.as_bytes())
            };
            w().map_err(|source| PkiError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write("ca.crt".into(), &self.ca.cert_pem, 0o644)?;
        for (n, c) in &self.certs {
            write(format!("{n}.crt"), &c.cert_pem, 0o644)?;
            write(format!("{n}.key"), &c.key_pem, 0o600)?;
            write(
                format!("{n}.pem"),
                &format!("{}{}", c.cert_pem, c.key_pem),
                0o600,
            )?;
        }
        Ok(())
    }

    /// A root store holding the run's CA only.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut r = rustls::RootCertStore::empty();
        r.add(CertificateDer::from(self.ca.cert_der.clone()))
            .expect("the CA certificate parses");
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certs() -> BTreeMap<String, CertSpec> {
        let mut m = BTreeMap::new();
        m.insert(
            "server1".to_string(),
            CertSpec {
                dns: vec!["server1.internal".into()],
                ip: vec!["10.0.2.10".parse().unwrap()],
                self_signed: false,
            },
        );
        m.insert("client1".to_string(), CertSpec::named("client1"));
        m
    }

    #[test]
    fn same_certificates_every_time() {
        let a = Pki::new("s", &certs()).unwrap();
        let b = Pki::new("s", &certs()).unwrap();
        assert_eq!(a.ca.cert_der, b.ca.cert_der);
        for n in ["server1", "client1"] {
            assert_eq!(a.get(n).unwrap().cert_der, b.get(n).unwrap().cert_der);
            assert_eq!(a.get(n).unwrap().key_der, b.get(n).unwrap().key_der);
        }
        let c = Pki::new("other", &certs()).unwrap();
        assert_ne!(
            a.get("server1").unwrap().key_der,
            c.get("server1").unwrap().key_der
        );
        assert!(a.get("nope").is_err());
    }

    #[test]
    fn issued_by_the_ca_and_verified_by_webpki() {
        use rustls::client::danger::ServerCertVerifier;
        let p = Pki::new("s", &certs()).unwrap();
        let roots = std::sync::Arc::new(p.roots());
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from(p.get("server1").unwrap().cert_der.clone());
        let now = rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            1_800_000_000,
        ));
        for name in ["server1.internal", "10.0.2.10"] {
            let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
            v.verify_server_cert(&leaf, &[], &sn, &[], now).unwrap();
        }
        let wrong = rustls::pki_types::ServerName::try_from("other.example").unwrap();
        assert!(v.verify_server_cert(&leaf, &[], &wrong, &[], now).is_err());
    }
}
