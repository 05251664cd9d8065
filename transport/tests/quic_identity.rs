//! QUIC between nodes is bound to their Ed25519 node keys: each side learns the
//! other's node id, a client reaches only the node it names, and a client that
//! cannot prove a node key is refused.

use hubcast_keys::{NodeId, NodeKey};
use hubcast_transport::quic::{node_id_of, peer_node_id, NodeEndpoint, ALPN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn node() -> (NodeKey, NodeEndpoint) {
    let key = NodeKey::generate(&mut rand::rngs::OsRng);
    let ep = NodeEndpoint::bind("127.0.0.1:0".parse().unwrap(), &key).unwrap();
    (key, ep)
}

#[tokio::test]
async fn two_nodes_learn_each_others_ids_and_talk() {
    let (ka, a) = node();
    let (kb, b) = node();
    let a_addr = a.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let conn = a.accept().await.unwrap().await.unwrap();
        let who = peer_node_id(&conn);
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let msg = recv.read_to_end(1024).await.unwrap();
        send.write_all(&msg).await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
        who
    });
    let conn = tokio::time::timeout(LIMIT, b.connect(a_addr, ka.id()).unwrap()).await.unwrap().unwrap();
    assert_eq!(peer_node_id(&conn), Some(ka.id()), "the client sees the server's node id");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"have-map please").await.unwrap();
    send.finish().unwrap();
    let echo = tokio::time::timeout(LIMIT, recv.read_to_end(1024)).await.unwrap().unwrap();
    assert_eq!(echo, b"have-map please");
    conn.close(0u32.into(), b"done");
    let seen_by_server = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(seen_by_server, Some(kb.id()), "the server sees the client's node id");
}

#[tokio::test]
async fn a_client_reaches_only_the_node_it_names() {
    let (_, a) = node();
    let (_, b) = node();
    let a_addr = a.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = a.accept().await {
            let _ = incoming.await;
        }
    });
    let impostor = NodeId([9; 32]);
    let result = tokio::time::timeout(LIMIT, b.connect(a_addr, impostor).unwrap()).await.unwrap();
    assert!(result.is_err(), "connected to a node that is not the one named");
}

/// Accepts any server certificate: the point is the client's own certificate.
#[derive(Debug)]
struct AcceptAnything(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[tokio::test]
async fn a_client_without_a_node_key_is_refused() {
    let (_, a) = node();
    let a_addr = a.local_addr().unwrap();
    let accepted = tokio::spawn(async move {
        let incoming = a.accept().await.unwrap();
        incoming.await.is_ok()
    });
    // An ECDSA certificate: valid TLS, but no Ed25519 node key behind it.
    let ecdsa = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    assert_eq!(node_id_of(ecdsa.cert.der()), None);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything(algs)))
        .with_client_auth_cert(
            vec![ecdsa.cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ecdsa.signing_key.serialize_der())),
        )
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let attempt = client.connect(a_addr, "hubcast-node").unwrap();
    // The handshake may complete on the client's side before the server judges
    // its certificate; what matters is that the server never accepts it and the
    // connection does not live.
    if let Ok(Ok(conn)) = tokio::time::timeout(LIMIT, attempt).await {
        let closed = tokio::time::timeout(LIMIT, conn.closed()).await;
        assert!(closed.is_ok(), "the server kept a connection from a client without a node key");
    }
    assert!(!tokio::time::timeout(LIMIT, accepted).await.unwrap().unwrap(), "server accepted it");
}
