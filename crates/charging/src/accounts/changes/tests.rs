//! Account changes: imports apply only what the files changed, API changes are checked whole,
//! and the change log rebuilds the same tree.

use super::*;
use crate::accounts::Accounts;
use crate::accounts::provisioning::ThresholdSpec;
use crate::accounts::tenant::{GIB, MIB, SubscriptionType};
use crate::ledger::{AccountRef, Ledger, Level};

const NOW: i64 = 1_795_000_000;

/// A tree's shape: its name and removal, and its nodes by name, parent and removal.
type Shape = (String, bool, Vec<(String, Option<u32>, bool)>);

fn fingerprint(l: &Ledger) -> Vec<Shape> {
    (0..l.tree_count() as u32)
        .filter_map(|t| l.lock(t))
        .map(|t| {
            let nodes = t
                .nodes
                .iter()
                .map(|n| (n.name.to_string(), n.parent, n.removed))
                .collect();
            (t.name.to_string(), t.removed, nodes)
        })
        .collect()
}

fn engine() -> Accounts {
    Accounts::new(Ledger::new(), Default::default())
}

fn import(e: &Accounts, text: &str) -> Result<Summary, ChangeError> {
    e.change(
        &Change::Import {
            sources: vec![Source {
                name: "t.toml".into(),
                text: text.into(),
            }],
        },
        NOW,
    )
}

const GLOBEX: &str = r#"
[[tenant]]
name = "globex"
[[tenant.node]]
path = "globex"
limits = [{ unit = "octets", amount = "10 GiB" }]
[[tenant.node]]
path = "globex/sales"
limits = [{ unit = "octets", amount = "4 GiB" }]
[[tenant.node]]
path = "globex/ops"
limits = [{ unit = "octets", amount = "4 GiB" }]
[[tenant.node]]
path = "globex/sales/phone"
msisdn = "447700900001"
limits = [{ unit = "octets", amount = "1 GiB" }]
"#;

fn limit(e: &Accounts, path: &str) -> Option<u64> {
    let parts: Vec<&str> = path.split('/').collect();
    let t = e.ledger().find_tree(parts[0])?;
    let tree = e.ledger().lock(t)?;
    let n = tree.find(&parts)?;
    Some(tree.nodes[n as usize].counters.first()?.limit)
}

fn msisdn(e: &Accounts, id: &str) -> Option<AccountRef> {
    e.directory().lookup(SubscriptionType::E164, id)
}

fn set_limit(path: &str, amount: &str) -> Change {
    Change::SetLimits {
        path: path.into(),
        limits: vec![LimitSpec {
            unit: Unit::Octets,
            period: Period::Month,
            amount: Amount::Text(amount.into()),
            class: None,
        }],
    }
}

#[test]
fn an_import_applies_what_the_files_changed_and_nothing_else() {
    let e = engine();
    let s = import(&e, GLOBEX).unwrap();
    assert_eq!(s.tenants_added, 1);
    assert!(msisdn(&e, "447700900001").is_some());
    // A manager raises sales through the API; the same file again leaves that alone.
    e.change(&set_limit("globex/sales", "6 GiB"), NOW).unwrap();
    let s = import(&e, GLOBEX).unwrap();
    assert_eq!(s.nodes_changed + s.nodes_added + s.nodes_removed, 0);
    assert_eq!(limit(&e, "globex/sales"), Some(6 * GIB));
    // The file changes ops and adds a device: only those move; sales keeps the API's limit.
    let changed = GLOBEX.replace(
        "path = \"globex/ops\"\nlimits = [{ unit = \"octets\", amount = \"4 GiB\" }]",
        "path = \"globex/ops\"\nlimits = [{ unit = \"octets\", amount = \"3 GiB\" }]",
    ) + "[[tenant.node]]\npath = \"globex/ops/probe\"\nmsisdn = \"447700900002\"\n";
    let s = import(&e, &changed).unwrap();
    assert_eq!((s.nodes_changed, s.nodes_added), (1, 1));
    assert_eq!(limit(&e, "globex/ops"), Some(3 * GIB));
    assert_eq!(limit(&e, "globex/sales"), Some(6 * GIB));
    let probe = msisdn(&e, "447700900002").unwrap();
    assert_eq!(
        e.ledger().lock(probe.tree).unwrap().names(probe.node),
        ["globex", "ops", "probe"]
    );
    // The device leaves the file: removed, its number unknown; the tenant leaves: removed.
    let s = import(&e, GLOBEX).unwrap();
    assert_eq!(s.nodes_removed, 1);
    assert_eq!(msisdn(&e, "447700900002"), None);
    let s = import(&e, "").unwrap();
    assert_eq!(s.tenants_removed, 1);
    assert_eq!(msisdn(&e, "447700900001"), None);
    assert_eq!(e.ledger().find_tree("globex"), None);
    // And it can come back: a new tree, the tombstone stays where it was.
    import(&e, GLOBEX).unwrap();
    assert_eq!(e.ledger().find_tree("globex"), Some(1));
    assert_eq!(e.ledger().tree_count(), 2);
}

#[test]
fn a_bad_import_changes_nothing() {
    let e = engine();
    import(&e, GLOBEX).unwrap();
    let before = fingerprint(e.ledger());
    let dup = GLOBEX.to_owned()
        + "[[tenant]]\nname = \"other\"\n[[tenant.node]]\npath = \"other\"\nmsisdn = \"447700900001\"\n";
    let err = import(&e, &dup).unwrap_err().to_string();
    assert!(err.contains("447700900001 is already provisioned"), "{err}");
    let bad = GLOBEX.replace("4 GiB", "4 GiBs");
    let err = import(&e, &bad).unwrap_err().to_string();
    assert!(
        err.starts_with("t.toml: tenant 'globex': node 'globex/sales'"),
        "{err}"
    );
    assert_eq!(fingerprint(e.ledger()), before);
    assert_eq!(e.changes_applied(), 1);
}

#[test]
fn api_changes_are_checked_whole() {
    let e = engine();
    import(&e, GLOBEX).unwrap();
    let add = |path: &str, msisdn: Option<&str>| Change::AddNode {
        path: path.into(),
        limits: vec![],
        msisdn: msisdn.map(Into::into),
        imsi: None,
        nai: None,
        sip_uri: None,
    };
    e.change(&add("globex/ops/tablet", Some("447700900003")), NOW)
        .unwrap();
    assert!(msisdn(&e, "447700900003").is_some());
    for (c, want) in [
        (add("globex/ops/tablet", None), "exists already"),
        (
            add("globex/ops/other", Some("447700900001")),
            "already provisioned",
        ),
        (add("globex/nowhere/x", None), "no node 'globex/nowhere'"),
        (add("nobody/x", None), "no tenant 'nobody'"),
        (add("globex//x", None), "not a path"),
        (add("globex", None), "add_tenant"),
        (set_limit("globex/ops", "lots"), "not a number"),
    ] {
        let err = e.change(&c, NOW).unwrap_err().to_string();
        assert!(err.contains(want), "{c:?}: {err}");
    }
    // Removing a cost centre removes its devices and their numbers.
    e.change(
        &Change::Remove {
            path: "globex/ops".into(),
        },
        NOW,
    )
    .unwrap();
    assert_eq!(msisdn(&e, "447700900003"), None);
    assert_eq!(limit(&e, "globex/ops"), None);
    assert_eq!(limit(&e, "globex/sales"), Some(4 * GIB));
}

#[test]
fn an_allowance_moves_only_as_far_as_the_headroom() {
    let e = engine();
    import(&e, GLOBEX).unwrap();
    let mv = |amount: &str| Change::Move {
        from: "globex/sales".into(),
        to: "globex/ops".into(),
        unit: Unit::Octets,
        period: Period::Month,
        amount: Amount::Text(amount.into()),
        class: None,
    };
    // 3 GiB of sales are used: 1 GiB is free to move, not more.
    let sales = {
        let t = e.ledger().lock(0).unwrap();
        t.find(&["globex", "sales"]).unwrap()
    };
    e.ledger().commit(
        AccountRef {
            tree: 0,
            node: sales,
        },
        Unit::Octets,
        0,
        3 * GIB,
        NOW,
    );
    let err = e.change(&mv("2 GiB"), NOW).unwrap_err();
    assert!(matches!(err, ChangeError::Conflict(_)), "{err}");
    assert_eq!(limit(&e, "globex/sales"), Some(4 * GIB));
    e.change(&mv("512 MiB"), NOW).unwrap();
    assert_eq!(limit(&e, "globex/sales"), Some(4 * GIB - 512 * MIB));
    assert_eq!(limit(&e, "globex/ops"), Some(4 * GIB + 512 * MIB));
    // Inside one tenant only, and only between limits that exist.
    import(
        &e,
        &(GLOBEX.to_owned()
            + "[[tenant]]\nname = \"initech\"\n[[tenant.node]]\npath = \"initech\"\n"),
    )
    .unwrap();
    let across = Change::Move {
        from: "globex/sales".into(),
        to: "initech".into(),
        unit: Unit::Octets,
        period: Period::Month,
        amount: Amount::Text("1 MiB".into()),
        class: None,
    };
    assert!(e.change(&across, NOW).is_err());
    let no_limit = Change::Move {
        from: "globex/sales".into(),
        to: "globex/sales/phone".into(),
        unit: Unit::Seconds,
        period: Period::Month,
        amount: Amount::Number(5),
        class: None,
    };
    assert!(e.change(&no_limit, NOW).is_err());
}

#[test]
fn the_change_records_rebuild_the_same_tree() {
    let e = engine();
    // What a change log would keep: each change's record, as it was carried out.
    let mut log: Vec<Change> = Vec::new();
    let mut change = |c: &Change| -> Result<Summary, ChangeError> {
        let p = e.prepare_change(c, NOW)?;
        log.push(p.change().clone());
        Ok(p.carry_out())
    };
    change(&Change::Import {
        sources: vec![Source {
            name: "t.toml".into(),
            text: GLOBEX.into(),
        }],
    })
    .unwrap();
    change(&set_limit("globex/sales", "7 GiB")).unwrap();
    change(&Change::AddNode {
        path: "globex/sales/laptop".into(),
        limits: vec![],
        msisdn: None,
        imsi: None,
        nai: Some("laptop@globex.example".into()),
        sip_uri: None,
    })
    .unwrap();
    change(&Change::Remove {
        path: "globex/sales/phone".into(),
    })
    .unwrap();
    // A refused change is not logged.
    assert!(change(&set_limit("globex/nothing", "1 GiB")).is_err());
    change(&Change::Import {
        sources: vec![Source {
            name: "t.toml".into(),
            text: GLOBEX.replace(
                "globex/ops\"\nlimits = [{ unit = \"octets\", amount = \"4 GiB\" }]",
                "globex/ops\"\nlimits = [{ unit = \"octets\", amount = \"2 GiB\" }]",
            ),
        }],
    })
    .unwrap();

    assert_eq!(log.len(), 5);
    let again = engine();
    for r in &log {
        again.replay_change(NOW, r).unwrap();
    }
    assert_eq!(fingerprint(again.ledger()), fingerprint(e.ledger()));
    assert_eq!(again.changes_applied(), 5);
    for p in ["globex/sales", "globex/ops"] {
        assert_eq!(limit(&again, p), limit(&e, p), "{p}");
    }
    assert_eq!(limit(&again, "globex/sales"), Some(7 * GIB));
    assert_eq!(limit(&again, "globex/ops"), Some(2 * GIB));
    // The phone removed through the API stays removed though the file still has it.
    assert_eq!(msisdn(&again, "447700900001"), None);
    assert_eq!(msisdn(&e, "447700900001"), None);
    assert_eq!(
        again
            .directory()
            .lookup(SubscriptionType::Nai, "LAPTOP@globex.example"),
        e.directory()
            .lookup(SubscriptionType::Nai, "laptop@globex.example")
    );
}

/// A tenant with one range of devices under its root.
fn ranged(name: &str, msisdn_from: u64, imsi_from: Option<u64>, count: u64) -> String {
    let imsi = imsi_from.map_or(String::new(), |i| format!("imsi_from = {i}\n"));
    format!(
        "[[tenant]]\nname = \"{name}\"\n[[tenant.node]]\npath = \"{name}\"\n\
         [[tenant.devices]]\nparent = \"{name}\"\nmsisdn_from = {msisdn_from}\n{imsi}count = {count}\n"
    )
}

#[test]
fn ranges_of_devices_bind_the_same_ids_as_their_strings() {
    // Across a change in the number of digits: 98, 99, 100, 101; IMSIs keep 15 digits.
    let e = engine();
    import(&e, &ranged("r", 98, Some(1_010_000_000_099), 4)).expect("import");
    for (k, n) in ["98", "99", "100", "101"].into_iter().enumerate() {
        let at = msisdn(&e, n).unwrap_or_else(|| panic!("{n} is bound"));
        assert_eq!(at.node, 1 + k as u32, "device {k} is node {}", 1 + k);
        let imsi = format!("{:015}", 1_010_000_000_099u64 + k as u64);
        assert_eq!(
            e.directory().lookup(SubscriptionType::Imsi, &imsi),
            Some(at)
        );
    }
    assert_eq!(msisdn(&e, "097"), None, "leading zeros name another number");
    assert_eq!(msisdn(&e, "97"), None);
    assert_eq!(msisdn(&e, "102"), None);
    assert_eq!(e.directory().subscriber_count(), 8);
    // An IMSI shorter than 15 digits is written (and found) with its leading zeros.
    let e = engine();
    import(&e, &ranged("s", 447_700_900_000, Some(1_234), 2)).expect("import");
    assert!(
        e.directory()
            .lookup(SubscriptionType::Imsi, "000000000001235")
            .is_some()
    );
    assert!(
        e.directory()
            .lookup(SubscriptionType::Imsi, "1235")
            .is_none()
    );
}

#[test]
fn overlapping_ranges_and_ids_are_refused_by_number() {
    let e = engine();
    // Two tenants' ranges overlapping at 15551000099.
    let both = format!(
        "{}{}",
        ranged("a", 15_551_000_000, None, 100),
        ranged("b", 15_551_000_099, None, 10)
    );
    let err = import(&e, &both).expect_err("overlap").to_string();
    assert!(
        err.contains("tenant 'b'") && err.contains("15551000099"),
        "{err}"
    );
    // Their IMSIs overlapping, their MSISDNs not.
    let both = format!(
        "{}{}",
        ranged("a", 15_551_000_000, Some(1_010_000_000_000), 100),
        ranged("b", 15_551_001_000, Some(1_010_000_000_050), 10)
    );
    let err = import(&e, &both).expect_err("overlap").to_string();
    assert!(err.contains("001010000000050"), "{err}");
    // A range over a number a node of another tenant names, in either order.
    let node =
        "[[tenant]]\nname = \"n\"\n[[tenant.node]]\npath = \"n\"\nmsisdn = \"15551000042\"\n";
    for text in [
        format!("{node}{}", ranged("a", 15_551_000_000, None, 100)),
        format!("{}{node}", ranged("a", 15_551_000_000, None, 100)),
    ] {
        let err = import(&e, &text).expect_err("overlap").to_string();
        assert!(err.contains("15551000042"), "{err}");
    }
    assert_eq!(e.directory().subscriber_count(), 0, "nothing was bound");
    // Adjacent ranges are fine; so is the same number with another digit count.
    let fine = format!(
        "{}{}{}",
        ranged("a", 15_551_000_000, None, 100),
        ranged("b", 15_551_000_100, None, 100),
        ranged("c", 0, None, 1)
    );
    import(&e, &fine).expect("adjacent ranges");
    assert_eq!(e.directory().subscriber_count(), 201);
    // A node added through the API cannot take a number of a range.
    let err = e
        .change(
            &Change::AddNode {
                path: "c/x".into(),
                limits: vec![],
                msisdn: Some("15551000150".into()),
                imsi: None,
                nai: None,
                sip_uri: None,
            },
            NOW,
        )
        .expect_err("taken")
        .to_string();
    assert!(err.contains("15551000150"), "{err}");
}

#[test]
fn a_range_beyond_nineteen_digits_is_refused() {
    let e = engine();
    let err = import(&e, &ranged("a", 9_999_999_999_999_999_999, None, 2))
        .expect_err("20 digits")
        .to_string();
    assert!(err.contains("beyond 19 digits"), "{err}");
    let err = import(&e, &ranged("a", 1, Some(u64::MAX), 1))
        .expect_err("overflow")
        .to_string();
    assert!(err.contains("IMSI range goes beyond 19 digits"), "{err}");
}

#[test]
fn a_reimport_moves_a_range_and_its_ids() {
    let e = engine();
    import(
        &e,
        &ranged("a", 15_551_000_000, Some(1_010_000_000_000), 10),
    )
    .expect("import");
    // The range grows by five and its IMSIs move: the new ids are bound, the old ones not.
    import(
        &e,
        &ranged("a", 15_551_000_000, Some(2_020_000_000_000), 15),
    )
    .expect("reimport");
    assert!(msisdn(&e, "15551000014").is_some());
    let dir = e.directory();
    assert!(
        dir.lookup(SubscriptionType::Imsi, "002020000000014")
            .is_some()
    );
    assert!(
        dir.lookup(SubscriptionType::Imsi, "001010000000000")
            .is_none()
    );
    assert_eq!(dir.subscriber_count(), 30);
}

/// The levels of a node's own thresholds that fire when `used` more is charged to `device`.
fn charge(e: &Accounts, device: &str, used: u64) -> Vec<(String, Level)> {
    let at = msisdn(e, device).expect("a device");
    e.ledger()
        .commit_watched(at, Unit::Octets, 0, used, NOW)
        .into_iter()
        .filter(|c| !c.default)
        .map(|c| {
            let t = e.ledger().lock(at.tree).unwrap();
            (t.names(c.node).join("/"), c.level)
        })
        .collect()
}

#[test]
fn node_thresholds_come_from_files_and_the_api_and_rearm_when_allowance_moves_in() {
    let e = engine();
    let with = |thresholds: &str| {
        GLOBEX.replace(
            "path = \"globex/sales\"\n",
            &format!("path = \"globex/sales\"\nthresholds = {thresholds}\n"),
        )
    };
    // sales has 4 GiB: 50% is 2 GiB, and an amount of 3 GiB.
    import(
        &e,
        &with(r#"[{ percent = 50 }, { unit = "octets", period = "month", amount = "3 GiB" }]"#),
    )
    .unwrap();
    let phone = "447700900001";
    assert!(charge(&e, phone, GIB).is_empty());
    assert_eq!(
        charge(&e, phone, GIB),
        [("globex/sales".to_owned(), Level::Percent(50))]
    );
    assert!(charge(&e, phone, MIB).is_empty(), "fired once");
    assert_eq!(
        charge(&e, phone, GIB),
        [("globex/sales".to_owned(), Level::Amount(3 * GIB))]
    );
    // 2 GiB + 1 MiB + 1 GiB used. Moving 4 GiB in makes 50% 4 GiB: re-armed, fires again.
    e.change(
        &Change::Move {
            from: "globex".into(),
            to: "globex/sales".into(),
            unit: Unit::Octets,
            period: Period::Month,
            amount: Amount::Text("4 GiB".into()),
            class: None,
        },
        NOW,
    )
    .unwrap();
    assert!(charge(&e, phone, 512 * MIB).is_empty());
    assert_eq!(
        charge(&e, phone, 512 * MIB),
        [("globex/sales".to_owned(), Level::Percent(50))]
    );
    // The API replaces them; levels already passed count as fired.
    e.change(
        &Change::SetThresholds {
            path: "globex/sales".into(),
            thresholds: vec![
                ThresholdSpec {
                    unit: None,
                    period: None,
                    percent: Some(10),
                    amount: None,
                },
                ThresholdSpec {
                    unit: None,
                    period: None,
                    percent: Some(90),
                    amount: None,
                },
            ],
        },
        NOW,
    )
    .unwrap();
    let view = e.node_view("globex/sales", NOW).unwrap();
    assert_eq!(view.thresholds.len(), 2);
    assert!(
        charge(&e, phone, MIB).is_empty(),
        "10% was passed before it was set"
    );
    // 90% of 8 GiB.
    let used: u64 = 4 * GIB + MIB + MIB;
    assert_eq!(
        charge(&e, phone, (8 * GIB * 9).div_ceil(10) - used),
        [("globex/sales".to_owned(), Level::Percent(90))]
    );
    // A reimport of the same files changes nothing the API did; a changed file sets them again.
    import(
        &e,
        &with(r#"[{ percent = 50 }, { unit = "octets", period = "month", amount = "3 GiB" }]"#),
    )
    .unwrap();
    assert_eq!(
        e.node_view("globex/sales", NOW).unwrap().thresholds.len(),
        2
    );
    import(&e, &with(r#"[{ percent = 95 }]"#)).unwrap();
    let view = e.node_view("globex/sales", NOW).unwrap();
    assert_eq!(view.thresholds.len(), 1);
    assert_eq!(view.thresholds[0].percent, Some(95));
}

#[test]
fn bad_thresholds_are_refused_whole() {
    let e = engine();
    import(&e, GLOBEX).unwrap();
    let set = |t: Vec<ThresholdSpec>| {
        e.change(
            &Change::SetThresholds {
                path: "globex/sales".into(),
                thresholds: t,
            },
            NOW,
        )
    };
    let spec = |percent: Option<u8>, amount: Option<&str>, unit: Option<Unit>| ThresholdSpec {
        unit,
        period: None,
        percent,
        amount: amount.map(|a| Amount::Text(a.into())),
    };
    for (bad, why) in [
        (vec![spec(Some(0), None, None)], "1 to 100"),
        (vec![spec(Some(101), None, None)], "1 to 100"),
        (vec![spec(None, None, None)], "one of them"),
        (
            vec![spec(Some(5), Some("1 GiB"), Some(Unit::Octets))],
            "one of them",
        ),
        (vec![spec(None, Some("1 GiB"), None)], "names its unit"),
        (vec![spec(None, Some("lots"), Some(Unit::Octets))], "lots"),
        (
            vec![spec(Some(5), None, None), spec(Some(5), None, None)],
            "twice",
        ),
        (
            (1..=17).map(|p| spec(Some(p), None, None)).collect(),
            "at most 16",
        ),
    ] {
        let err = set(bad).expect_err(why).to_string();
        assert!(err.contains(why), "{why}: {err}");
    }
    let err = import(
        &e,
        &GLOBEX.replace(
            "path = \"globex/ops\"\n",
            "path = \"globex/ops\"\nthresholds = [{ percent = 0 }]\n",
        ),
    )
    .expect_err("a bad file")
    .to_string();
    assert!(
        err.contains("globex/ops") && err.contains("1 to 100"),
        "{err}"
    );
    assert!(
        e.node_view("globex/sales", NOW)
            .unwrap()
            .thresholds
            .is_empty()
    );
    assert!(matches!(
        e.change(
            &Change::SetThresholds {
                path: "globex/nowhere".into(),
                thresholds: vec![],
            },
            NOW
        ),
        Err(ChangeError::NotFound(_))
    ));
}

#[test]
fn a_block_covers_the_node_and_what_is_under_it_only() {
    let e = engine();
    import(&e, GLOBEX).unwrap();
    let phone = msisdn(&e, "447700900001").unwrap();
    e.change(
        &Change::Block {
            path: "globex/ops".into(),
        },
        NOW,
    )
    .unwrap();
    assert!(!e.ledger().is_blocked(phone), "ops is not above the phone");
    e.change(
        &Change::Block {
            path: "globex/sales".into(),
        },
        NOW,
    )
    .unwrap();
    assert!(e.ledger().is_blocked(phone));
    assert!(e.node_view("globex/sales/phone", NOW).unwrap().blocked);
    assert!(!e.node_view("globex", NOW).unwrap().blocked);
    e.change(
        &Change::Unblock {
            path: "globex/sales".into(),
        },
        NOW,
    )
    .unwrap();
    assert!(!e.ledger().is_blocked(phone));
    assert!(matches!(
        e.change(
            &Change::Block {
                path: "globex/nowhere".into()
            },
            NOW
        ),
        Err(ChangeError::NotFound(_))
    ));
}

#[test]
fn a_nodes_policy_at_its_limit_comes_from_files_and_survives_a_tenant_policy_change() {
    use crate::accounts::tenant::{AtLimit, FinalUnitAction};
    let e = engine();
    let with = |at_limit: &str| {
        GLOBEX.replace(
            "path = \"globex/sales\"\n",
            &format!("path = \"globex/sales\"\nat_limit = {at_limit}\n"),
        )
    };
    import(&e, &with(r#"{ action = "deny" }"#)).unwrap();
    let tree = e.ledger().find_tree("globex").unwrap() as usize;
    let at = |e: &Accounts| e.policies()[tree].at_limit.get("globex/sales").cloned();
    assert_eq!(at(&e), Some(AtLimit::Deny));
    // A changed file changes it.
    import(
        &e,
        &with(r#"{ action = "redirect", redirect_address = "http://approve.globex.example/" }"#),
    )
    .unwrap();
    assert!(matches!(
        at(&e),
        Some(AtLimit::Act(FinalUnitAction::Redirect { .. }))
    ));
    // The tenant's own policy changed through the API: the node's stays.
    e.change(
        &Change::SetPolicy {
            tenant: "globex".into(),
            policy: Default::default(),
        },
        NOW,
    )
    .unwrap();
    assert!(at(&e).is_some());
    // Bad ones are refused with the node named.
    let err = import(&e, &with(r#"{ action = "throttle" }"#))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("globex/sales") && err.contains("deny, terminate"),
        "{err}"
    );
}

#[test]
fn a_kept_page_index_follows_nodes_added_and_removed() {
    use crate::accounts::views::{Page, PageIndex};
    let e = engine();
    import(
        &e,
        "[[tenant]]\nname = \"g\"\n[[tenant.node]]\npath = \"g\"\n\
         [[tenant.node]]\npath = \"g/a\"\n[[tenant.node]]\npath = \"g/b\"\n\
         [[tenant.node]]\npath = \"g/c\"\n",
    )
    .unwrap();
    let page = Page {
        offset: 1,
        limit: 1,
    };
    let mut index = PageIndex::default();
    let names = |index: &mut PageIndex| {
        let v = e.usage_page_if_changed("g", NOW, page, index).unwrap()?;
        let paths: Vec<String> = v.children.iter().map(|c| c.path.clone()).collect();
        Some((paths, v.children_total))
    };
    assert_eq!(names(&mut index), Some((vec!["g/b".to_owned()], 3)));
    // Nothing moved: nothing to show.
    assert_eq!(names(&mut index), None);
    // A limit of a child on the page changed: shown.
    e.change(&set_limit("g/b", "1 GiB"), NOW).unwrap();
    assert_eq!(names(&mut index), Some((vec!["g/b".to_owned()], 3)));
    // Its period ends: shown again (its usage starts from zero).
    let next_month = NOW + 40 * 86_400;
    assert!(
        e.usage_page_if_changed("g", next_month, page, &mut index)
            .unwrap()
            .is_some()
    );
    assert!(
        e.usage_page_if_changed("g", next_month, page, &mut index)
            .unwrap()
            .is_none()
    );
    let add = |path: &str| Change::AddNode {
        path: path.into(),
        limits: vec![],
        msisdn: None,
        imsi: None,
        nai: None,
        sip_uri: None,
    };
    e.change(&add("g/d"), NOW).unwrap();
    assert_eq!(names(&mut index), Some((vec!["g/b".to_owned()], 4)));
    e.change(&Change::Remove { path: "g/a".into() }, NOW)
        .unwrap();
    assert_eq!(names(&mut index), Some((vec!["g/c".to_owned()], 3)));
    assert_eq!(
        e.usage_page("g", NOW, page).unwrap().children[0].path,
        "g/c",
        "a fresh walk agrees"
    );
    // The node itself removed: the kept index does not keep it alive.
    e.change(&Change::Remove { path: "g/b".into() }, NOW)
        .unwrap();
    let mut on_b = PageIndex::default();
    e.change(&add("g/b"), NOW).unwrap();
    e.usage_page_if_changed("g/b", NOW, Page::ALL, &mut on_b)
        .unwrap();
    e.change(&Change::Remove { path: "g/b".into() }, NOW)
        .unwrap();
    let gone = e.usage_page_if_changed("g/b", NOW, Page::ALL, &mut on_b);
    assert!(matches!(gone, Err(ChangeError::NotFound(_))), "{gone:?}");
}
