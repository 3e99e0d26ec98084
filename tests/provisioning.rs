//! Tenants from provisioning files, end to end: policies (redirect and restrict at the limit,
//! denied rating groups), every Subscription-Id type, bad files refused before binding, and a
//! generated tenant set.

mod common;

use std::process::Command;

use bytes::BytesMut;
use common::*;
use ocf_loadtest::gy::{CcaResult, CcrSpec, INITIAL, MsccSpec, UPDATE};

const MIB: u64 = 1024 * 1024;

fn ask(conn: &mut Conn, spec: &CcrSpec, hop: u32) -> CcaResult {
    let mut b = BytesMut::new();
    spec.write(&mut b, hop, hop);
    conn.send(&b);
    CcaResult::read(&conn.expect_frame())
}

fn rsu(rg: u32) -> MsccSpec {
    MsccSpec {
        rating_group: Some(rg),
        requested_octets: Some(None),
        ..Default::default()
    }
}

const TENANTS: &str = r#"
[[tenant]]
name = "globex"
time_zone = "Europe/London"
[tenant.policy]
slice_octets = "4 MiB"
validity_time_s = 300
final_unit_action = "redirect"
redirect_address = "http://approve.globex.example/"
denied_rating_groups = [666]

[[tenant.node]]
path = "globex"
limits = [{ unit = "octets", period = "month", amount = "1 GiB" }]

[[tenant.node]]
path = "globex/finance"
limits = [{ unit = "octets", period = "day", amount = "6 MiB" }]

[[tenant.node]]
path = "globex/finance/ceo"
nai = "ceo@globex.example"
sip_uri = "sip:ceo@globex.example"

[[tenant]]
name = "initech"
[tenant.policy]
final_unit_action = "restrict"
filter_ids = ["walled-garden"]
restriction_rules = ["permit out ip from any to 10.0.0.1"]

[[tenant.node]]
path = "initech"
limits = [{ unit = "octets", amount = "10 MiB" }]

[[tenant.devices]]
parent = "initech"
msisdn_from = 447700900100
imsi_from = 234150000000100
count = 5
"#;

#[test]
fn policies_from_a_provisioning_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, TENANTS).unwrap();
    let d = Daemon::start_with(
        &format!(
            "[charging]\nembedded_tenant = false\ntenant_files = [\"{}\"]\n",
            file.display()
        ),
        &[],
    );
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);

    // By NAI: 4 MiB slices; the finance cost centre's 6 MiB a day runs out on the second.
    let mut ceo = CcrSpec::new("g;1", INITIAL, 0).mscc(rsu(1));
    ceo.subscriptions.push((3, "CEO@globex.example".into()));
    let i = ask(&mut conn, &ceo, 1);
    assert_eq!(
        (
            i.mscc[0].granted_octets,
            i.mscc[0].validity_time,
            i.mscc[0].final_unit_action
        ),
        (Some(4 * MIB), Some(300), None)
    );
    let mut by_sip = CcrSpec::new("g;2", INITIAL, 0).mscc(rsu(1));
    by_sip
        .subscriptions
        .push((2, "sip:ceo@globex.example".into()));
    let j = ask(&mut conn, &by_sip, 2);
    assert_eq!(j.mscc[0].granted_octets, Some(2 * MIB));
    assert_eq!(
        j.mscc[0].final_unit_action,
        Some(1),
        "REDIRECT at the limit"
    );
    assert_eq!(
        j.mscc[0].redirect_address.as_deref(),
        Some("http://approve.globex.example/")
    );
    // A denied rating group: 4010 for that MSCC (and the command, as it is the only one).
    let denied = ask(&mut conn, &CcrSpec::new("g;1", UPDATE, 1).mscc(rsu(666)), 3);
    assert_eq!(
        (denied.result_code, denied.mscc[0].result_code),
        (4010, Some(4010))
    );

    // A device range, by IMSI: the whole 10 MiB is one grant, with RESTRICT_ACCESS.
    let r = ask(
        &mut conn,
        &CcrSpec::new("i;1", INITIAL, 0)
            .imsi("234150000000104")
            .mscc(rsu(1)),
        4,
    );
    assert_eq!(
        (r.mscc[0].granted_octets, r.mscc[0].final_unit_action),
        (Some(10 * MIB), Some(2))
    );
    // The embedded tenant is off: acme's devices are unknown here.
    let acme = ask(
        &mut conn,
        &CcrSpec::new("a;1", INITIAL, 0)
            .msisdn("15551000000")
            .mscc(rsu(1)),
        5,
    );
    assert_eq!(acme.result_code, 5030);
}

#[test]
fn a_bad_provisioning_file_stops_startup_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[tenant]]\nname = \"x\"\n[[tenant.node]]\npath = \"x/y\"\n",
    )
    .unwrap();
    let cfg = dir.path().join("ocfd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[diameter]\nlisten_tcp = [\"127.0.0.1:0\"]\n[charging]\ntenant_files = [\"{}\"]\n",
            file.display()
        ),
    )
    .unwrap();
    for args in [
        vec!["--config", cfg.to_str().unwrap(), "--check-config"],
        vec!["--config", cfg.to_str().unwrap()],
    ] {
        let mut p = Watched::spawn("ocfd", {
            let mut c = Command::new(env!("CARGO_BIN_EXE_ocfd"));
            c.args(&args)
                .arg("--state-dir")
                .arg(dir.path().join("state"));
            c
        });
        let status = p.wait_exit(WAIT);
        assert_eq!(status.code(), Some(64), "{}", p.output());
        assert!(
            p.output()
                .contains("bad.toml: tenant 'x': node 'x/y': parent 'x' is not defined"),
            "{}",
            p.output()
        );
        assert!(!p.output().contains("listening"));
    }
}

#[test]
fn a_generated_tenant_set_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gen.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .args([
            "tenants",
            "generate",
            "--enterprises",
            "100",
            "--devices",
            "100000",
            "--out",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(env!("CARGO_BIN_EXE_ocfd"))
        .args(["tenants", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("100 tenants, 200000 subscription ids")
    );
    let d = Daemon::start_with(
        &format!("[charging]\ntenant_files = [\"{}\"]\n", file.display()),
        &[],
    );
    let mut conn = Conn::connect(d.addr);
    assert_eq!(result_code(&conn.handshake("pgw.localdomain")), 2001);
    // The last generated device, and the embedded tenant beside it.
    let last = ask(
        &mut conn,
        &CcrSpec::new("gen;1", INITIAL, 0)
            .msisdn("155520099999")
            .mscc(rsu(1)),
        1,
    );
    assert_eq!(last.mscc[0].granted_octets, Some(10 * MIB));
    let by_imsi = ask(
        &mut conn,
        &CcrSpec::new("gen;2", INITIAL, 0)
            .imsi("001020000000000")
            .mscc(rsu(1)),
        2,
    );
    assert_eq!(by_imsi.mscc[0].granted_octets, Some(10 * MIB));
    let acme = ask(
        &mut conn,
        &CcrSpec::new("gen;3", INITIAL, 0)
            .msisdn("15551000000")
            .mscc(rsu(1)),
        3,
    );
    assert_eq!(acme.mscc[0].granted_octets, Some(10 * MIB));
}
