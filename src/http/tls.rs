//! HTTPS for the listener: the certificate and key files, the rustls server configuration built
//! from them, reloading on SIGHUP, and the server side of the handshake.
//!
//! rustls 0.23 with the ring provider, TLS 1.2 and 1.3 only. Keys may be PKCS#8
//! (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`).
//! Not here: client certificates, SNI with several certificates, ALPN (espfd speaks
//! HTTP/1.1 only, and a client that offers ALPN is simply not answered with one).

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, StreamOwned};

use crate::error::Error;

/// The certificate and key files of HTTPS (`ESPFD_TLS_CERT`, `ESPFD_TLS_KEY`). They are read
/// when the service starts and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The listener's TLS settings: where the certificate and key live, and the configuration
/// built from them that new connections use. Connections already open keep the configuration
/// they started with.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

/// One successful load of the files.
#[derive(Clone)]
struct Loaded {
    config: Arc<ServerConfig>,
    fingerprint: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the certificate chain (`ESPFD_TLS_CERT`) and private key (`ESPFD_TLS_KEY`). The
    /// error names the variable and file at fault; a key that does not belong to the
    /// certificate names both files.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, Error> {
        let loaded = load(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(loaded),
        })
    }

    /// Reads the files again and, if they are good, uses them for new connections. If they
    /// are not, the previous certificate stays in use and the error says why. The listener
    /// and open connections are not touched either way.
    pub fn reload(&self) -> Result<(), Error> {
        let loaded = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// The SHA-256 fingerprint of the certificate in use (hex, colon-separated), for logs.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint
    }

    /// The certificate and key files.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }

    fn read(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The configuration a new connection uses.
    fn config(&self) -> Arc<ServerConfig> {
        self.read().config
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Loaded, Error> {
    let cert_name = cert_path.display();
    let key_name = key_path.display();
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| Error::io(format!("ESPFD_TLS_CERT: cannot read {cert_name}"), e))?;
    let key_pem = std::fs::read(key_path)
        .map_err(|e| Error::io(format!("ESPFD_TLS_KEY: cannot read {key_name}"), e))?;

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Other(format!("ESPFD_TLS_CERT: {cert_name}: invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Other(format!(
            "ESPFD_TLS_CERT: {cert_name} holds no PEM certificate (BEGIN CERTIFICATE)"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        Error::Other(format!(
            "ESPFD_TLS_KEY: {key_name} holds no usable private key \
             (PKCS#8, PKCS#1 or SEC1 PEM expected): {e}"
        ))
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| Error::Other(format!("ESPFD_TLS_KEY: {key_name}: unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(Error::Other(format!(
                "ESPFD_TLS_KEY: the key in {key_name} does not belong to the certificate in \
                 {cert_name} (ESPFD_TLS_CERT)"
            )))
        }
        Err(e) => {
            return Err(Error::Other(format!(
                "ESPFD_TLS_CERT: {cert_name} and ESPFD_TLS_KEY: {key_name}: cannot check that \
                 the key belongs to the certificate: {e}"
            )))
        }
    }

    let fingerprint = fingerprint(&chain[0]);
    let config = server_config(provider, chain, key).map_err(|e| {
        Error::Other(format!(
            "ESPFD_TLS_CERT: {cert_name}, ESPFD_TLS_KEY: {key_name}: {e}"
        ))
    })?;
    Ok(Loaded {
        config: Arc::new(config),
        fingerprint,
    })
}

fn server_config(
    provider: Arc<CryptoProvider>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = String::with_capacity(95);
    for (i, b) in digest.as_ref().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// A TLS connection over TCP, as the connection code reads and writes it.
pub(crate) type TlsStream = StreamOwned<ServerConnection, TcpStream>;

/// Why a handshake did not complete.
pub(crate) struct HandshakeFailed {
    /// What happened, for the log.
    pub why: String,
    /// The peer connected and closed without sending a byte (a port probe or a TCP health
    /// check): not worth more than a debug line.
    pub silent_close: bool,
}

impl From<String> for HandshakeFailed {
    fn from(why: String) -> Self {
        HandshakeFailed {
            why,
            silent_close: false,
        }
    }
}

impl From<&str> for HandshakeFailed {
    fn from(why: &str) -> Self {
        why.to_string().into()
    }
}

/// Runs the server side of the handshake on `tcp` within `timeout`. Every failure ends the
/// attempt: an error from rustls (after sending its alert), the peer closing or sending
/// close_notify, or the deadline — so a peer can never make this loop spin.
pub(crate) fn accept(
    tls: &Tls,
    mut tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsStream, HandshakeFailed> {
    let mut conn = ServerConnection::new(tls.config()).map_err(|e| e.to_string())?;
    let mut received = 0usize;
    let deadline = Instant::now() + timeout;
    let left = |deadline: Instant| {
        let d = deadline.saturating_duration_since(Instant::now());
        (!d.is_zero()).then_some(d)
    };
    const TOO_SLOW: &str = "not completed within ESPFD_TLS_HANDSHAKE_TIMEOUT";
    while conn.is_handshaking() {
        while conn.wants_write() {
            tcp.set_write_timeout(Some(left(deadline).ok_or(TOO_SLOW)?))
                .map_err(|e| e.to_string())?;
            match conn.write_tls(&mut tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(TOO_SLOW.into()),
                Err(e) => return Err(format!("writing: {e}").into()),
            }
        }
        if !conn.is_handshaking() {
            break;
        }
        if !conn.wants_read() {
            return Err("handshake stalled".into());
        }
        tcp.set_read_timeout(Some(left(deadline).ok_or(TOO_SLOW)?))
            .map_err(|e| e.to_string())?;
        match conn.read_tls(&mut tcp) {
            Ok(0) => {
                return Err(HandshakeFailed {
                    why: "peer closed the connection during the handshake".into(),
                    silent_close: received == 0,
                })
            }
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(TOO_SLOW.into()),
            Err(e) => return Err(format!("reading: {e}").into()),
        }
        match conn.process_new_packets() {
            Ok(state) if state.peer_has_closed() => {
                return Err("peer sent close_notify during the handshake".into())
            }
            Ok(_) => {}
            Err(e) => {
                // Tell the peer why (the alert rustls queued), then give up.
                let _ = tcp.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = conn.write_tls(&mut tcp);
                return Err(e.to_string().into());
            }
        }
    }
    Ok(StreamOwned::new(conn, tcp))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A connection's byte stream, plain TCP or TLS over TCP. Timeouts are set on the TCP socket
/// underneath.
pub(crate) trait Transport: Read + Write {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream;

    /// Ends the stream cleanly before the socket is closed (TLS: sends close_notify).
    fn close(&mut self) {}
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }

    fn close(&mut self) {
        self.conn.send_close_notify();
        // Bounded by the socket's write timeout; a peer that does not read is not waited for
        // beyond it.
        while self.conn.wants_write() {
            if !matches!(self.conn.write_tls(&mut self.sock), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_name_the_variable_and_file() {
        let e = Tls::load(
            Path::new("/nonexistent/cert.pem"),
            Path::new("/nonexistent/key.pem"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ESPFD_TLS_CERT") && e.contains("/nonexistent/cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let dir = std::env::temp_dir().join(format!("espfd-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let e = Tls::load(&cert, &key).unwrap_err().to_string();
        assert!(
            e.contains("ESPFD_TLS_CERT") && e.contains("no PEM certificate"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
