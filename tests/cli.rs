//! The ocfd command line: help, configuration checks (exit 64 before binding), `decode`.

use std::process::Command;

fn ocfd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .args(args)
        .output()
        .expect("run ocfd")
}

const DWR_HEX: &str = "0100004c80000118000000000000000100000002000001084000001667772e6578616d706c652e6e6574000000000128400000136578616d706c652e6e657400000001164000000c00000007";

#[test]
fn help_describes_every_option() {
    let out = ocfd(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for opt in [
        "--config",
        "--check-config",
        "--listen",
        "--listen-sctp",
        "--state-dir",
        "--log-level",
        "--log-format",
        "decode",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}:\n{text}");
    }
    assert!(
        text.contains("ocfd.localdomain"),
        "--help names the embedded default"
    );
}

/// Runs ocfd and waits (bounded) for it to exit; a daemon that keeps running fails the test.
fn ocfd_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ocfd {args:?} kept running: the configuration was accepted");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn bad_configuration_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("listen_tcp = [\"127.0.0.1:{port}\"]");
    let cases = [
        (
            format!("[diameter]\n{listen}\norigin_hots = \"x\"\n"),
            "unknown field",
        ),
        (
            format!("[diameter]\n{listen}\nwatchdog_s = 2\n"),
            "diameter.watchdog_s",
        ),
        (
            format!("[diameter]\nlisten_tcp = [\"127.0.0.1:{port}\", \"nonsense\"]\n"),
            "diameter.listen_tcp",
        ),
        (
            format!("[diameter]\n{listen}\n[log]\nformat = \"xml\"\n"),
            "format",
        ),
        (
            format!("[diameter]\n{listen}\nallowed_peers = [\"not a host\"]\n"),
            "diameter.allowed_peers",
        ),
    ];
    for (text, want) in &cases {
        let cfg = dir.path().join("bad.toml");
        std::fs::write(&cfg, text).unwrap();
        let path = cfg.to_str().unwrap();
        let (code, err) = ocfd_exit(&["--config", path, "--check-config"]);
        assert_eq!(code, Some(64), "{text}");
        assert!(err.contains(want), "{err} lacks {want}");
        let (code, _) = ocfd_exit(&["--config", path]);
        assert_eq!(code, Some(64), "{text}");
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "nothing may have been bound"
        );
    }
    // A broken vendor dictionary stops startup with file:line:column.
    let dicts = dir.path().join("dicts");
    std::fs::create_dir(&dicts).unwrap();
    std::fs::write(
        dicts.join("acme.xml"),
        "<dictionary>\n  <avp name=\"X\" code=\"1\" type=\"Nope\"/>\n</dictionary>\n",
    )
    .unwrap();
    let cfg = dir.path().join("dict.toml");
    std::fs::write(
        &cfg,
        format!(
            "[diameter]\n{listen}\ndictionary_dir = \"{}\"\n",
            dicts.display()
        ),
    )
    .unwrap();
    let (code, err) = ocfd_exit(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("acme.xml:2:3: unknown data format 'Nope'"),
        "{err}"
    );

    let (code, err) = ocfd_exit(&["--config", "/nonexistent/ocfd.toml"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("/nonexistent/ocfd.toml"), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, include_str!("../systemd/ocfd.toml")).unwrap();
    let (code, err) = ocfd_exit(&["--config", good.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn decode_prints_names_and_values() {
    let out = ocfd(&["decode", DWR_HEX]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "Device-Watchdog-Request (code 280) flags R--- length 76 application 0 (Diameter Common Messages) hop-by-hop 0x00000001 end-to-end 0x00000002",
            "  Origin-Host (264) -M- len 22 = \"gw.example.net\"",
            "  Origin-Realm (296) -M- len 19 = \"example.net\"",
            "  Origin-State-Id (278) -M- len 12 = 7",
        ]
    );
    let out = ocfd(&["decode", "zz"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn decode_reads_stdin_and_uses_vendor_dictionaries() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("acme.xml"),
        r#"<dictionary><avp name="Acme-Flavour" code="278" type="Unsigned32"/></dictionary>"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .args([
            "decode",
            "-",
            "--dictionary-dir",
            dir.path().to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(DWR_HEX.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("Acme-Flavour (278) -M- len 12 = 7")
    );
}
