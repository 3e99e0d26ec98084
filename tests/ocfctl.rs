//! `ocfctl` against a running ocfd: tables a person can read, JSON a script can, and exit
//! statuses that tell refused (1), wrong command line (2) and unreachable (3) apart.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;

struct Ctl {
    url: String,
    token_file: std::path::PathBuf,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ocfctl"))
            .arg("--url")
            .arg(&self.url)
            .arg("--token-file")
            .arg(&self.token_file)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

#[test]
fn ocfctl_builds_moves_and_shows() {
    let mut d = Daemon::start("");
    let ctl = Ctl {
        url: format!("http://{}", d.admin_addr()),
        token_file: d.state_path().join("admin-token"),
    };
    let tenants = ctl.ok(&["tenants"]);
    assert!(tenants.starts_with("TENANT"), "{tenants}");
    assert!(
        tenants.contains("acme") && tenants.contains("10004"),
        "{tenants}"
    );

    ctl.ok(&["add-tenant", "initech", "--limit", "octets:month:10GiB"]);
    ctl.ok(&["add", "initech/field", "--limit", "octets:2GiB"]);
    let van = ctl.ok(&[
        "add",
        "initech/field/van7",
        "--msisdn",
        "447700900777",
        "--limit",
        "octets:30MiB",
    ]);
    assert!(van.contains("subscriptions: e164:447700900777"), "{van}");
    assert!(van.contains("30.0 MiB"), "{van}");

    let moved = ctl.json(&["move", "initech/field", "initech/field/van7", "20MiB"]);
    assert_eq!(moved["to"]["limits"][0]["limit"], 50 << 20);
    let tree = ctl.ok(&["tree", "initech", "--depth", "3"]);
    assert!(
        tree.contains("└─ field") && tree.contains("   └─ van7"),
        "{tree}"
    );
    assert!(tree.contains("of 50.0 MiB"), "{tree}");

    // A gateway opens a session: it shows under the cost centre.
    let mut gw = Gw::open(&d, "pgw.localdomain");
    let ccr = ocf_loadtest::gy::CcrSpec::new("van;1", ocf_loadtest::gy::INITIAL, 0)
        .msisdn("447700900777")
        .mscc(ocf_loadtest::gy::MsccSpec {
            rating_group: Some(1),
            requested_octets: Some(None),
            ..Default::default()
        });
    assert_eq!(gw.ask(&ccr).result_code, 2001);
    let sessions = ctl.ok(&["sessions", "initech"]);
    assert!(
        sessions.contains("van;1") && sessions.contains("e164:447700900777"),
        "{sessions}"
    );
    let usage = ctl.ok(&["usage", "initech/field"]);
    assert!(
        usage.contains("initech/field/van7") && usage.contains("10.0 MiB"),
        "{usage}"
    );

    // Refused by the API: exit 1 with its reason; bad command line: 2; nobody there: 3.
    let refused = ctl.run(&["move", "initech/field", "initech/field/van7", "20GiB"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("409"));
    assert_eq!(ctl.run(&["limit", "initech/field"]).status.code(), Some(2));
    assert_eq!(
        ctl.run(&["add", "x/y", "--limit", "octets"]).status.code(),
        Some(2)
    );
    let away = Ctl {
        url: format!("http://127.0.0.1:{}", free_port()),
        token_file: ctl.token_file.clone(),
    };
    assert_eq!(away.run(&["tenants"]).status.code(), Some(3));
    let no_token = Ctl {
        url: ctl.url.clone(),
        token_file: "/nonexistent".into(),
    };
    let out = no_token.run(&["tenants"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let ids = ctl.ok(&["ids", "initech/field/van7", "--imsi", "234150000000777"]);
    assert!(ids.contains("subscriptions: imsi:234150000000777"), "{ids}");
    ctl.ok(&["remove", "initech/field/van7"]);
    assert_eq!(
        ctl.run(&["node", "initech/field/van7"]).status.code(),
        Some(1)
    );
    let p = ctl.ok(&[
        "policy",
        "initech",
        "--set",
        r#"{"final_unit_action":"restrict","filter_ids":["walled"]}"#,
    ]);
    assert!(p.contains("\"restrict\""), "{p}");
    assert_eq!(ctl.ok(&["ready"]), "ready\n");
}
