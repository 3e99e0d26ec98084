//! A small blocking HTTP/1.1 client for the admin API (plain HTTP on the admin listener, one
//! request per connection): enough for `ocfctl` and the tests, with bounded reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read (a tree of a million nodes lists them all in `children`).
const MAX_ANSWER: u64 = 256 << 20;

/// Where the admin API is and the token it wants.
#[derive(Clone, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub timeout: Duration,
}

/// An answer: status and body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    /// The body as JSON (Null if empty or not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The reason of an error answer (`{"error": ...}`), or the body.
    pub fn reason(&self) -> String {
        match self.json()["error"].as_str() {
            Some(e) => e.to_owned(),
            None => self.body.trim().to_owned(),
        }
    }
}

impl Client {
    /// A client for `url` (`http://host:port`, the scheme optional).
    pub fn new(url: &str, token: Option<String>) -> Result<Client, String> {
        let hostport = url
            .strip_prefix("http://")
            .unwrap_or(url)
            .trim_end_matches('/');
        if url.starts_with("https://") || hostport.contains('/') {
            return Err(format!("'{url}': give http://host:port"));
        }
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("'{url}': {e}"))?
            .next()
            .ok_or_else(|| format!("'{url}': no address"))?;
        Ok(Client {
            addr,
            token,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one request; `body` is JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Answer> {
        let mut s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(t) = &self.token {
            req += &format!("Authorization: Bearer {t}\r\n");
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            req += "Content-Type: application/json\r\n";
        }
        req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut resp)?;
        parse(&resp).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP/1.1 answer")
        })
    }
}

/// Status and body of a whole HTTP/1.1 answer (plain or chunked).
fn parse(resp: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(resp);
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, after)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            r = after.get(n..)?.strip_prefix("\r\n")?;
        }
        out
    } else {
        rest.to_owned()
    };
    Some(Answer { status, body })
}

/// Percent-encodes a node path for a URL, keeping its '/' separators.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_plain_and_chunked() {
        let a = parse(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((a.status, a.body.as_str()), (201, "{}"));
        let c = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(c.json()["a"], 1);
        assert!(parse(b"garbage").is_none());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_none());
    }

    #[test]
    fn paths_keep_their_slashes_and_escape_the_rest() {
        assert_eq!(encode_path("acme/sales"), "acme/sales");
        assert_eq!(encode_path("acme/R&D lab"), "acme/R%26D%20lab");
    }
}
