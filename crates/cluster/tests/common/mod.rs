//! What the cluster's tests share: a real `nats-server` with JetStream on loopback.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` with JetStream, on a free loopback port, stopped (by PID) on drop.
pub(crate) struct Nats {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub(crate) fn start() -> Nats {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "nats-server is not installed: these tests need it (apt-get install nats-server); scripts/test installs it"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        // Ready once it says so (bounded: it reads nothing else first).
        let log = BufReader::new(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        for line in log.lines() {
            let line = line.unwrap_or_default();
            if line.contains("Server is ready") {
                break;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
        }
        Nats {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(format!("127.0.0.1:{}", self.port))
            .await
            .expect("connect to nats-server");
        async_nats::jetstream::new(client)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
