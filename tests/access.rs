//! Scoped access to the admin API, end to end: an operator makes a manager's token for acme
//! and a viewer's for acme/sales; the manager changes acme and nothing else, the viewer reads
//! acme/sales and changes nothing; every refusal is 403 with its reason and an
//! `access_denied` event; events, moves and explain are held to the scope; tokens are kept
//! hashed, survive a restart and stop working once revoked.

mod common;

use common::*;
use serde_json::Value;

fn with(api: &Http, token: &str) -> Http {
    Http {
        addr: api.addr,
        token: Some(token.to_owned()),
    }
}

fn create(api: &Http, name: &str, role: &str, scope: Option<&str>) -> String {
    let body = serde_json::json!({ "name": name, "role": role, "scope": scope }).to_string();
    let (status, v) = api.call("POST", "/v1/tokens", Some(&body));
    assert_eq!(status, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

const LIMIT: &str = r#"{"limits":[{"unit":"octets","amount":"200 GiB"}]}"#;

#[test]
fn tokens_are_held_to_their_role_and_scope() {
    let mut d = Daemon::start("");
    let admin = d.admin();
    let manager = with(
        &admin,
        &create(&admin, "acme-manager", "manager", Some("acme")),
    );
    let viewer = with(
        &admin,
        &create(&admin, "sales-viewer", "viewer", Some("acme/sales")),
    );
    // A manager's token needs a scope; names are unique.
    let (status, e) = admin.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"x","role":"manager"}"#),
    );
    assert_eq!(status, 400, "{e}");
    let (status, e) = admin.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"y","role":"operator","scope":"acme"}"#),
    );
    assert_eq!(status, 400, "an operator's token takes no scope: {e}");
    let (status, _) = admin.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"acme-manager","role":"viewer","scope":"acme"}"#),
    );
    assert_eq!(status, 409);

    // The manager: reads and changes acme, nothing else.
    assert_eq!(manager.call("GET", "/v1/nodes/acme/sales", None).0, 200);
    assert_eq!(
        manager.call("PUT", "/v1/limits/acme/sales", Some(LIMIT)).0,
        200
    );
    let (status, e) = manager.call("PUT", "/v1/limits/alice", Some(LIMIT));
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("outside its scope"),
        "{e}"
    );
    assert_eq!(manager.call("GET", "/v1/nodes/alice", None).0, 403);
    assert_eq!(
        manager.call("GET", "/v1/tenants", None).0,
        403,
        "operators only"
    );
    assert_eq!(
        manager.call("GET", "/v1/tokens", None).0,
        403,
        "operators only"
    );
    // A move inside acme goes; one that takes from another tenant does not.
    let mv = |from: &str, to: &str| {
        format!(r#"{{"from":"{from}","to":"{to}","unit":"octets","amount":"1 GiB"}}"#)
    };
    assert_eq!(
        manager
            .call(
                "POST",
                "/v1/moves",
                Some(&mv("acme/engineering", "acme/sales"))
            )
            .0,
        200
    );
    assert_eq!(
        manager
            .call("POST", "/v1/moves", Some(&mv("alice", "acme/sales")))
            .0,
        403
    );
    // Explain: acme's devices, not alice.
    assert_eq!(manager.call("GET", "/v1/explain/15551005000", None).0, 200);
    assert_eq!(manager.call("GET", "/v1/explain/15559990001", None).0, 403);

    // The viewer: reads acme/sales, changes nothing, sees nothing else.
    assert_eq!(viewer.call("GET", "/v1/usage/acme/sales", None).0, 200);
    let (status, e) = viewer.call("PUT", "/v1/limits/acme/sales", Some(LIMIT));
    assert_eq!(status, 403, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("a viewer only reads"),
        "{e}"
    );
    assert_eq!(
        viewer.call("GET", "/v1/nodes/acme/engineering", None).0,
        403
    );
    assert_eq!(
        viewer.call("GET", "/v1/nodes/acme", None).0,
        403,
        "above its scope"
    );

    // Events: a scoped token sees its scope's, and asking for another's is refused.
    let (status, v) = viewer.call("GET", "/v1/events?node=acme", None);
    assert_eq!(status, 403, "{v}");
    let (status, v) = manager.call("GET", "/v1/events?limit=1000", None);
    assert_eq!(status, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|e| e["path"].as_str().unwrap_or("").starts_with("acme")),
        "{events:?}"
    );
    // Every refusal left an audit event, for the operator to see.
    let denied = events_of(&admin, "kind=access_denied", 9);
    assert!(
        denied.iter().any(|e| e["token"] == "acme-manager"
            && e["path"] == "limits/alice"
            && e["method"] == "PUT"),
        "{denied:?}"
    );

    // Every change names who made it, in the events...
    let moved = events_of(&admin, "kind=allowance_moved", 1);
    assert_eq!(moved[0]["by"], "acme-manager", "{moved:?}");
    let changed = events_of(&admin, "kind=account_changed&node=acme/sales", 1);
    assert!(
        changed
            .iter()
            .any(|e| e["op"] == "set_limits" && e["by"] == "acme-manager"),
        "{changed:?}"
    );
    assert_eq!(
        admin.call("PUT", "/v1/limits/alice", Some(LIMIT)).0,
        200,
        "the operator's own token"
    );
    let changed = events_of(&admin, "kind=account_changed&node=alice", 1);
    assert_eq!(changed[0]["by"], "admin", "{changed:?}");

    // Tokens made are audited too.
    let made = events_of(&admin, "kind=token_created", 2);
    assert!(
        made.iter().any(|e| e["token"] == "acme-manager"
            && e["role"] == "manager"
            && e["path"] == "acme"
            && e["by"] == "admin"),
        "{made:?}"
    );

    // Kept hashed; a restart keeps them; a revoked token is unknown.
    let file = std::fs::read_to_string(d.state_path().join("tokens.json")).unwrap();
    let kept: Value = serde_json::from_str(&file).unwrap();
    assert_eq!(kept.as_array().unwrap().len(), 2);
    assert!(
        !file.contains(manager.token.as_deref().unwrap()),
        "the token itself is not kept"
    );
    d.terminate();
    // ...and in the change log: the start's import, then the API's changes by token.
    let (_, records) =
        ocf_store::changes::ChangeLog::open(&d.state_path().join("changes")).unwrap();
    let by: Vec<(String, Option<String>)> = records
        .iter()
        .map(|r| {
            let (c, by) = ocf_store::change_record::decode_by(&r.change).unwrap();
            let op = serde_json::from_slice::<Value>(&ocf_store::change_record::encode(&c))
                .unwrap()["op"]
                .as_str()
                .unwrap()
                .to_owned();
            (op, by)
        })
        .collect();
    let some = |op: &str, by: &str| (op.to_owned(), Some(by.to_owned()));
    assert_eq!(
        by,
        [
            some("import", "start"),
            some("set_limits", "acme-manager"),
            some("move", "acme-manager"),
            some("set_limits", "admin"),
        ],
        "refused changes are not logged"
    );
    let dir = d.into_dir();
    let mut d = Daemon::start_in(dir, "", &[]);
    let admin = d.admin();
    let manager = with(&admin, manager.token.as_deref().unwrap());
    assert_eq!(manager.call("GET", "/v1/nodes/acme/sales", None).0, 200);
    let (status, list) = admin.call("GET", "/v1/tokens", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(list.to_string().find("sha256").is_none(), "{list}");
    assert_eq!(admin.call("DELETE", "/v1/tokens/acme-manager", None).0, 204);
    assert_eq!(manager.call("GET", "/v1/nodes/acme/sales", None).0, 401);
    let revoked = events_of(&admin, "kind=token_revoked", 1);
    assert_eq!(
        (&revoked[0]["token"], &revoked[0]["by"]),
        (&"acme-manager".into(), &"admin".into())
    );
    assert_eq!(admin.call("DELETE", "/v1/tokens/acme-manager", None).0, 404);
}

#[test]
fn ocfctl_makes_lists_and_revokes_tokens() {
    let mut d = Daemon::start("");
    let url = format!("http://{}", d.admin_addr());
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ocfctl"))
            .arg("--url")
            .arg(&url)
            .arg("--token-file")
            .arg(d.state_path().join("admin-token"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, token) = ctl(&[
        "token", "create", "ops-view", "--role", "viewer", "--scope", "acme",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(token.trim().len(), 64, "{token}");
    let (_, list) = ctl(&["token", "list"]);
    assert!(list.contains("ops-view\tviewer\tacme"), "{list}");
    let (code, _) = ctl(&["token", "revoke", "ops-view"]);
    assert_eq!(code, Some(0));
    let (code, _) = ctl(&["token", "revoke", "ops-view"]);
    assert_eq!(code, Some(1), "refused: no such token");
}
