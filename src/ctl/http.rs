//! The blocking HTTP client of the admin API (plain HTTP on the admin listener), for `ocfctl`
//! and the tests: a thin layer over `ureq`, so that no HTTP parsing is hand-written here.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read (a tree of a million nodes lists them all in `children`); a larger one
/// is an error rather than an unbounded allocation.
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
    pub content_type: Option<String>,
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

    /// The agent for one call. The timeout bounds the connect and each read and write (a long
    /// answer may take longer in all). Error statuses are answers, not errors, since callers
    /// report the API's reason; no proxy from the environment and no redirects, since the
    /// admin listener is reached directly.
    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_connect(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .timeout_per_write(Some(self.timeout))
            .build()
            .new_agent()
    }

    /// Sends one request; `body` is JSON. Errors are those of reaching the API, or an
    /// answer that is not HTTP or is larger than `MAX_ANSWER`.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Answer> {
        self.send(method, path, body, None)
    }

    /// [`Client::call`] for a cluster node sending a manager's request on to the node that
    /// owns its tenant (`by`: the node it comes from; the owner sends it no further).
    pub fn call_forwarded(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        by: &str,
    ) -> std::io::Result<Answer> {
        self.send(method, path, body, Some(by))
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        forwarded_by: Option<&str>,
    ) -> std::io::Result<Answer> {
        let invalid =
            |e: ureq::http::Error| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        if let Some(by) = forwarded_by {
            req = req.header("X-Ocfd-Forwarded", by);
        }
        let req = req.body(body.unwrap_or("").as_bytes()).map_err(invalid)?;
        let mut resp = self.agent().run(req).map_err(ureq::Error::into_io)?;
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(ureq::Error::into_io)?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Answer {
            status: resp.status().as_u16(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
            content_type,
        })
    }
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
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Serves one connection with `answer`, and hands back the request's head.
    fn serve_once(answer: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut head = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head += &line;
            }
            s.write_all(answer).unwrap();
            head
        });
        (addr, h)
    }

    fn client(addr: SocketAddr, token: Option<&str>) -> Client {
        Client {
            addr,
            token: token.map(str::to_owned),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn chunked_answers_are_read_and_the_token_is_sent() {
        let (addr, h) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        );
        let a = client(addr, Some("s3cret"))
            .call("GET", "/v1/tenants", None)
            .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["a"], 1);
        let head = h.join().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /v1/tenants http/1.1\r\n"), "{head}");
        assert!(head.contains("authorization: bearer s3cret\r\n"), "{head}");
    }

    #[test]
    fn error_statuses_are_answers_and_garbage_is_an_error() {
        let (addr, h) = serve_once(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"error\":\"no such\"}",
        );
        let a = client(addr, None)
            .call("POST", "/v1/nodes/x", Some("{}"))
            .unwrap();
        assert_eq!((a.status, a.reason().as_str()), (404, "no such"));
        assert!(
            !h.join()
                .unwrap()
                .to_ascii_lowercase()
                .contains("authorization")
        );

        let (addr, h) = serve_once(b"garbage\r\n\r\n");
        assert!(client(addr, None).call("GET", "/", None).is_err());
        h.join().unwrap();
    }

    #[test]
    fn paths_keep_their_slashes_and_escape_the_rest() {
        assert_eq!(encode_path("acme/sales"), "acme/sales");
        assert_eq!(encode_path("acme/R&D lab"), "acme/R%26D%20lab");
    }
}
