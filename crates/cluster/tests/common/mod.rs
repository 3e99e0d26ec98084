//! What the cluster's tests share: real `nats-server` processes with JetStream on loopback, one
//! alone or three in a cluster, each stopped by its PID (on drop, or killed and restarted on
//! purpose with the same store and ports).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One server: its ports and store stay the same across a kill and a restart.
pub(crate) struct Server {
    pub(crate) name: String,
    port: u16,
    cluster_port: u16,
    routes: Vec<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    lines: Option<mpsc::Receiver<String>>,
}

impl Server {
    fn spawn(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-n", &self.name, "-sd"])
            .arg(self.dir.path());
        if !self.routes.is_empty() {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "ocfd-test"])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", self.cluster_port),
                ])
                .args(["--routes", &routes.join(",")])
                // Clients reach only the servers they were given (a test's proxy stays in
                // the way), not the ones the cluster would advertise.
                .arg("--no_advertise");
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        // Its log, read to the end on a thread of its own (a full pipe would stop the server).
        let (tx, rx) = mpsc::channel();
        let log = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in log.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        self.lines = Some(rx);
        self.wait_for("Server is ready");
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub(crate) fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let rx = self.lines.as_ref().expect("the server runs");
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "nats-server {} never logged {needle:?}; it logged:\n{}",
                    self.name,
                    seen.join("\n")
                ),
            }
        }
    }

    /// SIGKILL, and waits for it to be gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.lines = None;
    }

    /// Starts it again on the same ports and store.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One server alone, or a cluster.
pub(crate) struct Nats {
    pub(crate) servers: Vec<Server>,
}

fn require_nats_server() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "nats-server is not installed: these tests need it (apt-get install nats-server); scripts/test installs it"
    );
}

impl Nats {
    /// One server with JetStream.
    pub(crate) fn start() -> Nats {
        Nats::with(1)
    }

    /// `n` servers in one cluster with JetStream, once it has a metadata leader.
    pub(crate) fn cluster(n: usize) -> Nats {
        Nats::with(n)
    }

    fn with(n: usize) -> Nats {
        require_nats_server();
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers: Vec<Server> = (0..n)
            .map(|i| Server {
                name: format!("n{i}"),
                port: free_port(),
                cluster_port: cluster_ports[i],
                routes: if n > 1 {
                    cluster_ports
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| *p)
                        .collect()
                } else {
                    Vec::new()
                },
                dir: tempfile::tempdir().unwrap(),
                child: None,
                lines: None,
            })
            .collect();
        for s in &mut servers {
            s.spawn();
        }
        if n > 1 {
            servers[0].wait_for("metadata leader");
        }
        let nats = Nats { servers };
        if n > 1 {
            nats.wait_for_placement(n);
        }
        nats
    }

    /// Waits (bounded) until the cluster places a stream on all `n` servers: a metadata
    /// leader may be elected before every peer has joined, and a bucket made then is refused
    /// ("no suitable peers for placement"). On a thread of its own, so that async tests may
    /// call it too.
    fn wait_for_placement(&self, n: usize) {
        let urls: Vec<String> = self.servers.iter().map(Server::url).collect();
        let placed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the probe");
            rt.block_on(async move {
                let client = async_nats::connect(urls)
                    .await
                    .expect("connect to nats-server");
                let js = async_nats::jetstream::new(client);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    let probe = async_nats::jetstream::stream::Config {
                        name: "PLACEMENT_PROBE".into(),
                        subjects: vec!["placement.probe".into()],
                        num_replicas: n,
                        ..Default::default()
                    };
                    match js.create_stream(probe).await {
                        Ok(_) => {
                            let _ = js.delete_stream("PLACEMENT_PROBE").await;
                            return Ok(());
                        }
                        Err(_) if std::time::Instant::now() < deadline => {
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            })
        })
        .join()
        .expect("the placement probe");
        if let Err(e) = placed {
            panic!("the NATS cluster never placed a stream on its {n} servers within 30 s: {e}");
        }
    }

    /// A JetStream context over a connection that knows every server (it moves to another
    /// when the one it is on goes).
    pub(crate) async fn jetstream(&self) -> async_nats::jetstream::Context {
        let urls: Vec<String> = self.servers.iter().map(Server::url).collect();
        let client = async_nats::connect(urls)
            .await
            .expect("connect to nats-server");
        async_nats::jetstream::new(client)
    }
}
