//! Helpers for end-to-end tests: run the real `ocfd` binary on 127.0.0.1 port 0 with a config
//! of the test's own, read its logs, and talk raw Diameter to it over real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ocf::diameter::base::LocalIdentity;
use ocf::diameter::codes::{application, avp as c};
use ocf::diameter::{Message, frame};

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts ocfd with `extra_toml` appended to a config that listens on 127.0.0.1:0.
    pub fn start(diameter_toml: &str) -> Daemon {
        Self::start_with(diameter_toml, &[])
    }

    pub fn start_with(diameter_toml: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ocfd.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\nworker_threads = 2\n[log]\nlevel = \"debug\"\n[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\n{diameter_toml}\n",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ocfd"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ocfd");
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut d = Daemon { child, addr: "127.0.0.1:1".parse().unwrap(), logs, lines, _dir: dir };
        let line = d.wait_log("listening transport=\"tcp\"");
        let addr = line.split("addr=").nth(1).unwrap().split_whitespace().next().unwrap();
        d.addr = addr.parse().unwrap();
        d
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_log(&mut self, needle: &str) -> String {
        if let Some(l) = self.logs.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {WAIT:?}; logs:\n{}", self.logs.lock().unwrap().join("\n")),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "ocfd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Still running (has not crashed).
    pub fn assert_alive(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "ocfd exited; logs:\n{}", self.logs.lock().unwrap().join("\n"));
    }

    /// A fresh connection completes CER/CEA with 2001.
    pub fn assert_serving(&mut self) {
        self.assert_alive();
        let mut conn = Conn::connect(self.addr);
        let cea = conn.handshake("check.localdomain");
        assert_eq!(result_code(&cea), 2001);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn identity(host: &str) -> LocalIdentity {
    LocalIdentity {
        origin_host: host.into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        vendor_id: 10415,
        product_name: "e2e-test".into(),
        firmware_revision: 1,
        origin_state_id: 1,
        auth_application_ids: vec![application::CREDIT_CONTROL],
        supported_vendor_ids: vec![10415],
    }
}

pub fn cer(host: &str) -> BytesMut {
    let mut b = BytesMut::new();
    identity(host).write_cer(&mut b, 0x1000, 0x2000);
    b
}

pub fn result_code(m: &Message) -> u32 {
    m.find(c::RESULT_CODE).expect("Result-Code").u32().unwrap()
}

/// What a read ended with.
#[derive(Debug)]
pub enum Read_ {
    Frame(Message),
    Closed,
    Timeout,
}

/// A raw blocking connection with bounded reads.
pub struct Conn {
    pub s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        s.set_nodelay(true).unwrap();
        Conn { s, buf: BytesMut::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// Reads the next whole message, or notices the close, within `limit`.
    pub fn read(&mut self, limit: Duration) -> Read_ {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(len)) = frame::check(&self.buf, 1 << 24) {
                if self.buf.len() >= len {
                    let f: Bytes = self.buf.split_to(len).freeze();
                    return Read_::Frame(Message::decode(f).expect("ocfd sent a malformed message"));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read_::Timeout;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Read_::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Read_::Timeout,
                Err(_) => return Read_::Closed,
            }
        }
    }

    pub fn expect_frame(&mut self) -> Message {
        match self.read(WAIT) {
            Read_::Frame(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub fn expect_closed(&mut self) {
        match self.read(WAIT) {
            Read_::Closed => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    pub fn handshake(&mut self, host: &str) -> Message {
        self.send(&cer(host));
        self.expect_frame()
    }
}
