//! SCTP one-to-one (`SOCK_STREAM`) sockets for Diameter (RFC 6733 §2.1, RFC 6458 sockets API),
//! driven by tokio's `AsyncFd`. Multi-homing binds extra local addresses with
//! `SCTP_SOCKOPT_BINDX_ADD`; every message is sent with payload protocol identifier 46
//! (Diameter) via `SCTP_DEFAULT_SNDINFO`, so plain reads and writes carry the byte stream.
//!
//! This is the only module with `unsafe`: socket options that socket2 does not wrap.
#![allow(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An SCTP endpoint: one port on one or more local addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SctpEndpoint {
    pub addresses: Vec<IpAddr>,
    pub port: u16,
}

pub(crate) const IPPROTO_SCTP: i32 = 132;
const SCTP_NODELAY: libc::c_int = 3;
const SCTP_DEFAULT_SNDINFO: libc::c_int = 34;
const SCTP_SOCKOPT_BINDX_ADD: libc::c_int = 100;
const SCTP_GET_PEER_ADDRS: libc::c_int = 108;
const SCTP_RECVRCVINFO: libc::c_int = 32;
/// cmsg type of `struct sctp_rcvinfo` (RFC 6458 §5.3.5).
const SCTP_RCVINFO: libc::c_int = 3;
/// IANA payload protocol identifier for Diameter over SCTP.
pub(crate) const DIAMETER_PPID: u32 = 46;

/// `struct sctp_rcvinfo` (RFC 6458 §5.3.5).
#[repr(C)]
#[derive(Clone, Copy)]
struct RcvInfo {
    rcv_sid: u16,
    rcv_ssn: u16,
    rcv_flags: u16,
    rcv_ppid: u32,
    rcv_tsn: u32,
    rcv_cumtsn: u32,
    rcv_context: u32,
    rcv_assoc_id: i32,
}

/// `struct sctp_sndinfo` (RFC 6458 §5.3.4).
#[repr(C)]
struct SndInfo {
    snd_sid: u16,
    snd_flags: u16,
    snd_ppid: u32,
    snd_context: u32,
    snd_assoc_id: i32,
}

fn setsockopt<T>(sock: &Socket, name: libc::c_int, value: &T, len: usize) -> io::Result<()> {
    // SAFETY: `value` points to `len` readable bytes for the duration of the call and the fd is
    // open (borrowed from `sock`).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            IPPROTO_SCTP,
            name,
            (value as *const T).cast(),
            len as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Packs a socket address the way the SCTP socket options expect (sockaddr_in / sockaddr_in6),
/// mapping IPv4 into IPv6 on IPv6 sockets.
fn pack_sockaddr(out: &mut Vec<u8>, addr: SocketAddr, v6_socket: bool) {
    let addr = match addr {
        SocketAddr::V4(a) if v6_socket => {
            SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
        }
        a => a,
    };
    match addr {
        SocketAddr::V4(a) => {
            out.extend_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&[0; 8]);
        }
        SocketAddr::V6(a) => {
            out.extend_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out.extend_from_slice(&a.port().to_be_bytes());
            out.extend_from_slice(&a.flowinfo().to_be_bytes());
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.scope_id().to_ne_bytes());
        }
    }
}

/// Reads packed sockaddrs back.
fn unpack_sockaddrs(mut buf: &[u8], count: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for _ in 0..count {
        if buf.len() < 2 {
            break;
        }
        let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
        if family == libc::AF_INET && buf.len() >= 16 {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let ip = std::net::Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            out.push(SocketAddr::new(ip.into(), port));
            buf = &buf[16..];
        } else if family == libc::AF_INET6 && buf.len() >= 28 {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[8..24]);
            let ip = Ipv6Addr::from(o);
            let ip = ip
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(ip));
            out.push(SocketAddr::new(ip, port));
            buf = &buf[28..];
        } else {
            break;
        }
    }
    out
}

fn new_socket(v6: bool) -> io::Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    Socket::new(domain, Type::STREAM, Some(Protocol::from(IPPROTO_SCTP))).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no SCTP (EPROTONOSUPPORT); load the sctp module (modprobe sctp) or remove listen_sctp",
            )
        } else {
            e
        }
    })
}

fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its descriptor, which stays open and unchanged until the Socket
    // is dropped, and the AsyncFd owns the Socket.
    Ok(unsafe { AsyncFd::register(sock) }?)
}

/// Whether the kernel can create SCTP sockets.
pub fn is_supported() -> bool {
    new_socket(false).is_ok()
}

fn bind_all(sock: &Socket, addrs: &[SocketAddr], v6: bool) -> io::Result<()> {
    let first = addrs
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no SCTP address"))?;
    let mut packed = Vec::new();
    pack_sockaddr(&mut packed, *first, v6);
    let first: SocketAddr = if v6 {
        match first {
            SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
            a => *a,
        }
    } else {
        *first
    };
    sock.bind(&SockAddr::from(first))?;
    let port = sock
        .local_addr()?
        .as_socket()
        .map(|a| a.port())
        .unwrap_or(0);
    if addrs.len() > 1 {
        // The extra addresses share the port the first one got.
        let mut extra = Vec::new();
        for a in &addrs[1..] {
            pack_sockaddr(&mut extra, SocketAddr::new(a.ip(), port), v6);
        }
        setsockopt(sock, SCTP_SOCKOPT_BINDX_ADD, &extra[0], extra.len())?;
    }
    Ok(())
}

fn configure(sock: &Socket) -> io::Result<()> {
    let one: libc::c_int = 1;
    setsockopt(sock, SCTP_NODELAY, &one, std::mem::size_of::<libc::c_int>())?;
    let info = SndInfo {
        snd_sid: 0,
        snd_flags: 0,
        snd_ppid: DIAMETER_PPID.to_be(),
        snd_context: 0,
        snd_assoc_id: 0,
    };
    setsockopt(
        sock,
        SCTP_DEFAULT_SNDINFO,
        &info,
        std::mem::size_of::<SndInfo>(),
    )?;
    sock.set_nonblocking(true)
}

/// A listening multi-homed SCTP endpoint.
pub struct SctpListener {
    fd: AsyncFd<Socket>,
    port: u16,
    addresses: Vec<IpAddr>,
}

impl SctpListener {
    /// Binds every address of `ep` on one port; must be called inside a tokio runtime.
    pub fn bind(ep: &SctpEndpoint) -> io::Result<SctpListener> {
        let v6 = ep.addresses.iter().any(IpAddr::is_ipv6);
        let sock = new_socket(v6)?;
        sock.set_reuse_address(true)?;
        let addrs: Vec<SocketAddr> = ep
            .addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, ep.port))
            .collect();
        bind_all(&sock, &addrs, v6)?;
        sock.listen(super::tcp::BACKLOG)?;
        sock.set_nonblocking(true)?;
        let port = sock
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .unwrap_or(ep.port);
        Ok(SctpListener {
            fd: register(sock)?,
            port,
            addresses: ep.addresses.clone(),
        })
    }

    /// The local addresses, all on one port.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect()
    }

    pub async fn accept(&self) -> io::Result<(SctpStream, SocketAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| fd.get_ref().accept()) {
                Ok(Ok((sock, addr))) => {
                    configure(&sock)?;
                    let peer = addr
                        .as_socket()
                        .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(0.into()), 0));
                    return Ok((
                        SctpStream {
                            fd: register(sock)?,
                        },
                        peer,
                    ));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One SCTP association carrying a Diameter byte stream.
pub struct SctpStream {
    fd: AsyncFd<Socket>,
}

impl SctpStream {
    /// Connects to `remote`, first binding `local` addresses (multi-homed client) if given.
    pub async fn connect(remote: SocketAddr, local: &[IpAddr]) -> io::Result<SctpStream> {
        let v6 = remote.is_ipv6() || local.iter().any(IpAddr::is_ipv6);
        let sock = new_socket(v6)?;
        if !local.is_empty() {
            let addrs: Vec<SocketAddr> = local.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            bind_all(&sock, &addrs, v6)?;
        }
        configure(&sock)?;
        let target = match remote {
            SocketAddr::V4(a) if v6 => {
                SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port())
            }
            a => a,
        };
        match sock.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let fd = register(sock)?;
        let _ = fd.writable().await?;
        if let Some(e) = fd.get_ref().take_error()? {
            return Err(e);
        }
        Ok(SctpStream { fd })
    }

    /// The addresses the peer advertised for this association (`SCTP_GET_PEER_ADDRS`).
    pub fn peer_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        let mut buf = vec![0u8; 8 + 16 * 28];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most `len` and updates
        // it; the fd is open for the duration of the call.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.get_ref().as_raw_fd(),
                IPPROTO_SCTP,
                SCTP_GET_PEER_ADDRS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let count = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        Ok(unpack_sockaddrs(
            &buf[8..(len as usize).min(buf.len())],
            count,
        ))
    }

    /// Asks the kernel to report, with each message received through [`Self::recv_with_ppid`],
    /// the payload protocol identifier the peer sent it with.
    pub fn enable_rcvinfo(&self) -> io::Result<()> {
        let one: libc::c_int = 1;
        setsockopt(
            self.fd.get_ref(),
            SCTP_RECVRCVINFO,
            &one,
            std::mem::size_of::<libc::c_int>(),
        )
    }

    /// Receives one SCTP message (or its first `buf.len()` octets) and the payload protocol
    /// identifier it carried, when [`Self::enable_rcvinfo`] was called.
    pub async fn recv_with_ppid(&self, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recvmsg_ppid(fd.get_ref(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.fd
            .get_ref()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }
}

/// recvmsg(2) with room for one `sctp_rcvinfo` control message.
fn recvmsg_ppid(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64 storage keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: msghdr is plain data; zeroed is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to live buffers of the stated lengths for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ppid = None;
    // SAFETY: the kernel filled `msg_control` up to `msg_controllen`; the CMSG macros walk it
    // within those bounds, and the data of an SCTP_RCVINFO message is a `sctp_rcvinfo`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == IPPROTO_SCTP && (*cmsg).cmsg_type == SCTP_RCVINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RcvInfo>());
                ppid = Some(u32::from_be(info.rcv_ppid));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, ppid))
}

impl AsyncRead for SctpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SctpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(data)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_pack_and_unpack() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:3868".parse().unwrap(),
            "[::1]:3869".parse().unwrap(),
        ];
        let mut buf = Vec::new();
        for a in &addrs {
            pack_sockaddr(&mut buf, *a, false);
        }
        assert_eq!(buf.len(), 16 + 28);
        assert_eq!(unpack_sockaddrs(&buf, 2), addrs);
        // IPv4 on an IPv6 socket travels as a mapped address and comes back as IPv4.
        let mut mapped = Vec::new();
        pack_sockaddr(&mut mapped, addrs[0], true);
        assert_eq!(mapped.len(), 28);
        assert_eq!(unpack_sockaddrs(&mapped, 1), vec![addrs[0]]);
    }

    #[test]
    fn unsupported_kernel_says_so() {
        match new_socket(false) {
            Ok(_) => assert!(is_supported()),
            Err(err) => {
                assert!(!is_supported());
                assert_eq!(err.kind(), io::ErrorKind::Unsupported);
                assert!(err.to_string().contains("no SCTP"));
            }
        }
    }
}
