//! HTTPS for the gateway's listener: rustls (the process's one crypto provider, aws-lc-rs),
//! HTTP/2 and HTTP/1.1 offered through ALPN, and a certificate that can be replaced while
//! the process runs.
//!
//! The server configuration never holds a certificate itself: it asks a [`CertStore`] for
//! one at every handshake, and the store answers whatever it holds at that instant (an
//! `ArcSwap`, one atomic load). A reload — on `SIGHUP`, or when the files' modification
//! times change — reads and checks the new pair completely before swapping it in, so a
//! handshake sees either the old pair or the new one, never a half-written file; a pair
//! that does not load (unreadable, not PEM, key not matching the certificate) leaves the
//! old one in place and logs an error. Established connections keep the session they
//! negotiated: nothing about them changes at a reload.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// The certificate chain and private key files, PEM (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The certificate every new handshake is answered with; replaceable at any time.
#[derive(Debug)]
pub struct CertStore {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// Modification times of the pair last loaded (or last tried), to notice file changes.
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// Read and check a certificate chain and its key: both PEM, the key one the process's
/// provider can sign with, and the key matching the leaf certificate.
fn load(files: &TlsFiles) -> io::Result<CertifiedKey> {
    let cert = std::fs::read(&files.cert)?;
    let key = std::fs::read(&files.key)?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("the TLS certificate file is not PEM", e))?;
    if chain.is_empty() {
        return Err(invalid(
            "the TLS certificate file",
            "holds no CERTIFICATE block",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| invalid("the TLS key file holds no PEM private key", e))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| invalid("the TLS key does not fit the certificate", e))
}

fn mtimes(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

impl CertStore {
    /// Load the pair once; a pair that does not load is a start-up error.
    pub fn open(files: TlsFiles) -> io::Result<Arc<Self>> {
        let seen = mtimes(&files);
        let key = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(seen),
        }))
    }

    /// Read the files again and swap the new pair in; on any error the old pair stays.
    pub fn reload(&self) -> io::Result<()> {
        let stamp = mtimes(&self.files);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        let key = load(&self.files)?;
        self.current.store(Arc::new(key));
        metrics::counter!("sluice_tls_reloads_total", "outcome" => "ok").increment(1);
        Ok(())
    }

    /// Reload when the files' modification times differ from the last look.
    fn reload_if_changed(&self) -> Option<io::Result<()>> {
        let stamp = mtimes(&self.files);
        let changed = *self.seen.lock().unwrap_or_else(|p| p.into_inner()) != stamp;
        changed.then(|| self.reload())
    }

    /// The leaf certificate handed to new handshakes (DER), for tests and logs.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.load().cert.first().cloned()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn log_reload(result: io::Result<()>, why: &str) {
    match result {
        Ok(()) => tracing::info!(trigger = why, "TLS certificate reloaded"),
        Err(e) => {
            metrics::counter!("sluice_tls_reloads_total", "outcome" => "error").increment(1);
            tracing::error!(
                trigger = why,
                "TLS certificate reload failed; the previous certificate stays in use: {e}"
            );
        }
    }
}

/// Reload `store` on every `SIGHUP` and whenever its files change (checked every `poll`),
/// until `shutdown` turns true.
pub fn spawn_reloader(
    store: Arc<CertStore>,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no SIGHUP handler, TLS reload follows file changes only: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = hangup => log_reload(store.reload(), "SIGHUP"),
                _ = tick.tick() => {
                    if let Some(r) = store.reload_if_changed() {
                        log_reload(r, "file change");
                    }
                }
            }
        }
    })
}

/// What the listener needs to speak TLS: the acceptor and how long a handshake may take.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
    pub handshake_timeout: Duration,
}

impl Tls {
    /// A server configuration answering from `store`, offering h2 then http/1.1.
    pub fn new(store: Arc<CertStore>, handshake_timeout: Duration) -> Self {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
            handshake_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_pair_that_is_not_pem_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: write(dir.path(), "c.pem", "not a certificate"),
            key: write(dir.path(), "k.pem", "not a key"),
        };
        assert!(CertStore::open(files).is_err());
    }
}
