//! Tools for the front-door tests (TLS, auth, limits): test certificates made with the
//! `openssl` command line, raw HTTP over any stream, and sockets from a chosen source
//! address. The espfd under test itself, in process or as the binary, is `harness.rs`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::harness::TempDir;

// ---------------------------------------------------------------------------------------------
// Certificates

/// The kinds of private key a test certificate can have, each in the PEM encoding espfd must
/// accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// RSA 2048, `BEGIN PRIVATE KEY`.
    RsaPkcs8,
    /// RSA 2048, `BEGIN RSA PRIVATE KEY`.
    RsaPkcs1,
    /// EC P-256, `BEGIN EC PRIVATE KEY`.
    EcSec1,
}

/// A test CA in a temporary directory, issuing server certificates for 127.0.0.1/localhost.
pub struct Certs {
    pub dir: TempDir,
    pub ca: PathBuf,
    serial: Mutex<u32>,
}

/// A server certificate: the chain file (server certificate, then the CA) and its key file.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the `openssl` command line is needed to make test certificates and could not \
                 be run ({e}); install it (apt-get install openssl; .ci/run does this)"
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A fresh CA (EC P-256, valid two days).
    pub fn new() -> Certs {
        let dir = TempDir::new("certs");
        openssl(
            &dir.0,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=espfd test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let ca = dir.0.join("ca.pem");
        Certs {
            dir,
            ca,
            serial: Mutex::new(1),
        }
    }

    /// A server certificate for IP 127.0.0.1 and localhost with a new key of `kind`, issued by
    /// the CA; files `<name>.pem` (chain) and `<name>.key`.
    pub fn leaf(&self, name: &str, kind: Key) -> Leaf {
        self.issue(name, kind, "serverAuth")
    }

    /// A client certificate (mutual TLS), otherwise as [`Certs::leaf`].
    pub fn client_leaf(&self, name: &str, kind: Key) -> Leaf {
        self.issue(name, kind, "clientAuth")
    }

    fn issue(&self, name: &str, kind: Key, usage: &str) -> Leaf {
        let d = &self.dir.0;
        let key = format!("{name}.key");
        match kind {
            Key::RsaPkcs8 => openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                    &key,
                ],
            ),
            Key::RsaPkcs1 => {
                let tmp = format!("{name}.p8");
                openssl(
                    d,
                    &[
                        "genpkey",
                        "-algorithm",
                        "RSA",
                        "-pkeyopt",
                        "rsa_keygen_bits:2048",
                        "-out",
                        &tmp,
                    ],
                );
                openssl(d, &["rsa", "-in", &tmp, "-traditional", "-out", &key]);
            }
            Key::EcSec1 => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &key,
                ],
            ),
        }
        let want = match kind {
            Key::RsaPkcs8 => "-----BEGIN PRIVATE KEY-----",
            Key::RsaPkcs1 => "-----BEGIN RSA PRIVATE KEY-----",
            Key::EcSec1 => "-----BEGIN EC PRIVATE KEY-----",
        };
        let text = std::fs::read_to_string(d.join(&key)).unwrap();
        assert!(text.contains(want), "{kind:?} key is not {want}: {text}");

        let ext = format!("{name}.ext");
        std::fs::write(
            d.join(&ext),
            format!(
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
            ),
        )
        .unwrap();
        let csr = format!("{name}.csr");
        let only = format!("{name}.only.pem");
        openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                "/CN=localhost",
                "-out",
                &csr,
            ],
        );
        let serial = {
            let mut s = self.serial.lock().unwrap();
            *s += 1;
            s.to_string()
        };
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &only,
            ],
        );
        // The chain file: server certificate first, then the CA.
        let chain = format!(
            "{}{}",
            std::fs::read_to_string(d.join(&only)).unwrap(),
            std::fs::read_to_string(&self.ca).unwrap()
        );
        let cert = d.join(format!("{name}.pem"));
        std::fs::write(&cert, chain).unwrap();
        Leaf {
            cert,
            key: d.join(key),
        }
    }
}

impl Leaf {
    /// The DER of the server certificate (the first in the chain file).
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::pem_file_iter(&self.cert)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// Copies this certificate and key over `to`'s files (what an operator does before SIGHUP).
    pub fn install(&self, to: &Leaf) {
        std::fs::copy(&self.cert, &to.cert).unwrap();
        std::fs::copy(&self.key, &to.key).unwrap();
    }
}

/// A ureq agent that trusts only `ca`.
pub fn https_agent(ca: &Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// A rustls client configuration that trusts only `ca` and speaks only `versions`.
pub fn tls_client(
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` and completes a TLS handshake for 127.0.0.1.
pub fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Result<TlsClient, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tls_handshake(tcp, config)
}

/// Completes a TLS handshake for 127.0.0.1 on a connected socket.
pub fn tls_handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> Result<TlsClient, String> {
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// The server certificate a TLS client was shown.
pub fn peer_cert(s: &TlsClient) -> Vec<u8> {
    s.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// Writes a `GET path` (keep-alive) on `s` and reads one reply: (status, headers, body).
pub fn get_on(s: &mut impl ReadWrite, path: &str) -> (u16, String, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    s.flush().unwrap();
    read_reply(s).expect("a reply")
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads one reply with a Content-Length body; `None` if the stream ends first.
pub fn read_reply(s: &mut impl Read) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((status, head, String::from_utf8_lossy(&body).into_owned()))
}

/// Reads until the peer closes or `limit` passes; returns what arrived and whether the peer
/// closed (EOF or reset) rather than the limit passing.
pub fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

/// What the peer has done to a connection so far, seen without waiting: still open, or
/// closed after sending what is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Open,
    Closed(Vec<u8>),
}

/// Reads what has arrived on `s` without blocking and says whether the peer closed it.
pub fn peer_state(s: &TcpStream) -> Peer {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut r = s;
    let state = loop {
        match r.read(&mut chunk) {
            Ok(0) => break Peer::Closed(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break Peer::Open,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break Peer::Closed(got),
        }
    };
    s.set_nonblocking(false).unwrap();
    state
}

/// A TCP connection to `to` from the local address `from` (e.g. 127.0.0.2), which
/// std::net::TcpStream cannot choose.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path and
    // handed to TcpStream otherwise.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let src = sockaddr(from, 0);
        let dst = sockaddr(*to.ip(), to.port());
        if libc::bind(fd, &src as *const _ as *const libc::sockaddr, len) != 0
            || libc::connect(fd, &dst as *const _ as *const libc::sockaddr, len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}
