//! `/v1/live/{path}` over a raw socket, as a browser reads it: the node's usage at once, again
//! when a gateway charges it, an `error` event and the end when
//! a manager removes the node mid-stream, pages of children, the scope held, and a bound on the
//! streams open at once.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::*;
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, UPDATE};
use serde_json::Value;

/// An open event stream: the status line, then its messages one by one.
struct Stream {
    reader: BufReader<TcpStream>,
    status: u16,
}

impl Stream {
    fn open(api: &Http, path: &str) -> Stream {
        let mut s = TcpStream::connect_timeout(&api.addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            api.token.as_deref().unwrap_or_default()
        )
        .unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        // The headers, up to the blank line.
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
        }
        Stream { reader, status }
    }

    /// The next message's event name and data (comments and chunk sizes skipped); none at the
    /// end of the stream. Bounded by the socket's read timeout.
    fn next(&mut self) -> Option<(String, Value)> {
        let (mut event, mut data) = (String::new(), None);
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let l = line.trim_end();
            if let Some(e) = l.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(d) = l.strip_prefix("data: ") {
                data = serde_json::from_str(d).ok();
            } else if l.is_empty() && data.is_some() {
                return Some((event, data.take()?));
            } else if l == "0" && data.is_none() && event.is_empty() {
                // The last chunk of a chunked body: the stream ended.
                return None;
            }
        }
    }
}

fn used(view: &Value) -> u64 {
    view["node"]["limits"][0]["used"].as_u64().unwrap()
}

#[test]
fn a_node_streams_its_usage_as_it_changes_and_ends_when_removed() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let device = "acme/iot/15551008003";
    let mut live = Stream::open(&api, &format!("/v1/live/{device}"));
    assert_eq!(live.status, 200);
    let (event, first) = live.next().unwrap();
    assert_eq!(event, "usage");
    assert_eq!(first["node"]["path"], device);
    assert_eq!(used(&first), 0);

    // A gateway charges it: the next message shows the usage (a reservation first).
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let sid = "pgw.localdomain;live;1";
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn("15551008003")
            .mscc(MsccSpec::ask(10, 1 << 20)),
    );
    assert_eq!(i.result_code, 2001);
    let u = gw.ask(&CcrSpec::new(sid, UPDATE, 1).mscc(MsccSpec::report(10, 300_000, true)));
    assert_eq!(u.result_code, 2001);
    let mut last = first;
    while used(&last) != 300_000 {
        let (event, view) = live.next().expect("the stream went on");
        assert_eq!(event, "usage");
        last = view;
    }

    // A manager removes the device mid-stream: the stream says why and ends.
    assert_eq!(
        api.call("DELETE", &format!("/v1/nodes/{device}"), None).0,
        204
    );
    let (event, why) = loop {
        match live.next() {
            Some((e, v)) if e == "error" => break (e, v),
            Some(_) => continue,
            None => panic!("the stream ended without saying why"),
        }
    };
    assert_eq!(event, "error");
    assert!(why["error"].as_str().unwrap().contains("no node"), "{why}");
    assert!(live.next().is_none(), "nothing after the error");
    // Asking for it now is a plain 404.
    assert_eq!(
        Stream::open(&api, &format!("/v1/live/{device}")).status,
        404
    );
    d.assert_serving();
}

#[test]
fn pages_scopes_and_a_bound_on_open_streams() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let mut page = Stream::open(&api, "/v1/live/acme/sales?offset=2990&limit=50");
    let (_, v) = page.next().unwrap();
    assert_eq!(v["children_total"], 3000);
    let paths: Vec<&str> = v["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 10, "the last page: {paths:?}");
    assert_eq!(paths[0], "acme/sales/15551007990");
    assert_eq!(
        Stream::open(&api, "/v1/live/acme/sales?limit=-1").status,
        400
    );

    // A viewer of acme/sales follows it, and nothing else.
    let (_, t) = api.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"v","role":"viewer","scope":"acme/sales"}"#),
    );
    let viewer = Http {
        addr: api.addr,
        token: t["token"].as_str().map(str::to_owned),
    };
    let followed = Stream::open(&viewer, "/v1/live/acme/sales");
    assert_eq!(followed.status, 200);
    assert_eq!(Stream::open(&viewer, "/v1/live/acme").status, 403);

    // At most 256 streams at once: the next is refused, in words, until one closes.
    let mut open: Vec<Stream> = (0..254)
        .map(|_| Stream::open(&api, "/v1/live/acme/iot/15551008000"))
        .collect();
    assert!(open.iter().all(|s| s.status == 200));
    let refused = Stream::open(&api, "/v1/live/acme/iot/15551008000");
    assert_eq!(refused.status, 503, "256 open: this, page, the viewer's");
    // A closed stream gives its place back (the server sees the close at its next look).
    drop(open.pop());
    drop(page);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = Stream::open(&api, "/v1/live/acme/iot/15551008000");
        if s.status == 200 {
            break;
        }
        assert_eq!(s.status, 503);
        assert!(std::time::Instant::now() < deadline, "no place given back");
    }
    drop((open, followed));
    d.assert_serving();
}
