//! One Diameter client connection driven by the initiator side of [`ocf_protocol::peer::Peer`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{DisconnectCause, VENDOR_3GPP, application};
use ocf_protocol::dictionary::Dictionary;
use ocf_protocol::frame;
use ocf_protocol::message::Message;
use ocf_protocol::peer::{CloseReason, Event, Peer, PeerConfig};
use ocf_transport::sctp::SctpStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub origin_host: String,
    pub origin_realm: String,
    /// Tw for the client's own watchdog.
    pub watchdog: Duration,
    /// How long to wait for the CEA, an answer, or the DPA.
    pub timeout: Duration,
    /// Auth-Application-Id advertised in the CER (4: credit control).
    pub auth_application_id: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            origin_host: "loadtest.localdomain".into(),
            origin_realm: "localdomain".into(),
            watchdog: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            auth_application_id: application::CREDIT_CONTROL,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connection closed: {0:?}")]
    Closed(Option<CloseReason>),
    #[error("dictionary: {0}")]
    Dictionary(#[from] ocf_protocol::dictionary::DictionaryError),
}

/// TLS client settings: what the server's certificate must name, and the rustls settings
/// (our certificate and key, the CA of the server's).
#[derive(Clone)]
pub struct TlsClient {
    pub server_name: String,
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A byte stream the client can drive (TCP or SCTP).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open Diameter connection.
pub struct Client {
    stream: Box<dyn Stream>,
    peer: Peer,
    rbuf: BytesMut,
    timeout: Duration,
    /// The server's Origin-Host and Origin-Realm from the CEA.
    pub server_host: String,
    pub server_realm: String,
}

fn peer_config(cfg: &ClientConfig, local: IpAddr) -> Result<Arc<PeerConfig>, ClientError> {
    Ok(Arc::new(PeerConfig {
        identity: LocalIdentity {
            origin_host: cfg.origin_host.clone(),
            origin_realm: cfg.origin_realm.clone(),
            host_ip_addresses: vec![local],
            vendor_id: 0,
            product_name: "ocf-loadtest".into(),
            firmware_revision: 1,
            origin_state_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(1),
            auth_application_ids: vec![cfg.auth_application_id],
            supported_vendor_ids: vec![VENDOR_3GPP],
        },
        dictionary: Arc::new(Dictionary::builtin()?),
        watchdog: cfg.watchdog,
        handshake_timeout: cfg.timeout,
        dpa_timeout: cfg.timeout,
        allowed_peers: None,
    }))
}

impl Client {
    /// Connects over TCP and completes CER/CEA.
    pub async fn connect_tcp(
        server: SocketAddr,
        cfg: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let s = tokio::time::timeout(cfg.timeout, TcpStream::connect(server))
            .await
            .map_err(|_| ClientError::Timeout(cfg.timeout))??;
        s.set_nodelay(true)?;
        let local = s.local_addr()?.ip();
        Self::handshake(Box::new(s), local, cfg).await
    }

    /// Connects over TLS/TCP (the TLS handshake first, RFC 6733 §13) and completes CER/CEA.
    pub async fn connect_tls(
        server: SocketAddr,
        tls: &TlsClient,
        cfg: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let name = rustls_pki_types::ServerName::try_from(tls.server_name.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let s = tokio::time::timeout(cfg.timeout, TcpStream::connect(server))
            .await
            .map_err(|_| ClientError::Timeout(cfg.timeout))??;
        s.set_nodelay(true)?;
        let local = s.local_addr()?.ip();
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let t = tokio::time::timeout(cfg.timeout, connector.connect(name, s))
            .await
            .map_err(|_| ClientError::Timeout(cfg.timeout))??;
        Self::handshake(Box::new(t), local, cfg).await
    }

    /// Connects over SCTP (binding `local` addresses for multi-homing) and completes CER/CEA.
    pub async fn connect_sctp(
        server: SocketAddr,
        local: &[IpAddr],
        cfg: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let s = tokio::time::timeout(cfg.timeout, SctpStream::connect(server, local))
            .await
            .map_err(|_| ClientError::Timeout(cfg.timeout))??;
        let ip = s.local_addr()?.ip();
        Self::handshake(Box::new(s), ip, cfg).await
    }

    async fn handshake(
        stream: Box<dyn Stream>,
        local: IpAddr,
        cfg: &ClientConfig,
    ) -> Result<Client, ClientError> {
        let config = peer_config(cfg, local)?;
        let seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
        let peer = Peer::initiator(config, &[local], Instant::now(), seed);
        let mut c = Client {
            stream,
            peer,
            rbuf: BytesMut::with_capacity(64 * 1024),
            timeout: cfg.timeout,
            server_host: String::new(),
            server_realm: String::new(),
        };
        loop {
            match c.next_event().await? {
                Event::Opened {
                    origin_host,
                    origin_realm,
                } => {
                    c.server_host = origin_host;
                    c.server_realm = origin_realm;
                    return Ok(c);
                }
                Event::Closed(r) => return Err(ClientError::Closed(Some(r))),
                _ => {}
            }
        }
    }

    /// Flushes pending output, then reads until the state machine has an event (answering
    /// watchdogs on the way).
    async fn next_event(&mut self) -> Result<Event, ClientError> {
        self.next_event_until(Instant::now() + self.timeout).await
    }

    /// [`Self::next_event`], giving up at `deadline`.
    async fn next_event_until(&mut self, deadline: Instant) -> Result<Event, ClientError> {
        loop {
            if !self.peer.transmit().is_empty() {
                let out = self.peer.transmit().split();
                self.stream.write_all(&out).await?;
            }
            if let Some(ev) = self.peer.poll_event() {
                return Ok(ev);
            }
            if self.peer.is_closed() {
                return Err(ClientError::Closed(None));
            }
            let wake = self
                .peer
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                n = self.stream.read_buf(&mut self.rbuf) => {
                    if n? == 0 {
                        return Err(ClientError::Closed(None));
                    }
                    let now = Instant::now();
                    while let Ok(Some(len)) = frame::check(&self.rbuf, 16 << 20) {
                        if self.rbuf.len() < len {
                            break;
                        }
                        let f = self.rbuf.split_to(len).freeze();
                        self.peer.handle_frame(now, f);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ClientError::Timeout(self.timeout));
                    }
                    self.peer.handle_timeout(now);
                }
            }
        }
    }

    /// Sends a request written by `build` (given the buffer, Hop-by-Hop and End-to-End ids)
    /// and waits for its answer.
    pub async fn request(
        &mut self,
        command_code: u32,
        build: impl FnOnce(&mut BytesMut, u32, u32),
    ) -> Result<Message, ClientError> {
        let (hbh, e2e) = self.peer.send_request(command_code);
        build(self.peer.transmit(), hbh, e2e);
        loop {
            match self.next_event().await? {
                Event::Answer(m) if m.header.hop_by_hop == hbh => return Ok(m),
                Event::Closed(r) => return Err(ClientError::Closed(Some(r))),
                _ => {}
            }
        }
    }

    /// Waits until `deadline` for a request from the server (answering watchdogs on the way);
    /// `None` if none came. Answer it with [`Self::answer`].
    pub async fn next_request(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<Message>, ClientError> {
        loop {
            match self.next_event_until(deadline).await {
                Ok(Event::Request(m)) => return Ok(Some(m)),
                Ok(Event::Closed(r)) => return Err(ClientError::Closed(Some(r))),
                Ok(_) => {}
                Err(ClientError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues an answer written by `build` (sent with the next read or request).
    pub fn answer(&mut self, build: impl FnOnce(&mut BytesMut)) {
        build(self.peer.transmit());
    }

    /// The connection, its state machine and any bytes read past the CEA, for a driver of its
    /// own (the load generator).
    pub fn into_parts(self) -> (Box<dyn Stream>, Peer, BytesMut) {
        (self.stream, self.peer, self.rbuf)
    }

    /// Our identity as sent in requests.
    pub fn identity(&self) -> &LocalIdentity {
        self.peer.identity()
    }

    /// Sends DPR and waits for the DPA (bounded).
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        self.peer
            .disconnect(Instant::now(), DisconnectCause::Rebooting);
        loop {
            match self.next_event().await {
                Ok(Event::Closed(CloseReason::Disconnected)) => return Ok(()),
                Ok(Event::Closed(r)) => return Err(ClientError::Closed(Some(r))),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
