//! libp2p's TLS handshake (`/tls/1.0.0`), preferring AES-GCM where `libp2p-tls` prefers
//! ChaCha20-Poly1305.
//!
//! `libp2p-tls` offers ChaCha20-Poly1305 first and follows the dialer's order, so two Rust
//! peers always settle on ChaCha. On a CPU with AES instructions AES-GCM seals several times
//! faster, and bulk shard traffic spends a large part of its CPU in the link cipher. This module
//! speaks the same protocol (TLS 1.3 only, ALPN `libp2p`, one self-signed certificate carrying
//! the libp2p extension, no SNI, mandatory client certificates) with rustls' default suite
//! order, which puts AES-GCM first, and the listener choosing by its own order. Certificates are
//! generated and checked by `libp2p_tls::certificate`, so the identity binding is the library's.
//!
//! Peers that only speak Noise (browsers, js-libp2p) still get Noise: the swarm offers this
//! upgrade beside it and multistream-select picks one both sides know.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use futures_rustls::TlsStream;
use libp2p::core::UpgradeInfo;
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade};
use libp2p::identity::{Keypair, PeerId};
use libp2p_tls::certificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};

const ALPN: &[u8] = b"libp2p";

/// How much plaintext is gathered before it is sealed and sent, unless flushed sooner: four
/// full TLS records, written with one system call.
const COALESCE_BYTES: usize = 64 * 1024;

/// Why a TLS upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot make the TLS certificate: {0}")]
    Certificate(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(#[source] std::io::Error),
    #[error("the peer's certificate is not a libp2p certificate: {0}")]
    BadCertificate(#[from] certificate::ParseError),
}

/// The security upgrade: a client and a server configuration made from one identity.
#[derive(Clone, Debug)]
pub struct Config {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Config {
    /// Makes the certificate for `key` and both configurations.
    pub fn new(key: &Keypair) -> Result<Self, Error> {
        let (cert, private) =
            certificate::generate(key).map_err(|e| Error::Certificate(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // rustls' own certificate loading would parse the certificate and refuse the critical
        // libp2p extension; the key is the one `generate` made for it, so no check is needed.
        let signer = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let own = Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![cert], signer)));
        let verifier = Arc::new(Verifier);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Certificate(e.to_string()))?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(own.clone());
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.ignore_client_order = true;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Certificate(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(own);
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.enable_sni = false;
        Ok(Self { server: Arc::new(server), client: Arc::new(client) })
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once("/tls/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Coalesced<TlsStream<C>>);
    type Error = Error;
    type Future = BoxFuture<'static, Result<Self::Output, Error>>;

    fn upgrade_inbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            let stream = futures_rustls::TlsAcceptor::from(self.server)
                .accept(socket)
                .await
                .map_err(Error::Handshake)?;
            let peer = peer_of(stream.get_ref().1)?;
            Ok((peer, Coalesced::new(stream.into())))
        }
        .boxed()
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = (PeerId, Coalesced<TlsStream<C>>);
    type Error = Error;
    type Future = BoxFuture<'static, Result<Self::Output, Error>>;

    fn upgrade_outbound(self, socket: C, _: Self::Info) -> Self::Future {
        async move {
            // The spec asks dialers to send no server name; with SNI off, this name is unused.
            let name = ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into());
            let stream = futures_rustls::TlsConnector::from(self.client)
                .connect(name, socket)
                .await
                .map_err(Error::Handshake)?;
            let peer = peer_of(stream.get_ref().1)?;
            Ok((peer, Coalesced::new(stream.into())))
        }
        .boxed()
    }
}

/// The peer id of a finished handshake. The verifier has already refused anything but exactly
/// one valid libp2p certificate, so a missing one is a handshake error, not a panic.
fn peer_of(state: &CommonState) -> Result<PeerId, Error> {
    match state.peer_certificates() {
        Some([cert]) => Ok(certificate::parse(cert)?.peer_id()),
        _ => {
            Err(Error::Handshake(std::io::Error::other("the peer presented no single certificate")))
        }
    }
}

/// Accepts exactly one self-signed certificate with a valid libp2p extension, on both sides.
/// Which peer id it names is checked by the swarm against the address dialed.
#[derive(Debug)]
struct Verifier;

impl Verifier {
    fn check(
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
    ) -> Result<(), rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(std::io::Error::other(
                    "a libp2p peer presents exactly one certificate",
                ))),
            )));
        }
        certificate::parse(end_entity)?;
        Ok(())
    }

    fn signature(
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        certificate::parse(cert)?.verify_signature(dss.scheme, message, dss.signature())?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

fn no_tls12() -> rustls::Error {
    rustls::Error::General("libp2p TLS is TLS 1.3 only".into())
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: &ServerName,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for Verifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer,
        intermediates: &[CertificateDer],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

/// Gathers small writes before they reach TLS, which seals every write at once into its own
/// record and sends it: the multiplexer writes each 12-byte frame header and each body
/// separately, which without this costs a record and a system call apiece. Bytes wait here only
/// until the buffer fills or the writer flushes, as with Noise's own framing.
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` the inner stream has already taken.
    sent: usize,
}

impl<S> Coalesced<S> {
    fn new(inner: S) -> Self {
        Self { inner, buf: Vec::with_capacity(COALESCE_BYTES), sent: 0 }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Hands everything gathered to the inner stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => self.sent += n,
            }
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() == COALESCE_BYTES {
            ready!(this.poll_drain(cx))?;
        }
        let n = data.len().min(COALESCE_BYTES - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::tcp::tokio::TcpStream;
    use rustls::CipherSuite;

    type Upgraded<C> = Result<(PeerId, C), String>;

    /// Connects two loopback sockets and runs `server` and `client` on them.
    async fn pair<S, C, SO, CO>(server: S, client: C) -> (Upgraded<SO>, Upgraded<CO>)
    where
        S: FnOnce(TcpStream) -> BoxFuture<'static, Upgraded<SO>> + Send + 'static,
        C: FnOnce(TcpStream) -> BoxFuture<'static, Upgraded<CO>>,
        SO: Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            server(TcpStream(socket)).await
        });
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let dialed = client(TcpStream(socket)).await;
        (accepted.await.unwrap(), dialed)
    }

    fn ours_in(
        key: &Keypair,
    ) -> impl FnOnce(TcpStream) -> BoxFuture<'static, Upgraded<Coalesced<TlsStream<TcpStream>>>> + use<>
    {
        let config = Config::new(key).unwrap();
        move |s| {
            async move { config.upgrade_inbound(s, "/tls/1.0.0").await.map_err(|e| e.to_string()) }
                .boxed()
        }
    }

    fn ours_out(
        key: &Keypair,
    ) -> impl FnOnce(TcpStream) -> BoxFuture<'static, Upgraded<Coalesced<TlsStream<TcpStream>>>> + use<>
    {
        let config = Config::new(key).unwrap();
        move |s| {
            async move { config.upgrade_outbound(s, "/tls/1.0.0").await.map_err(|e| e.to_string()) }
                .boxed()
        }
    }

    fn suite<S>(stream: &Coalesced<TlsStream<S>>) -> Option<CipherSuite> {
        stream.inner.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    }

    #[tokio::test]
    async fn peers_learn_each_other_and_settle_on_aes_gcm() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let (server, client) = pair(ours_in(&a), ours_out(&b)).await;
        let ((seen_by_a, mut server), (seen_by_b, mut client)) = (server.unwrap(), client.unwrap());
        assert_eq!(seen_by_a, b.public().to_peer_id());
        assert_eq!(seen_by_b, a.public().to_peer_id());
        assert_eq!(suite(&server), Some(CipherSuite::TLS13_AES_256_GCM_SHA384));
        assert_eq!(suite(&client), suite(&server));

        // Many small writes, as a multiplexer makes them, across several buffer fills, arrive
        // whole and in order once flushed; then the other way.
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = async {
            let (mut rest, mut sizes) = (&sent[..], [12, 16_384, 1, 70_000, 300].iter().cycle());
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at(rest.len().min(*sizes.next().unwrap()));
                client.write_all(piece).await.unwrap();
                rest = tail;
            }
            client.flush().await.unwrap();
        };
        let mut got = vec![0; sent.len()];
        let reader = server.read_exact(&mut got);
        let both = async { futures::join!(writer, reader) };
        let ((), read) = tokio::time::timeout(std::time::Duration::from_secs(20), both)
            .await
            .expect("the bytes arrive");
        read.unwrap();
        assert!(got == sent, "bytes changed on the way");
        server.write_all(b"and back").await.unwrap();
        server.close().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"and back");
    }

    /// The handshake is libp2p's: the library's own TLS upgrade, which offers ChaCha20 first,
    /// talks to this one in both roles, and this listener still chooses AES-GCM.
    #[tokio::test]
    async fn interoperates_with_the_libp2p_tls_upgrade() {
        let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        let theirs = libp2p_tls::Config::new(&b).unwrap();
        let (server, client) = pair(ours_in(&a), move |s| {
            async move { theirs.upgrade_outbound(s, "/tls/1.0.0").await.map_err(|e| e.to_string()) }
                .boxed()
        })
        .await;
        let (seen_by_a, server) = server.unwrap();
        let (seen_by_b, _) = client.unwrap();
        assert_eq!((seen_by_a, seen_by_b), (b.public().to_peer_id(), a.public().to_peer_id()));
        assert_eq!(suite(&server), Some(CipherSuite::TLS13_AES_256_GCM_SHA384));

        let theirs = libp2p_tls::Config::new(&b).unwrap();
        let (server, client) = pair(
            move |s| {
                async move {
                        theirs.upgrade_inbound(s, "/tls/1.0.0").await.map_err(|e| e.to_string())
                    }
                    .boxed()
            },
            ours_out(&a),
        )
        .await;
        let ((seen_by_b, _), (seen_by_a, client)) = (server.unwrap(), client.unwrap());
        assert_eq!((seen_by_a, seen_by_b), (b.public().to_peer_id(), a.public().to_peer_id()));
        assert_eq!(suite(&client), Some(CipherSuite::TLS13_AES_256_GCM_SHA384));
    }

    /// A TLS client without a libp2p certificate is refused: client certificates are
    /// mandatory, since they carry the peer's identity.
    #[tokio::test]
    async fn a_client_without_a_certificate_is_refused() {
        let a = Keypair::generate_ed25519();
        let (server, client) = pair(ours_in(&a), |s| {
            async move {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .unwrap()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Verifier))
                    .with_no_client_auth();
                config.alpn_protocols = vec![ALPN.to_vec()];
                let name = ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into());
                let mut stream = futures_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, s)
                    .await
                    .map_err(|e| e.to_string())?;
                // TLS 1.3 clients finish first; the refusal arrives on the first read.
                let mut byte = [0];
                stream.read(&mut byte).await.map_err(|e| e.to_string())?;
                Ok(((), ()))
            }
            .map(|r: Result<((), ()), String>| r.map(|_| (PeerId::random(), ())))
            .boxed()
        })
        .await;
        let err = server.expect_err("the listener must refuse");
        assert!(err.contains("TLS handshake failed"), "{err}");
        assert!(client.is_err(), "the client must see the refusal");
    }
}
