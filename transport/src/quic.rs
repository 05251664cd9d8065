//! The QUIC endpoint between hubs, with TLS bound to each node's Ed25519 key.
//!
//! Every node presents a self-signed certificate made from its node key. The
//! certificate is only a carrier: what counts is its subject public key, which
//! must be Ed25519, and TLS 1.3's CertificateVerify, which proves the peer holds
//! the matching private key. So a peer *is* its node id:
//!
//! - a client names the node id it expects, and the connection fails unless the
//!   server proves that key;
//! - a server requires a client certificate on every connection (no
//!   unauthenticated peer traffic) and learns the client's node id from it
//!   ([`peer_node_id`]).
//!
//! The public key is read with a full X.509 parser, the same key rustls verifies
//! the handshake signature against; no certificate chain or name is checked.

use hubcast_keys::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// ALPN of hubcast's peer protocol, version 1.
pub const ALPN: &[u8] = b"hubcast/1";
/// The name every node's certificate carries; identity is the key, not the name.
const CERT_NAME: &str = "hubcast-node";
/// OID 1.3.101.112: Ed25519.
const ED25519_OID: &str = "1.3.101.112";

#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("making the node certificate: {0}")]
    Certificate(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC setup: {0}")]
    Config(String),
    #[error("binding the QUIC endpoint on {addr}: {source} (is the port in use? pick another)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: quinn::ConnectError,
    },
}

/// The node id a certificate binds: its Ed25519 subject public key. `None` for
/// anything else (another algorithm, a malformed certificate).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<NodeId> {
    let (rest, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let spki = &parsed.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm.to_id_string() != ED25519_OID {
        return None;
    }
    let key: [u8; 32] = spki.subject_public_key.data.as_ref().try_into().ok()?;
    Some(NodeId(key))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certificate(key: &NodeKey) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), QuicError> {
    let pkcs8 = PrivatePkcs8KeyDer::from(key.pkcs8_der());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| QuicError::Certificate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![CERT_NAME.to_owned()])
        .map_err(|e| QuicError::Certificate(e.to_string()))?;
    let cert = params.self_signed(&pair).map_err(|e| QuicError::Certificate(e.to_string()))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

fn verify_signature(
    algs: &WebPkiSupportedAlgorithms,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoSignatureSchemesInCommon));
    }
    verify_tls13_signature(message, cert, dss, algs)
}

/// QUIC is TLS 1.3 only.
fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic))
}

/// Node keys are Ed25519, so is every handshake signature.
fn node_schemes() -> Vec<SignatureScheme> {
    vec![SignatureScheme::ED25519]
}

fn wrong_key() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// Client side: the server must prove the expected node key.
#[derive(Debug)]
struct ExpectNode {
    expected: NodeId,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectNode {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match node_id_of(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            _ => Err(wrong_key()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        node_schemes()
    }
}

/// Server side: every client must present an Ed25519 node certificate.
#[derive(Debug)]
struct AnyNode {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyNode {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of(end_entity).map(|_| ClientCertVerified::assertion()).ok_or_else(wrong_key)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(&self.algs, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        node_schemes()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }
}

/// A node's QUIC endpoint: accepts peers (mutually authenticated) and connects
/// to peers by address and node id.
pub struct NodeEndpoint {
    endpoint: quinn::Endpoint,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    id: NodeId,
}

impl NodeEndpoint {
    /// Bind on `addr` (port 0 picks one) as the node `key`.
    pub fn bind(addr: SocketAddr, key: &NodeKey) -> Result<NodeEndpoint, QuicError> {
        let (cert, private) = certificate(key)?;
        let PrivateKeyDer::Pkcs8(pkcs8) = private else {
            return Err(QuicError::Certificate("node key is not PKCS#8".into()));
        };
        let provider = provider();
        let algs = provider.signature_verification_algorithms;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyNode { algs }))
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(pkcs8.clone_key()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| QuicError::Config(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport());
        let endpoint =
            quinn::Endpoint::server(server, addr).map_err(|source| QuicError::Bind { addr, source })?;
        Ok(NodeEndpoint { endpoint, cert, key: pkcs8, id: key.id() })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Connect to the node `expected` at `addr`. Fails unless the peer proves
    /// that node key.
    pub fn connect(&self, addr: SocketAddr, expected: NodeId) -> Result<quinn::Connecting, QuicError> {
        self.connect_with(addr, expected, transport())
    }

    /// [`NodeEndpoint::connect`] for a long-lived connection whose loss must be
    /// noticed fast: keep-alives every `idle / 3`, and the connection is lost
    /// after `idle` without a packet from the peer.
    pub fn connect_watchful(
        &self,
        addr: SocketAddr,
        expected: NodeId,
        idle: std::time::Duration,
    ) -> Result<quinn::Connecting, QuicError> {
        let mut t = transport_config();
        t.keep_alive_interval(Some(idle / 3));
        let idle = quinn::IdleTimeout::try_from(idle).map_err(|e| QuicError::Config(e.to_string()))?;
        t.max_idle_timeout(Some(idle));
        self.connect_with(addr, expected, Arc::new(t))
    }

    fn connect_with(
        &self,
        addr: SocketAddr,
        expected: NodeId,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::Connecting, QuicError> {
        let provider = provider();
        let algs = provider.signature_verification_algorithms;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectNode { expected, algs }))
            .with_client_auth_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| QuicError::Config(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport);
        self.endpoint
            .connect_with(config, addr, CERT_NAME)
            .map_err(|source| QuicError::Connect { addr, source })
    }

    /// The next incoming connection attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }
}

/// Accept connections until `cancel`. Each one that completes the handshake is
/// handed, with the node id its certificate proved, to `handle` on a task of
/// its own, which `cancel` also ends.
pub async fn accept_each<F, Fut>(endpoint: &NodeEndpoint, cancel: CancellationToken, handle: F)
where
    F: Fn(quinn::Connection, NodeId) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = cancel.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let (cancel, handle) = (cancel.clone(), handle.clone());
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("QUIC handshake failed: {e}");
                    return;
                }
            };
            // The handshake required a node certificate: this is its key.
            let Some(id) = peer_node_id(&conn) else { return };
            tokio::select! {
                _ = handle(conn, id) => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Streams a peer may have open at once: each is one request, so this caps a
/// peer's concurrent requests.
pub const MAX_STREAMS_PER_PEER: u32 = 32;

fn transport() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config())
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_PEER.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    t.max_idle_timeout(Some(quinn::VarInt::from_u32(30_000).into())); // ms
                                                                      // A hub's repair burst is a few MB: let one stream use the link.
    t.stream_receive_window((8u32 << 20).into());
    t.receive_window((16u32 << 20).into());
    t.send_window(16 << 20);
    t
}

/// The node id of the peer on an established connection.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(node_id_of)
}
