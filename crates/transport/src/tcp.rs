//! TCP listeners built with socket2 so that IPv6 sockets are v6-only (an IPv4 and an IPv6
//! listener on the same port can coexist) and the backlog is ours to choose.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

/// Accept backlog: a gateway pool reconnecting at once must not see refusals.
pub(crate) const BACKLOG: i32 = 1024;

/// Binds a listener; must be called inside a tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Per-connection options: Diameter answers are small and latency-bound, so no Nagle delay.
pub fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}
