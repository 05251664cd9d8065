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
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// What [`accept_each`] did on this endpoint.
    pub counters: Arc<AcceptCounters>,
    /// The bounds [`accept_each`] keeps; set before accepting.
    pub limits: AcceptLimits,
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
        // Attempts waiting for the accept loop: it answers each at once, so
        // a short queue is enough, and its memory stays small.
        server.max_incoming(MAX_INCOMING);
        server.incoming_buffer_size_total(MAX_INCOMING as u64 * 4096);
        let endpoint =
            quinn::Endpoint::server(server, addr).map_err(|source| QuicError::Bind { addr, source })?;
        Ok(NodeEndpoint {
            endpoint,
            cert,
            key: pkcs8,
            id: key.id(),
            counters: Default::default(),
            limits: AcceptLimits::default(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// Connect to the node `expected` at `addr`. Fails unless the peer proves
    /// that node key.
    ///
    /// The side that connects only asks (requests, NAKs, registrations,
    /// subscriptions, forest messages); what flows in bulk, answers and
    /// feeds, flows from the side that accepted. Its window is fixed
    /// ([`crate::congestion::Fixed`], [`ASKER_WINDOW`] datagrams): at 50%
    /// loss each way [`crate::congestion::QueueAware`] read the delay of
    /// lost-and-resent frames as a queue and shrank a hub's connection to the
    /// origin to two datagrams; with two in flight a loss is found only by
    /// the probe timeout (RFC 9002's packet threshold needs three later
    /// packets acknowledged), and NAKs waited seconds behind it.
    pub fn connect(&self, addr: SocketAddr, expected: NodeId) -> Result<quinn::Connecting, QuicError> {
        self.connect_with(addr, expected, Arc::new(asker_config()))
    }

    /// [`NodeEndpoint::connect`] for a long-lived connection whose loss must be
    /// noticed fast: the connection is lost after `idle` without a packet
    /// from the peer. Keep-alives go every `idle / 30` (at least 50 ms): on a
    /// link that loses half its packets a keep-alive and its ACK both arrive
    /// one time in four, and with one every `idle / 3` a live bridge went
    /// silent for `idle` 42% of the time (0.75³); with 30, 0.02%. This side
    /// sends only control traffic: its window is fixed
    /// ([`crate::congestion::Fixed`]).
    pub fn connect_watchful(
        &self,
        addr: SocketAddr,
        expected: NodeId,
        idle: std::time::Duration,
    ) -> Result<quinn::Connecting, QuicError> {
        let mut t = asker_config();
        t.keep_alive_interval(Some((idle / 30).max(std::time::Duration::from_millis(50))));
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

/// Bounds on the connections a node accepts. A handshake holds tens of KiB
/// until it ends, so attempts that never finish must not pile up.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Handshakes in progress at once; past it, an attempt from an address
    /// not yet validated gets a Retry, one from a validated address is
    /// refused. Default 256.
    pub max_handshakes: usize,
    /// Past this many handshakes in progress, every attempt from an address
    /// not yet validated gets a Retry first: a spoofed source never answers
    /// it, and the hub keeps no state for it. Default 32.
    pub retry_above: usize,
    /// Handshakes in progress from one IP address. Default 16.
    pub max_handshakes_per_ip: usize,
    /// Connections established at once; past it, new attempts are refused.
    /// Default 1024.
    pub max_connections: usize,
    /// A handshake not finished in this long is dropped. Default 5 s.
    pub handshake_timeout: std::time::Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        AcceptLimits {
            max_handshakes: 256,
            retry_above: 32,
            max_handshakes_per_ip: 16,
            max_connections: 1024,
            handshake_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// What the accept path did, for status and metrics.
#[derive(Debug, Default)]
pub struct AcceptCounters {
    pub handshakes: AtomicU64,
    pub connections: AtomicU64,
    pub retried: AtomicU64,
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
}

/// Handshakes and connections in progress, by the accept loop and its tasks.
#[derive(Default)]
struct InProgress {
    handshakes: usize,
    per_ip: HashMap<IpAddr, usize>,
    connections: usize,
}

/// A handshake's place: given back when its task ends, however it ends
/// (an aborted task included).
struct HandshakeSlot {
    state: Arc<Mutex<InProgress>>,
    ip: IpAddr,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.handshakes = s.handshakes.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

/// An established connection's place.
struct ConnectionSlot(Arc<Mutex<InProgress>>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.connections = s.connections.saturating_sub(1);
    }
}

/// Accept connections until `cancel`, within the endpoint's `limits`. Each
/// one that completes the handshake is handed, with the node id its
/// certificate proved, to `handle` on a task of its own. The tasks are owned:
/// `cancel` ends every handshake and connection at once, and closes the
/// endpoint, so a node stops promptly whatever its peers do.
pub async fn accept_each<F, Fut>(endpoint: &NodeEndpoint, cancel: CancellationToken, handle: F)
where
    F: Fn(quinn::Connection, NodeId) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    accept_within(endpoint, endpoint.limits, endpoint.counters.clone(), cancel, handle).await
}

/// [`accept_each`] with the given limits and counters.
pub async fn accept_within<F, Fut>(
    endpoint: &NodeEndpoint,
    limits: AcceptLimits,
    counters: Arc<AcceptCounters>,
    cancel: CancellationToken,
    handle: F,
) where
    F: Fn(quinn::Connection, NodeId) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(Mutex::new(InProgress::default()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let ip = incoming.remote_address().ip();
        let validated = incoming.remote_address_validated();
        let (handshakes, from_ip, connections) = {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            (s.handshakes, s.per_ip.get(&ip).copied().unwrap_or(0), s.connections)
        };
        let full = handshakes >= limits.max_handshakes
            || from_ip >= limits.max_handshakes_per_ip
            || connections >= limits.max_connections;
        if !validated && incoming.may_retry() && (full || handshakes >= limits.retry_above) {
            // Stateless: the hub keeps nothing until the address answers.
            if incoming.retry().is_ok() {
                counters.retried.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if full {
            incoming.refuse();
            counters.refused.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(connecting) = incoming.accept() else { continue };
        let slot = {
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            s.handshakes += 1;
            *s.per_ip.entry(ip).or_default() += 1;
            HandshakeSlot { state: state.clone(), ip }
        };
        counters.handshakes.fetch_add(1, Ordering::Relaxed);
        let (handle, counters, state) = (handle.clone(), counters.clone(), state.clone());
        tasks.spawn(async move {
            let conn = match tokio::time::timeout(limits.handshake_timeout, connecting).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!("QUIC handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            drop(slot);
            // The handshake required a node certificate: this is its key.
            let Some(id) = peer_node_id(&conn) else { return };
            let _slot = {
                state.lock().unwrap_or_else(|p| p.into_inner()).connections += 1;
                ConnectionSlot(state)
            };
            counters.connections.fetch_add(1, Ordering::Relaxed);
            handle(conn, id).await;
        });
    }
    // Every handshake and connection ends now; the endpoint tells peers so.
    tasks.shutdown().await;
    endpoint.endpoint.close(0u32.into(), b"shutting down");
}

/// Connection attempts quinn queues for the accept loop.
const MAX_INCOMING: usize = 1024;

/// Streams a peer may have open at once: each is one request, so this caps a
/// peer's concurrent requests.
pub const MAX_STREAMS_PER_PEER: u32 = 32;

fn transport() -> Arc<quinn::TransportConfig> {
    Arc::new(transport_config())
}

/// The window of the side that connects, in full-size datagrams.
pub const ASKER_WINDOW: u64 = 32;

/// [`transport_config`] for the side that connects: a fixed window.
fn asker_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    t.congestion_controller_factory(Arc::new(crate::congestion::FixedConfig { datagrams: ASKER_WINDOW }));
    t
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
    // Hubs are mostly near each other: a handshake's first probe goes after
    // about 0.3 s, not 1 s (at 50% loss each way a subscription's handshake
    // waits out one or two).
    t.initial_rtt(std::time::Duration::from_millis(100));
    // A home's access link may lose a fifth of its packets or more at
    // random: loss with no queue behind it does not shrink the window.
    t.congestion_controller_factory(Arc::new(crate::congestion::QueueAwareConfig));
    t
}

/// The node id of the peer on an established connection.
pub fn peer_node_id(conn: &quinn::Connection) -> Option<NodeId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().and_then(node_id_of)
}
