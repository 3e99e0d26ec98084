//! The console (`/ui`) in a real headless Chromium from Debian's packages, driven through
//! ChromeDriver by fantoccini (WebDriver): an operator signs in and sees the tenants; acme's
//! manager (a token scoped to acme) sees acme's tree with its bars, watches a device's bar move while the load tool charges it, moves an allowance and
//! sees both bars change, changes a limit, blocks a device and its gateway gets the ASR, reads
//! the statement and the event feed naming who did what; a 3,000-device cost centre shows a
//! page at a time; on a phone-sized screen nothing scrolls sideways; a viewer's
//! token changes nothing. Every wait is for the page to change (a MutationObserver in the
//! page), bounded. A failing step leaves a screenshot in `target/console-artifacts/`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use ocf_loadtest::gy::{CcrSpec, INITIAL, MsccSpec, TERMINATION};
use serde_json::{Value, json};

const GW: &str = "pgw.localdomain";
const GIB: u64 = 1 << 30;
/// How long the page may take to show a change (it is pushed twice a second).
const PAGE_WAIT: Duration = Duration::from_secs(20);

type Step = Result<(), String>;

/// ChromeDriver on a free port, and a headless Chromium session through it.
struct Browser {
    client: Client,
    _driver: Watched,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        require_tool("chromium", "chromium");
        require_tool("chromedriver", "chromium-driver");
        let port = free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let mut driver = Watched::spawn("chromedriver", cmd);
        driver.wait_for("started successfully", WAIT);
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("no Chromium session through chromedriver: {e}"));
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Waits until `predicate` (a JavaScript expression) is truthy in the page, re-checked on
    /// every change of the page; its value.
    async fn until(&self, what: &str, predicate: &str) -> Result<Value, String> {
        let script = format!(
            r#"const done = arguments[arguments.length - 1];
               const check = () => {{ try {{ return ({predicate}); }} catch (e) {{ return null; }} }};
               let v = check();
               if (v) return done(v);
               const timer = setTimeout(() => {{ obs.disconnect(); done(null); }}, {ms});
               const obs = new MutationObserver(() => {{
                   v = check();
                   if (v) {{ obs.disconnect(); clearTimeout(timer); done(v); }}
               }});
               obs.observe(document, {{ subtree: true, childList: true, attributes: true,
                                        characterData: true }});"#,
            ms = PAGE_WAIT.as_millis()
        );
        match self.client.execute_async(&script, vec![]).await {
            Ok(Value::Null) => Err(format!("the page never showed {what} ({predicate})")),
            Ok(v) => Ok(v),
            Err(e) => Err(format!("waiting for {what}: {e}")),
        }
    }

    async fn click(&self, css: &str) -> Step {
        self.until(css, &format!("document.querySelector({css:?})"))
            .await?;
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("{css}: {e}"))?;
        e.click().await.map_err(|e| format!("click {css}: {e}"))
    }

    async fn type_into(&self, css: &str, text: &str) -> Step {
        self.until(css, &format!("document.querySelector({css:?})"))
            .await?;
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("{css}: {e}"))?;
        e.clear().await.map_err(|e| format!("clear {css}: {e}"))?;
        e.send_keys(text)
            .await
            .map_err(|e| format!("type into {css}: {e}"))
    }

    async fn select(&self, css: &str, value: &str) -> Step {
        self.until(
            &format!("{css} offering {value}"),
            &format!(
                "[...(document.querySelector('{css}')?.options ?? [])].some(o => o.value === '{value}')"
            ),
        )
        .await?;
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(|e| format!("{css}: {e}"))?;
        e.select_by_value(value)
            .await
            .map_err(|e| format!("select {value} in {css}: {e}"))
    }

    async fn goto(&self, url: &str) -> Step {
        self.client
            .goto(url)
            .await
            .map_err(|e| format!("open {url}: {e}"))
    }

    /// A number the page holds in a bar's data attribute (`used`, `reserved`, `limit`) for a
    /// node's row, once the row is shown.
    async fn bar(&self, path: &str, field: &str) -> Result<u64, String> {
        let css = bar_css(path);
        let v = self
            .until(
                &format!("the bar of {path}"),
                &format!("document.querySelector({css:?})?.dataset.{field}"),
            )
            .await?;
        bar_figure(path, field, &v)
    }

    /// Waits until a bar's figure differs from `before`; the new figure.
    async fn bar_moves(&self, path: &str, field: &str, before: u64) -> Result<u64, String> {
        let css = bar_css(path);
        let v = self
            .until(
                &format!("{path}'s {field} move from {before}"),
                &format!(
                    "(() => {{ const v = document.querySelector({css:?})?.dataset.{field}; \
                       return v !== undefined && v !== '{before}' ? v : null; }})()"
                ),
            )
            .await?;
        bar_figure(path, field, &v)
    }

    /// Waits until `predicate` holds in the page.
    async fn see(&self, what: &str, predicate: &str) -> Step {
        self.until(what, predicate).await.map(|_| ())
    }

    /// Runs a step; on failure keeps a screenshot and the page's text, and fails the test.
    async fn step(&self, name: &str, step: impl std::future::Future<Output = Step>) {
        let Err(why) = step.await else { return };
        let dir = artifacts();
        let _ = std::fs::create_dir_all(&dir);
        let shot = dir.join(format!("{name}.png"));
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        let text = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
            .unwrap_or_default();
        panic!(
            "console step '{name}' failed: {why}\nscreenshot: {}\npage text:\n{}",
            shot.display(),
            text.as_str().unwrap_or_default()
        );
    }
}

/// The octets-per-month bar of a node's row.
fn bar_css(path: &str) -> String {
    format!(".node-row[data-path=\"{path}\"] .bar[data-unit=\"octets\"][data-period=\"month\"]")
}

/// A bar's figure as the page gave it (a data attribute's text).
fn bar_figure(path: &str, field: &str, v: &Value) -> Result<u64, String> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{path}'s bar {field} is {v}"))
}

/// The ledger's octets-per-month limit of a node, through the API.
fn ledger_limit(api: &Http, path: &str) -> (Option<u64>, Value) {
    let (_, usage) = api.call("GET", &format!("/v1/usage/{path}?limit=0"), None);
    (usage["node"]["limits"][0]["limit"].as_u64(), usage)
}

/// Opens a session for a device (a CCR-I asking `octets`), granted.
fn open_session(gw: &mut Gw, sid: &str, msisdn: &str, octets: u64) {
    let i = gw.ask(
        &CcrSpec::new(sid, INITIAL, 0)
            .msisdn(msisdn)
            .mscc(MsccSpec::ask(10, octets)),
    );
    assert_eq!(i.result_code, 2001, "{i:?}");
}

/// `target/console-artifacts`, beside the test binaries' `debug` directory.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map(|t| t.join("console-artifacts"))
        .unwrap_or_else(|| PathBuf::from("target/console-artifacts"))
}

async fn sign_in(b: &Browser, ui: &str, token: &str) -> Step {
    b.goto(ui).await?;
    b.type_into("#token", token).await?;
    b.click("#signin").await?;
    b.see(
        "who is signed in",
        "document.querySelector('#whoami')?.textContent.trim()",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_works_the_console_in_a_real_browser() {
    let mut d = Daemon::start("");
    let api = d.admin();
    let ui = format!("http://{}/ui", api.addr);
    let token = std::fs::read_to_string(d.state_path().join("admin-token")).unwrap();
    let b = Browser::start().await;

    // Sign in: a wrong token is refused in words; the operator's shows the tenants.
    b.step("wrong-token", async {
        b.goto(&ui).await?;
        b.type_into("#token", "not-a-token").await?;
        b.click("#signin").await?;
        b.see(
            "the refusal in words",
            "document.querySelector('#error')?.textContent.includes('bearer token')",
        )
        .await
    })
    .await;
    b.step("sign-in", sign_in(&b, &ui, token.trim())).await;
    b.step("tenants", async {
        b.see(
            "the tenant acme",
            "document.body.innerText.includes('acme') && document.body.innerText.includes('alice')",
        )
        .await
    })
    .await;

    // From here on acme's telecoms manager: a token scoped to acme, which starts there.
    let (status, v) = api.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"acme-manager","role":"manager","scope":"acme"}"#),
    );
    assert_eq!(status, 201, "{v}");
    let manager = v["token"].as_str().unwrap().to_owned();
    b.step("manager", async {
        b.click("#signout").await?;
        sign_in(&b, &ui, &manager).await?;
        b.see(
            "the manager's own tenant, first",
            "location.hash === '#/node/acme' \
             && document.querySelector('#whoami')?.textContent.includes('acme-manager')",
        )
        .await
    })
    .await;

    // The tree: acme's cost centres with their bars, as the ledger has them.
    b.step("tree", async {
        b.goto(&format!("{ui}#/node/acme")).await?;
        let limit = b.bar("acme/sales", "limit").await?;
        if limit != 100 * GIB {
            return Err(format!("acme/sales shows a limit of {limit}"));
        }
        b.bar("acme/engineering", "limit").await.map(|_| ())
    })
    .await;

    // 3,000 devices in acme/sales: a page at a time, and the next page.
    b.step("paging", async {
        b.goto(&format!("{ui}#/node/acme/sales")).await?;
        b.see(
            "a page of devices out of 3000",
            "document.querySelector('#page-info')?.textContent.includes('3000') \
             || document.querySelector('#page-info')?.textContent.includes('3,000')",
        )
        .await?;
        let rows = b
            .until("rows", "document.querySelectorAll('.node-row').length")
            .await?;
        let rows = rows.as_u64().unwrap_or(0);
        if rows == 0 || rows > 200 {
            return Err(format!("{rows} rows shown for a 3,000-device cost centre"));
        }
        b.click("#next-page").await?;
        b.see(
            "the second page",
            "document.querySelector('.node-row[data-path=\"acme/sales/15551005050\"]') \
             && !document.querySelector('.node-row[data-path=\"acme/sales/15551005000\"]')",
        )
        .await
    })
    .await;

    // The bar of a device moves while the load tool charges it (live, no reload).
    b.step("live-bar", async {
        // Back to the first page.
        b.click("#prev-page").await?;
        let before = b.bar("acme/sales/15551005000", "used").await?;
        let mut load = Watched::spawn("ocf-loadtest", {
            let mut c = Command::new(loadtest());
            c.args([
                "run",
                "--server",
                &d.addr.to_string(),
                "--subscribers",
                "15551005000:1",
            ])
            .args(["--rate", "20", "--requests", "200", "--duration-s", "30"]);
            c
        });
        let after = b.bar_moves("acme/sales/15551005000", "used", before).await;
        let _ = load.child.kill();
        let _ = load.child.wait();
        let after = after?;
        if after <= before {
            return Err(format!("used went from {before} to {after}"));
        }
        Ok(())
    })
    .await;

    // A move from engineering to sales: both bars change by the amount.
    b.step("move", async {
        b.goto(&format!("{ui}#/node/acme")).await?;
        let sales = b.bar("acme/sales", "limit").await?;
        let eng = b.bar("acme/engineering", "limit").await?;
        b.click("details:has(#move-form) > summary").await?;
        b.select("#move-from", "acme/engineering").await?;
        b.select("#move-to", "acme/sales").await?;
        b.select("#move-unit", "octets").await?;
        b.select("#move-period", "month").await?;
        b.type_into("#move-amount", "2 GiB").await?;
        b.click("#move-submit").await?;
        let sales_after = b.bar_moves("acme/sales", "limit", sales).await?;
        let eng_after = b.bar_moves("acme/engineering", "limit", eng).await?;
        if sales_after != sales + 2 * GIB || eng_after != eng - 2 * GIB {
            return Err(format!(
                "sales {sales} -> {sales_after}, engineering {eng} -> {eng_after}"
            ));
        }
        Ok(())
    })
    .await;
    let (limit, sales) = ledger_limit(&api, "acme/sales");
    assert_eq!(limit, Some(102 * GIB), "the ledger has the move: {sales}");

    // Block a device with an open session: its gateway gets the ASR, the page says blocked.
    let device = "15551005007";
    let mut gw = Gw::open(&d, GW);
    let sid = "pgw.localdomain;console;1";
    open_session(&mut gw, sid, device, 1 << 20);
    b.step("block", async {
        b.goto(&format!("{ui}#/device/acme/sales/{device}")).await?;
        b.see(
            "the open session",
            &format!("document.body.innerText.includes({sid:?})"),
        )
        .await?;
        b.click("#block").await?;
        b.see(
            "blocked",
            "document.querySelector('#blocked-state')?.textContent.trim() === 'blocked'",
        )
        .await
    })
    .await;
    let asr = gw.conn.expect_frame();
    assert_eq!(asr.header.command_code, 274, "the session is aborted");
    gw.conn.send(&answer_of(&asr, GW, 2001));
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 1).mscc(MsccSpec::report(10, 0, false)));
    assert_eq!(t.result_code, 2001);
    let (_, node) = api.call("GET", &format!("/v1/nodes/acme/sales/{device}"), None);
    assert_eq!(node["blocked"], true, "{node}");
    b.step("unblock", async {
        b.click("#unblock").await?;
        b.see(
            "not blocked",
            "document.querySelector('#blocked-state')?.textContent.trim() === 'not blocked'",
        )
        .await
    })
    .await;

    // A limit changed on a cost centre's page: its own bar says so.
    b.step("limit", async {
        b.goto(&format!("{ui}#/node/acme/iot")).await?;
        b.click("details:has(#limits-form) > summary").await?;
        b.type_into("#limits-text", "octets month 2 GiB").await?;
        b.click("#limits-form button[type=submit]").await?;
        b.see(
            "iot's new limit",
            &format!(
                "document.querySelector('#own-bars .bar[data-unit=\"octets\"][data-period=\"month\"]')\
                 ?.dataset.limit === '{}'",
                2 * GIB
            ),
        )
        .await
    })
    .await;
    let (limit, iot) = ledger_limit(&api, "acme/iot");
    assert_eq!(limit, Some(2 * GIB), "{iot}");

    // The printable statement: a session that ended with 3 MiB shows, as the API sums it.
    let sid = "pgw.localdomain;console;2";
    open_session(&mut gw, sid, "15551005020", 4 << 20);
    let t = gw.ask(&CcrSpec::new(sid, TERMINATION, 1).mscc(MsccSpec::report(10, 3 << 20, false)));
    assert_eq!(t.result_code, 2001);
    let statement = |path: &str| {
        let (_, st) = api.call("GET", "/v1/statements/acme", None);
        st["lines"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["path"] == path).cloned())
            .unwrap_or_default()
    };
    // The usage follower writes the record just after the answer: reconciliation waits for it
    // to catch up with the journal.
    let (status, r) = api.call("GET", "/v1/reconcile", None);
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        statement("acme/sales/15551005020")["octets"].as_u64(),
        Some(3 << 20)
    );
    let sales_records = statement("acme/sales")["records"].clone();
    b.step("statement", async {
        b.goto(&format!("{ui}#/statement/acme")).await?;
        b.see(
            "the device's 3 MiB and the cost centre's records",
            &format!(
                "document.querySelector('#statement-devices tr[data-path=\"acme/sales/15551005020\"] \
                   td[data-label=\"Data\"]')?.dataset.value === '{}' \
                 && document.querySelector('#statement-nodes tr[data-path=\"acme/sales\"] \
                   td[data-label=\"Records\"]')?.dataset.value === '{sales_records}'",
                3 << 20
            ),
        )
        .await?;
        b.see("a Print button", "document.querySelector('#print')")
            .await
    })
    .await;

    // The event feed, newest first: the move and the block, each naming who made it (the
    // manager's token sees acme's events only).
    b.step(
        "events",
        async {
            b.goto(&format!("{ui}#/events")).await?;
            b.see(
                "the move and the block, by acme-manager",
                "(() => { const items = [...document.querySelectorAll('#event-feed li.event')]; \
               const text = (k) => items.find(i => i.dataset.kind === k)?.innerText ?? ''; \
               return text('allowance_moved').includes('by: acme-manager') \
                 && text('blocked').includes('by: acme-manager') \
                 && Number(items[0].dataset.id) === Math.max(...items.map(i => Number(i.dataset.id))) \
                 || null; })()",
            )
            .await
        },
    )
    .await;

    // A phone-sized screen: one column, nothing scrolls sideways.
    b.client.set_window_size(375, 812).await.unwrap();
    b.step("phone", async {
        for page in ["#/node/acme", "#/node/acme/sales", "#/events"] {
            b.goto(&format!("{ui}{page}")).await?;
            b.see(
                &format!("{page} laid out within 375 px"),
                "document.readyState === 'complete' && document.querySelector('main, #app') \
                 && document.documentElement.scrollWidth <= window.innerWidth",
            )
            .await?;
        }
        Ok(())
    })
    .await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // A viewer's token: sees acme/sales, changes nothing (no form to change with, and the
    // server would refuse it anyway).
    let (status, v) = api.call(
        "POST",
        "/v1/tokens",
        Some(r#"{"name":"sales-viewer","role":"viewer","scope":"acme/sales"}"#),
    );
    assert_eq!(status, 201, "{v}");
    let viewer = v["token"].as_str().unwrap().to_owned();
    b.step("viewer", async {
        b.click("#signout").await?;
        sign_in(&b, &ui, &viewer).await?;
        b.goto(&format!("{ui}#/node/acme/sales")).await?;
        b.bar("acme/sales/15551005000", "limit").await?;
        let can_change = b
            .client
            .execute(
                "return [...document.querySelectorAll('#move-submit, #limits-form button, \
                 #block, #rules-form button')].some(e => e.offsetParent !== null && !e.disabled)",
                vec![],
            )
            .await
            .map_err(|e| e.to_string())?;
        if can_change != Value::Bool(false) {
            return Err("a viewer is offered a change".into());
        }
        // Asking the page for another cost centre shows the refusal in words.
        b.goto(&format!("{ui}#/node/acme/engineering")).await?;
        b.see(
            "the refusal in words",
            "document.querySelector('#error')?.textContent.includes('outside its scope')",
        )
        .await
    })
    .await;
    let (limit, after) = ledger_limit(&api, "acme/sales");
    assert_eq!(
        limit,
        Some(102 * GIB),
        "nothing changed under the viewer: {after}"
    );
    let _ = b.client.close().await;
    d.terminate();
}
