//! The coordinator's TLS listener. It does the rustls handshake itself (instead of leaving it to
//! tonic) so that every refused connection is logged with the peer address and rustls' reason
//! and counted for `presagectl status`, and so the peer's identity (role and name, see
//! `presage_protocol::tls`) is read once per connection and handed to the gRPC services as
//! connect-info.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use presage_protocol::tls::{PeerIdentity, peer_identity};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on an accepted connection; available to handlers as a request extension.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub identity: PeerIdentity,
    pub remote: SocketAddr,
}

/// Refused handshakes, for operators.
#[derive(Default)]
pub struct RefusalLog {
    inner: Mutex<(u64, String)>,
    /// Counted by kind for `/metrics`.
    pub by_kind: prometheus_client::metrics::family::Family<crate::metrics::Label, prometheus_client::metrics::counter::Counter>,
}

impl RefusalLog {
    fn record(&self, remote: SocketAddr, reason: &str) {
        warn!(peer = %remote, %reason, "refused TLS connection");
        self.by_kind.get_or_create(&[("kind", crate::metrics::refusal_kind(reason))]).inc();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        g.1 = format!("{remote}: {reason}");
    }

    /// How many connections were refused, and the last reason.
    pub fn snapshot(&self) -> (u64, String) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// An authenticated connection.
pub struct TlsConn {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener`, completes mutual TLS with `config`, and yields the
/// authenticated ones until `cancel` fires; with the accepting task, which drops the listener
/// (freeing the port) when it ends.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    refusals: Arc<RefusalLog>,
    cancel: CancellationToken,
) -> (ReceiverStream<Result<TlsConn, io::Error>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let refusals = refusals.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Err(_) => return refusals.record(remote, "TLS handshake timed out"),
                    Ok(Err(e)) => return refusals.record(remote, &format!("TLS handshake failed: {e}")),
                    Ok(Ok(s)) => s,
                };
                let identity = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    None => return refusals.record(remote, "no client certificate"),
                    Some(cert) => match peer_identity(cert) {
                        Ok(id) => id,
                        Err(e) => return refusals.record(remote, &format!("certificate from the cluster CA but {e}")),
                    },
                };
                debug!(peer = %remote, %identity, "TLS connection accepted");
                let _ = tx.send(Ok(TlsConn { stream, info: PeerInfo { identity, remote } })).await;
            });
        }
    });
    (ReceiverStream::new(rx), accepting)
}
