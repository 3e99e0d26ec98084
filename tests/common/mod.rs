//! Helpers for end-to-end tests: run the real `ocfd` binary on 127.0.0.1 port 0 with a config
//! of the test's own, read its logs, and talk raw Diameter to it over real sockets.
#![allow(dead_code)]

pub(crate) mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::{application, avp as c};
use ocf_protocol::{Message, frame};

/// Upper bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A child process whose stdout and stderr lines are collected as they come.
pub(crate) struct Watched {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    name: String,
    /// The threads reading stdout and stderr: done once the pipes close.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watched {
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Watched {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let mut readers = Vec::new();
        for pipe in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
            let (sink, tx) = (logs.clone(), tx.clone());
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        Watched {
            child,
            logs,
            lines,
            name: name.into(),
            readers,
        }
    }

    /// Waits (bounded by `limit`) for an output line containing `needle` and returns it.
    pub(crate) fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        if let Some(l) = self
            .logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(needle))
        {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no output line with {needle:?} within {limit:?}; output:\n{}",
                    self.name,
                    self.logs.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Like [`Self::wait_for`] but says whether the line came instead of failing.
    pub(crate) fn saw_within(&mut self, needle: &str, limit: Duration) -> bool {
        if self.logs.lock().unwrap().iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }

    /// How many output lines so far contain `needle`.
    pub(crate) fn count(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until `n` output lines contain `needle`.
    pub(crate) fn wait_count(&mut self, needle: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.count(needle) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "{}: fewer than {n} lines with {needle:?} within {limit:?}; output:\n{}",
                    self.name,
                    self.output()
                );
            }
        }
    }

    pub(crate) fn output(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {}", self.name);
    }

    /// Waits (bounded) for the process to exit, and for everything it printed to be read, so
    /// that [`Self::output`] is whole afterwards.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // The pipes close when the process (and anything it started that kept them)
                // is gone; the readers end then.
                while self.readers.iter().any(|r| !r.is_finished()) {
                    assert!(
                        Instant::now() < deadline,
                        "{}: output pipes still open {limit:?} after exit",
                        self.name
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the process said (the last lines are the ones that
        // explain a failure).
        if std::thread::panicking() {
            // What the process wrote last (a panic message) may still be in the pipes: they
            // close now that it is gone, and the readers end (bounded: a grandchild could
            // keep them open).
            let deadline = Instant::now() + Duration::from_secs(2);
            while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
            let tail = &logs[logs.len().saturating_sub(60)..];
            eprintln!(
                "--- {}: last {} lines of output ---\n{}",
                self.name,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Fails with a clear message when a tool the test needs is not installed.
pub(crate) fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: this interop test needs it (apt-get install {package}); .ci/run installs it"
    );
}

/// The address in a `listening ... addr=IP:PORT` log line.
pub(crate) fn logged_addr(line: &str) -> SocketAddr {
    let field = line
        .split("addr=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next());
    field
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A TCP port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real ocfd binary on 127.0.0.1 port 0.
pub(crate) struct Daemon {
    pub proc: Watched,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    /// The state directory (`state` in the temporary directory unless the test chose one).
    state: std::path::PathBuf,
}

impl Daemon {
    /// Starts ocfd with `diameter_toml` added to the [diameter] table of a config that listens
    /// on 127.0.0.1:0.
    pub(crate) fn start(diameter_toml: &str) -> Daemon {
        Self::start_with(diameter_toml, &[])
    }

    pub(crate) fn start_with(diameter_toml: &str, args: &[&str]) -> Daemon {
        Self::start_in(tempfile::tempdir().unwrap(), diameter_toml, args)
    }

    /// Starts ocfd with its state in `dir` (kept across restarts by [`Daemon::into_dir`]).
    pub(crate) fn start_in(dir: tempfile::TempDir, diameter_toml: &str, args: &[&str]) -> Daemon {
        Self::start_in_env(dir, diameter_toml, args, &[])
    }

    /// [`Daemon::start_in`] with extra environment variables.
    pub(crate) fn start_in_env(
        dir: tempfile::TempDir,
        diameter_toml: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let state = dir.path().join("state");
        Self::start_at(dir, &state, diameter_toml, args, env)
    }

    /// [`Daemon::start_in`] with the state directory at `state` (anywhere, e.g. on a file
    /// system the test mounted); the configuration file stays in `dir`.
    pub(crate) fn start_in_state(
        dir: tempfile::TempDir,
        state: &std::path::Path,
        diameter_toml: &str,
        args: &[&str],
    ) -> Daemon {
        Self::start_at(dir, state, diameter_toml, args, &[])
    }

    fn start_at(
        dir: tempfile::TempDir,
        state: &std::path::Path,
        diameter_toml: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let cfg = dir.path().join("ocfd.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\nworker_threads = 2\n[log]\nlevel = \"debug\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\n{diameter_toml}\n",
                state.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocfd"));
        cmd.arg("--config").arg(&cfg).args(args);
        cmd.envs(env.iter().copied());
        let mut proc = Watched::spawn("ocfd", cmd);
        let line = proc.wait_for("listening transport=\"tcp\"", WAIT);
        Daemon {
            proc,
            addr: logged_addr(&line),
            _dir: dir,
            state: state.to_path_buf(),
        }
    }

    /// Stops the process (SIGKILL unless it already exited) and keeps its state directory.
    pub(crate) fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
        std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap())
    }

    /// SIGKILL: no shutdown, no flush.
    pub(crate) fn kill9(&mut self) {
        self.proc.signal("KILL");
        self.proc.wait_exit(WAIT);
    }

    /// The state directory.
    pub(crate) fn state_path(&self) -> std::path::PathBuf {
        self.state.clone()
    }

    /// The admin listener's address (from its log line).
    pub(crate) fn admin_addr(&mut self) -> SocketAddr {
        logged_addr(&self.proc.wait_for("listening transport=\"http\"", WAIT))
    }

    /// An admin API client with the token ocfd created in its state directory.
    pub(crate) fn admin(&mut self) -> Http {
        let token = std::fs::read_to_string(self.state_path().join("admin-token")).unwrap();
        Http {
            addr: self.admin_addr(),
            token: Some(token.trim().to_owned()),
        }
    }

    /// The configuration file it was started with (a test may rewrite it and reload).
    pub(crate) fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("ocfd.toml")
    }

    pub(crate) fn wait_log(&mut self, needle: &str) -> String {
        self.proc.wait_for(needle, WAIT)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.proc.signal("TERM");
        self.proc.wait_exit(WAIT)
    }

    /// Still running (has not crashed).
    pub(crate) fn assert_alive(&mut self) {
        assert!(
            self.proc.child.try_wait().unwrap().is_none(),
            "ocfd exited; logs:\n{}",
            self.proc.output()
        );
    }

    /// A fresh connection completes CER/CEA with 2001.
    pub(crate) fn assert_serving(&mut self) {
        self.assert_alive();
        let mut conn = Conn::connect(self.addr);
        let cea = conn.handshake("check.localdomain");
        assert_eq!(result_code(&cea), 2001);
    }
}

pub(crate) fn identity(host: &str) -> LocalIdentity {
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

pub(crate) fn cer(host: &str) -> BytesMut {
    let mut b = BytesMut::new();
    identity(host).write_cer(&mut b, 0x1000, 0x2000);
    b
}

pub(crate) fn result_code(m: &Message) -> u32 {
    m.find(c::RESULT_CODE).expect("Result-Code").u32().unwrap()
}

/// What a read ended with.
#[derive(Debug)]
pub(crate) enum Read_ {
    Frame(Message),
    Closed,
    Timeout,
}

/// A byte stream under a [`Conn`]: TCP, or TLS over TCP.
pub(crate) trait Transport: Read + Write + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Transport for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A raw blocking connection with bounded reads.
pub(crate) struct Conn {
    pub s: Box<dyn Transport>,
    buf: BytesMut,
}

impl Conn {
    pub(crate) fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        s.set_nodelay(true).unwrap();
        Conn {
            s: Box::new(s),
            buf: BytesMut::new(),
        }
    }

    /// Connects over TLS (RFC 6733 §13) with `config`, checking the server's certificate for
    /// `server_name`; the handshake completes before this returns, or its error is returned.
    pub(crate) fn connect_tls(
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> std::io::Result<Conn> {
        let mut tcp = TcpStream::connect_timeout(&addr, WAIT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(WAIT))?;
        let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut tls = rustls::ClientConnection::new(config, name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)?;
        }
        Ok(Conn {
            s: Box::new(rustls::StreamOwned::new(tls, tcp)),
            buf: BytesMut::new(),
        })
    }

    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("send");
    }

    /// Reads the next whole message, or notices the close, within `limit`.
    pub(crate) fn read(&mut self, limit: Duration) -> Read_ {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(len)) = frame::check(&self.buf, 1 << 24) {
                if self.buf.len() >= len {
                    let f: Bytes = self.buf.split_to(len).freeze();
                    return Read_::Frame(
                        Message::decode(f).expect("ocfd sent a malformed message"),
                    );
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read_::Timeout;
            }
            self.s.tcp().set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Read_::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read_::Timeout;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Said, so that a connection reset reads differently from an orderly close.
                    eprintln!("read from ocfd failed: {e} ({:?})", e.kind());
                    return Read_::Closed;
                }
            }
        }
    }

    pub(crate) fn expect_frame(&mut self) -> Message {
        match self.read(WAIT) {
            Read_::Frame(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    pub(crate) fn expect_closed(&mut self) {
        match self.read(WAIT) {
            Read_::Closed => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    pub(crate) fn handshake(&mut self, host: &str) -> Message {
        self.send(&cer(host));
        self.expect_frame()
    }
}

/// A gateway connection that sends CCRs one at a time. Like a gateway, it answers the
/// requests ocfd sends on its own (RAR, ASR) with 2001 while it waits for a CCA, and notes
/// their command codes in `answered`.
pub(crate) struct Gw {
    pub conn: Conn,
    hop: u32,
    pub answered: Vec<u32>,
}

impl Gw {
    pub(crate) fn open(d: &Daemon, host: &str) -> Gw {
        Self::open_at(d.addr, host)
    }

    /// A gateway on a connection whose CER/CEA is done.
    pub(crate) fn over(conn: Conn) -> Gw {
        Gw {
            conn,
            hop: 1,
            answered: Vec::new(),
        }
    }

    pub(crate) fn open_at(addr: SocketAddr, host: &str) -> Gw {
        let mut conn = Conn::connect(addr);
        assert_eq!(result_code(&conn.handshake(host)), 2001);
        Gw {
            conn,
            hop: 1,
            answered: Vec::new(),
        }
    }

    pub(crate) fn send(
        &mut self,
        spec: &ocf_loadtest::gy::CcrSpec,
    ) -> (Message, ocf_loadtest::gy::CcaResult) {
        let mut b = BytesMut::new();
        self.hop += 1;
        spec.write(&mut b, self.hop, self.hop);
        self.conn.send(&b);
        let mut m = self.conn.expect_frame();
        while m.header.is_request() && matches!(m.header.command_code, 258 | 274) {
            self.answer_server_request(&m);
            m = self.conn.expect_frame();
        }
        assert_eq!(
            (m.header.command_code, m.header.hop_by_hop),
            (272, self.hop)
        );
        let r = ocf_loadtest::gy::CcaResult::read(&m);
        (m, r)
    }

    /// Answers a RAR or ASR from ocfd with 2001.
    fn answer_server_request(&mut self, req: &Message) {
        self.conn.send(&answer_of(req, "pgw.localdomain", 2001));
        self.answered.push(req.header.command_code);
    }

    pub(crate) fn ask(&mut self, spec: &ocf_loadtest::gy::CcrSpec) -> ocf_loadtest::gy::CcaResult {
        self.send(spec).1
    }

    /// Sends a CCR; `None` if the connection dropped before the answer (a crash).
    pub(crate) fn try_ask(
        &mut self,
        spec: &ocf_loadtest::gy::CcrSpec,
    ) -> Option<ocf_loadtest::gy::CcaResult> {
        let mut b = BytesMut::new();
        self.hop += 1;
        spec.write(&mut b, self.hop, self.hop);
        if self.conn.s.write_all(&b).is_err() {
            return None;
        }
        match self.conn.read(WAIT) {
            Read_::Frame(m) => Some(ocf_loadtest::gy::CcaResult::read(&m)),
            _ => None,
        }
    }
}

/// An admin API client (the one `ocfctl` uses).
pub(crate) struct Http {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Http {
    /// Sends a request; returns the status and the body parsed as JSON (Null if empty or not
    /// JSON).
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let c = ocf::ctl::http::Client {
            addr: self.addr,
            token: self.token.clone(),
            timeout: WAIT,
        };
        let a = c.call(method, path, body).unwrap();
        (a.status, a.json())
    }
}

/// The outbox's events for `query` (e.g. `kind=blocked`), waiting (long polls after the last
/// one seen, bounded by WAIT) until there are at least `n`.
#[allow(dead_code)]
pub(crate) fn events_of(api: &Http, query: &str, n: usize) -> Vec<serde_json::Value> {
    let mut got: Vec<serde_json::Value> = Vec::new();
    let mut after = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while got.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{n} events expected for {query}, got {got:?}"
        );
        let (status, v) = api.call(
            "GET",
            &format!("/v1/events?{query}&after={after}&wait_ms=2000"),
            None,
        );
        assert_eq!(status, 200, "{v}");
        got.extend(v["events"].as_array().cloned().unwrap_or_default());
        after = v["next_after"].as_u64().unwrap_or(after);
    }
    got
}

/// The answer a peer `host` (realm `localdomain`) gives to a request ocfd sent (RAR, ASR, SNR):
/// its Session-Id echoed and `result`.
#[allow(dead_code)]
pub(crate) fn answer_of(req: &Message, host: &str, result: u32) -> BytesMut {
    use ocf_protocol::codes::avp as c;
    let mut out = BytesMut::new();
    let mut w = ocf_protocol::MessageWriter::new(&mut out, &req.header.answer());
    if let Some(sid) = req.find(c::SESSION_ID).and_then(|a| a.utf8().ok()) {
        w.utf8(c::SESSION_ID, sid);
    }
    w.u32(c::RESULT_CODE, result);
    w.identity(c::ORIGIN_HOST, host);
    w.identity(c::ORIGIN_REALM, "localdomain");
    w.finish();
    out
}

/// `ocf-loadtest`, built beside the test binaries by the workspace's test build.
#[allow(dead_code)]
pub(crate) fn loadtest() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .ancestors()
        .nth(2)
        .map(|d| d.join("ocf-loadtest"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: cargo build -p ocf-loadtest (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// Fails clearly unless the tests run as root (mounting a tmpfs needs it).
pub(crate) fn require_root() {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        uid == "0",
        "this test needs root to mount a tmpfs (id -u says {uid:?}); run it as root"
    );
}

/// A small tmpfs mounted on a fresh directory; unmounted (lazily) when dropped.
pub(crate) struct Tmpfs {
    pub(crate) point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub(crate) fn mount(mib: u64) -> Tmpfs {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("state");
        std::fs::create_dir(&point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "ocfd-test"])
            .arg(&point)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {} failed ({status}); this test needs root to mount a tmpfs",
            point.display()
        );
        Tmpfs { point, _dir: dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

/// Appends to `path` until the file system is full (ENOSPC); returns the octets written.
pub(crate) fn fill(path: &Path) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
        assert!(total < (64 << 20), "{} did not fill up", path.display());
    }
    total
}

/// A client's TLS settings: servers' certificates checked against the CA in `ca`, `who`'s
/// certificate presented (none: no client certificate), only `versions` spoken.
pub(crate) fn tls_client(
    ca: &Path,
    who: Option<&pki::Files>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ocf_transport::tls::certificates(ca).unwrap() {
        roots.add(c).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    std::sync::Arc::new(match who {
        Some(f) => b
            .with_client_auth_cert(
                ocf_transport::tls::certificates(&f.cert).unwrap(),
                ocf_transport::tls::private_key(&f.key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}
