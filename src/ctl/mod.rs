//! `ocfctl`: the admin API from a shell, for ops and telecoms managers. Each command is one or
//! a few API calls; answers print as readable tables, or as the API's JSON with `--json`.

pub mod http;

use serde_json::Value;
use std::fmt::Write as _;

use http::{Client, encode_path};

/// What went wrong, and the exit status it gives.
#[derive(Debug)]
pub enum CtlError {
    /// The API refused (4xx/5xx): exit 1.
    Refused { status: u16, reason: String },
    /// The API could not be reached or answered nonsense: exit 3.
    Unreachable(String),
    /// The command line is wrong: exit 2.
    Usage(String),
    /// Reconciliation found differences (the report): exit 4.
    Inconsistent(String),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Refused { status, reason } => write!(f, "{status}: {reason}"),
            CtlError::Unreachable(e) => write!(f, "cannot reach the admin API: {e}"),
            CtlError::Usage(e) => write!(f, "{e}"),
            CtlError::Inconsistent(report) => write!(f, "differences found\n{report}"),
        }
    }
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused { .. } => 1,
            CtlError::Usage(_) => 2,
            CtlError::Unreachable(_) => 3,
            CtlError::Inconsistent(_) => 4,
        }
    }
}

/// Calls the API; a 2xx answer's JSON, else the refusal.
pub fn call(c: &Client, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CtlError> {
    let text = body.map(Value::to_string);
    let a = c
        .call(method, path, text.as_deref())
        .map_err(|e| CtlError::Unreachable(format!("{}: {e}", c.addr)))?;
    if !(200..300).contains(&a.status) {
        return Err(CtlError::Refused {
            status: a.status,
            reason: a.reason(),
        });
    }
    Ok(a.json())
}

/// A limit from the command line: `UNIT[:PERIOD]:AMOUNT`, e.g. `octets:month:10 GiB`,
/// `octets:5 GiB` (a month), `money:total:5.00`.
pub fn parse_limit(text: &str) -> Result<Value, CtlError> {
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let (unit, period, amount) = match parts.as_slice() {
        [u, a] => (*u, "month", *a),
        [u, p, a] => (*u, *p, *a),
        _ => {
            return Err(CtlError::Usage(format!(
                "limit '{text}': give UNIT[:PERIOD]:AMOUNT, e.g. octets:month:10GiB"
            )));
        }
    };
    let amount = match amount.trim().parse::<u64>() {
        Ok(n) if unit != "money" => Value::from(n),
        _ => Value::from(amount.trim()),
    };
    Ok(serde_json::json!({ "unit": unit, "period": period, "amount": amount }))
}

/// A threshold from `[UNIT[:PERIOD]:]LEVEL`, LEVEL a percentage (`80%`) or, with a unit, an
/// amount (`octets:month:4GiB`).
pub fn parse_threshold(text: &str) -> Result<Value, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "threshold '{text}': give [UNIT[:PERIOD]:]LEVEL, LEVEL a percentage (80%) or an amount with a unit (octets:4GiB)"
        ))
    };
    let parts: Vec<&str> = text.splitn(3, ':').collect();
    let (unit, period, level) = match parts.as_slice() {
        [l] => (None, None, *l),
        [u, l] => (Some(*u), None, *l),
        [u, p, l] => (Some(*u), Some(*p), *l),
        _ => return Err(bad()),
    };
    let mut v = serde_json::Map::new();
    if let Some(u) = unit {
        v.insert("unit".into(), Value::from(u));
    }
    if let Some(p) = period {
        v.insert("period".into(), Value::from(p));
    }
    let level = level.trim();
    match level.strip_suffix('%') {
        Some(p) => {
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            v.insert("percent".into(), Value::from(p));
        }
        None if unit.is_some() => {
            let amount = match level.parse::<u64>() {
                Ok(n) if unit != Some("money") => Value::from(n),
                _ => Value::from(level),
            };
            v.insert("amount".into(), amount);
        }
        None => return Err(bad()),
    }
    Ok(Value::Object(v))
}

/// Calls `METHOD /v1/<endpoint>/<path>` with `body`; the node it answers with, as a table or
/// the API's JSON.
fn node_call(
    c: &Client,
    method: &str,
    endpoint: &str,
    path: &str,
    body: Option<&Value>,
    json: bool,
) -> Result<String, CtlError> {
    let v = call(
        c,
        method,
        &format!("/v1/{endpoint}/{}", encode_path(path)),
        body,
    )?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        node_text(&v)
    })
}

/// `thresholds PATH --level L ...`: sets all of a node's own thresholds (none: clears them).
pub fn thresholds(
    c: &Client,
    path: &str,
    levels: &[String],
    json: bool,
) -> Result<String, CtlError> {
    let list: Vec<Value> = levels
        .iter()
        .map(|l| parse_threshold(l))
        .collect::<Result<_, _>>()?;
    let body = serde_json::json!({ "thresholds": list });
    node_call(c, "PUT", "thresholds", path, Some(&body), json)
}

/// `block PATH` / `unblock PATH`.
pub fn blocked(c: &Client, path: &str, block: bool, json: bool) -> Result<String, CtlError> {
    node_call(
        c,
        if block { "PUT" } else { "DELETE" },
        "blocked",
        path,
        None,
        json,
    )
}

/// `at-limit PATH ...`: sets (or with no body, clears) a node's own policy at its limit.
pub fn at_limit(
    c: &Client,
    path: &str,
    body: Option<&Value>,
    json: bool,
) -> Result<String, CtlError> {
    node_call(
        c,
        if body.is_some() { "PUT" } else { "DELETE" },
        "at-limit",
        path,
        body,
        json,
    )
}

/// `rules PATH [--file F | --clear]`: shows, sets (from a TOML file of `[[rules]]` tables,
/// checked for form here and for sense by the server) or clears a node's rules.
pub fn rules(
    c: &Client,
    path: &str,
    file: Option<&std::path::Path>,
    clear: bool,
) -> Result<String, CtlError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RulesFile {
        #[serde(default)]
        rules: Vec<ocf_charging::rules::RuleSpec>,
    }
    let at = format!("/v1/rules/{}", encode_path(path));
    let v = match (file, clear) {
        (Some(f), _) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CtlError::Usage(format!("{}: {e}", f.display())))?;
            let parsed: RulesFile = toml::from_str(&text)
                .map_err(|e| CtlError::Usage(format!("{}: {e}", f.display())))?;
            let body = serde_json::json!({ "rules": parsed.rules });
            call(c, "PUT", &at, Some(&body))?
        }
        (None, true) => call(c, "DELETE", &at, None)?,
        (None, false) => call(c, "GET", &at, None)?,
    };
    Ok(format!("{v:#}\n"))
}

/// `explain SUBSCRIBER`: its recent decisions and usage records.
pub fn explain(
    c: &Client,
    subscriber: &str,
    history: usize,
    json: bool,
) -> Result<String, CtlError> {
    let v = call(
        c,
        "GET",
        &format!(
            "/v1/explain/{}?history={history}",
            encode_path(subscriber).replace('/', "%2F")
        ),
        None,
    )?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let mut out = format!(
        "{} ({})\n",
        v["subscriber"].as_str().unwrap_or(""),
        v["account"].as_str().unwrap_or("")
    );
    let decisions = v["decisions"].as_array().cloned().unwrap_or_default();
    if decisions.is_empty() {
        out.push_str("no recent decisions in memory\n");
    }
    for d in &decisions {
        let _ = writeln!(
            out,
            "{} {} #{} session {}{}",
            d["time"],
            d["request_type"].as_str().unwrap_or(""),
            d["request_number"],
            d["session_id"].as_str().unwrap_or(""),
            attributes_text(&d["attributes"])
        );
        for s in d["services"].as_array().into_iter().flatten() {
            out.push_str(&service_text(s));
        }
    }
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        out.push_str("usage records, newest first:\n");
        for h in &history {
            let _ = writeln!(out, "  {h}");
        }
    }
    Ok(out)
}

/// `explain SUBSCRIBER --what-if ...`.
pub fn what_if(
    c: &Client,
    subscriber: &str,
    query: &[(&str, String)],
    json: bool,
) -> Result<String, CtlError> {
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_path(v).replace('/', "%2F")))
        .collect();
    let v = call(
        c,
        "GET",
        &format!(
            "/v1/explain/{}/what-if?{}",
            encode_path(subscriber).replace('/', "%2F"),
            q.join("&")
        ),
        None,
    )?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    Ok(format!(
        "what if {} ({}){}:\n{}",
        v["subscriber"].as_str().unwrap_or(""),
        v["account"].as_str().unwrap_or(""),
        attributes_text(&v["attributes"]),
        service_text(&v["service"])
    ))
}

fn attributes_text(a: &Value) -> String {
    let mut out = String::new();
    for (k, label) in [
        ("apn", "apn"),
        ("serving_network", "serving"),
        ("zone", "zone"),
        ("rat_type", "rat"),
        ("local_time", "local"),
    ] {
        if let Some(v) = a[k].as_str() {
            let _ = write!(out, " {label}={v}");
        }
    }
    if a["roaming"].as_bool() == Some(true) {
        out.push_str(" roaming");
    }
    out
}

fn service_text(s: &Value) -> String {
    let mut out = String::new();
    let rg = s["rating_group"]
        .as_u64()
        .map_or_else(|| "-".to_owned(), |v| v.to_string());
    let _ = write!(out, "  RG {rg}: {}", s["result_code"]);
    if let Some(g) = s["granted"].as_u64() {
        let _ = write!(out, " granted {g}");
        if let Some(v) = s["validity_time"].as_u64() {
            let _ = write!(out, " for {v} s");
            if s["validity_cut_to_rule_edge"].as_bool() == Some(true) {
                out.push_str(" (cut to a rule's time edge)");
            }
        }
    }
    match s["rule"].as_str() {
        Some(r) => {
            let _ = write!(out, "; rule {r} ({})", s["charge"].as_str().unwrap_or(""));
        }
        None => out.push_str("; no rule"),
    }
    let _ = write!(out, " -> {}", s["account"].as_str().unwrap_or(""));
    if let Some(a) = s["final_unit_action"].as_str() {
        let _ = write!(out, "; final units: {a}");
    }
    if let Some(l) = s["limited_by"].as_str() {
        let _ = write!(out, "; limited by {l}");
    }
    if let Some(w) = s["why"].as_str() {
        let _ = write!(out, ": {w}");
    }
    out.push('\n');
    for l in s["levels"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "      {} {}/{}: limit {} used {} reserved {} headroom {}",
            l["path"].as_str().unwrap_or(""),
            l["unit"].as_str().unwrap_or(""),
            l["period"].as_str().unwrap_or(""),
            l["limit"],
            l["used"],
            l["reserved"],
            l["headroom"]
        );
    }
    out
}

/// `reconcile`: the ledger against the usage records (and the open sessions); exit 4 and the
/// differences when they disagree.
pub fn reconcile(c: &Client, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", "/v1/reconcile", None)?;
    let mut out = if json {
        format!("{v:#}\n")
    } else {
        let mut t = format!(
            "{} accounts; journal written to {}, usage records taken to {}\n",
            v["accounts"], v["journal_written"], v["usage_records_synced"]
        );
        for d in v["differences"].as_array().into_iter().flatten() {
            let _ = writeln!(
                t,
                "{} {}: ledger {} usage records {} open sessions {}",
                d["account"].as_str().unwrap_or(""),
                d["unit"].as_str().unwrap_or(""),
                d["ledger"],
                d["usage_records"],
                d["open_sessions"]
            );
        }
        t
    };
    if v["consistent"].as_bool() == Some(true) {
        if !json {
            out.push_str("consistent\n");
        }
        Ok(out)
    } else {
        Err(CtlError::Inconsistent(out))
    }
}

/// `statement TENANT [--from] [--to] [--csv]`.
pub fn statement(
    c: &Client,
    tenant: &str,
    (from, to): (Option<i64>, Option<i64>),
    csv: bool,
    json: bool,
) -> Result<String, CtlError> {
    let mut q = vec![format!("format={}", if csv { "csv" } else { "json" })];
    if let Some(f) = from {
        q.push(format!("from={f}"));
    }
    if let Some(t) = to {
        q.push(format!("to={t}"));
    }
    let path = format!("/v1/statements/{}?{}", encode_path(tenant), q.join("&"));
    if csv {
        let a = c
            .call("GET", &path, None)
            .map_err(|e| CtlError::Unreachable(format!("{}: {e}", c.addr)))?;
        if !(200..300).contains(&a.status) {
            return Err(CtlError::Refused {
                status: a.status,
                reason: a.reason(),
            });
        }
        return Ok(a.body);
    }
    let v = call(c, "GET", &path, None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let mut out = String::from("PATH\tOCTETS\tSECONDS\tEVENTS\tMONEY\tRECORDS\n");
    for l in v["lines"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            l["path"].as_str().unwrap_or(""),
            l["octets"],
            l["seconds"],
            l["events"],
            l["money"].as_str().unwrap_or("0"),
            l["records"]
        );
    }
    Ok(out)
}

/// `token create NAME --role ROLE [--scope PATH]`: the token, printed once.
pub fn token_create(
    c: &Client,
    name: &str,
    role: &str,
    scope: Option<&str>,
    json: bool,
) -> Result<String, CtlError> {
    let body = serde_json::json!({ "name": name, "role": role, "scope": scope });
    let v = call(c, "POST", "/v1/tokens", Some(&body))?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        format!("{}\n", v["token"].as_str().unwrap_or(""))
    })
}

/// `token list`.
pub fn token_list(c: &Client, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", "/v1/tokens", None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let mut out = String::from("NAME\tROLE\tSCOPE\n");
    for t in v.as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}\t{}\t{}",
            t["name"].as_str().unwrap_or(""),
            t["role"].as_str().unwrap_or(""),
            t["scope"].as_str().unwrap_or("*")
        );
    }
    Ok(out)
}

/// `token revoke NAME`.
pub fn token_revoke(c: &Client, name: &str) -> Result<String, CtlError> {
    call(
        c,
        "DELETE",
        &format!("/v1/tokens/{}", encode_path(name).replace('/', "%2F")),
        None,
    )?;
    Ok(format!("revoked {name}\n"))
}

/// `guards PATH [--set JSON | --clear]`.
pub fn guards(c: &Client, path: &str, set: Option<&str>) -> Result<String, CtlError> {
    let at = format!("/v1/guards/{}", encode_path(path));
    let v = match set {
        Some(text) => {
            let body: Value = serde_json::from_str(text)
                .map_err(|e| CtlError::Usage(format!("--set: not JSON: {e}")))?;
            call(c, "PUT", &at, Some(&body))?
        }
        None => call(c, "DELETE", &at, None)?,
    };
    Ok(format!("{v:#}\n"))
}

/// `personal-account PATH [ACCOUNT | --clear]`.
pub fn personal_account(c: &Client, path: &str, account: Option<&str>) -> Result<String, CtlError> {
    let at = format!("/v1/personal-account/{}", encode_path(path));
    let v = match account {
        Some(a) => call(
            c,
            "PUT",
            &at,
            Some(&serde_json::json!({ "personal_account": a })),
        )?,
        None => call(c, "DELETE", &at, None)?,
    };
    Ok(format!("{v:#}\n"))
}

/// `reauth PATH`.
pub fn reauth(c: &Client, path: &str, json: bool) -> Result<String, CtlError> {
    let v = call(
        c,
        "POST",
        &format!("/v1/reauth/{}", encode_path(path)),
        None,
    )?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        format!("re-authorising {} sessions\n", v["sessions"])
    })
}

/// A human amount: binary units for octets, seconds, events as they are, money as given.
pub fn human(unit: &str, v: &Value) -> String {
    match (unit, v.as_u64()) {
        ("octets", Some(n)) => {
            const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
            let mut x = n as f64;
            let mut i = 0;
            while x >= 1024.0 && i < UNITS.len() - 1 {
                x /= 1024.0;
                i += 1;
            }
            if i == 0 {
                format!("{n} B")
            } else {
                format!("{x:.1} {}", UNITS[i])
            }
        }
        ("seconds", Some(n)) => format!("{n} s"),
        (_, Some(n)) => n.to_string(),
        _ => v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string()),
    }
}

/// A table with a header row; columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(c);
            if i + 1 < cells.len() {
                s.push_str(&" ".repeat(width[i].saturating_sub(c.chars().count())));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Usage rows: one per limit of each node.
fn usage_rows(nodes: &[&Value]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for n in nodes {
        let path = n["path"].as_str().unwrap_or("").to_owned();
        let limits = n["limits"].as_array().cloned().unwrap_or_default();
        if limits.is_empty() {
            rows.push(vec![
                path.clone(),
                "-".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        for l in limits {
            let unit = l["unit"].as_str().unwrap_or("");
            let pct = match (
                l["used"].as_f64(),
                l["reserved"].as_f64(),
                l["limit"].as_f64(),
            ) {
                (Some(u), Some(r), Some(lim)) if lim > 0.0 => {
                    format!("{:.0}%", 100.0 * (u + r) / lim)
                }
                _ => match (
                    l["used"].as_str().and_then(|s| s.parse::<f64>().ok()),
                    l["reserved"].as_str().and_then(|s| s.parse::<f64>().ok()),
                    l["limit"].as_str().and_then(|s| s.parse::<f64>().ok()),
                ) {
                    (Some(u), Some(r), Some(lim)) if lim > 0.0 => {
                        format!("{:.0}%", 100.0 * (u + r) / lim)
                    }
                    _ => "-".into(),
                },
            };
            rows.push(vec![
                path.clone(),
                format!("{unit}/{}", l["period"].as_str().unwrap_or("")),
                human(unit, &l["used"]),
                human(unit, &l["reserved"]),
                human(unit, &l["limit"]),
                human(unit, &l["headroom"]),
                pct,
                l["period_end"].as_str().unwrap_or("-").to_owned(),
            ]);
        }
    }
    rows
}

const USAGE_HEADER: [&str; 8] = [
    "NODE",
    "LIMIT",
    "USED",
    "RESERVED",
    "OF",
    "HEADROOM",
    "TAKEN",
    "PERIOD ENDS",
];

/// `usage PATH`: the node and its children.
pub fn usage(c: &Client, path: &str, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", &format!("/v1/usage/{}", encode_path(path)), None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let mut nodes = vec![&v["node"]];
    if let Some(ch) = v["children"].as_array() {
        nodes.extend(ch.iter());
    }
    Ok(table(&USAGE_HEADER, &usage_rows(&nodes)))
}

/// `tree PATH --depth N`: the tree under a node, with each node's limits, `depth` levels down.
pub fn tree(c: &Client, path: &str, depth: usize, json: bool) -> Result<String, CtlError> {
    fn walk(
        c: &Client,
        path: &str,
        prefix: &str,
        depth: usize,
        out: &mut String,
        all: &mut Vec<Value>,
    ) -> Result<(), CtlError> {
        let v = call(c, "GET", &format!("/v1/usage/{}", encode_path(path)), None)?;
        let children = v["children"].as_array().cloned().unwrap_or_default();
        all.push(v["node"].clone());
        for (i, ch) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let p = ch["path"].as_str().unwrap_or("");
            let name = p.rsplit('/').next().unwrap_or(p);
            out.push_str(&format!(
                "{prefix}{}{name}{}\n",
                if last { "└─ " } else { "├─ " },
                limits_brief(ch)
            ));
            let deeper = format!("{prefix}{}", if last { "   " } else { "│  " });
            if depth > 1 {
                walk(c, p, &deeper, depth - 1, out, all)?;
            } else {
                all.push(ch.clone());
            }
        }
        Ok(())
    }
    let root = call(c, "GET", &format!("/v1/usage/{}", encode_path(path)), None)?;
    let mut out = format!("{path}{}\n", limits_brief(&root["node"]));
    let mut all = Vec::new();
    walk(c, path, "", depth.max(1), &mut out, &mut all)?;
    if json {
        return Ok(format!("{:#}\n", Value::Array(all)));
    }
    Ok(out)
}

/// "  octets/month 1.2 GiB of 5.0 GiB" for each limit.
fn limits_brief(n: &Value) -> String {
    let mut s = String::new();
    for l in n["limits"].as_array().into_iter().flatten() {
        let unit = l["unit"].as_str().unwrap_or("");
        s.push_str(&format!(
            "  [{unit}/{}: {} used, {} reserved, of {}]",
            l["period"].as_str().unwrap_or(""),
            human(unit, &l["used"]),
            human(unit, &l["reserved"]),
            human(unit, &l["limit"])
        ));
    }
    s
}

/// `node PATH`: limits, subscription ids, children.
pub fn node(c: &Client, path: &str, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", &format!("/v1/nodes/{}", encode_path(path)), None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    Ok(node_text(&v))
}

fn node_text(v: &Value) -> String {
    let mut out = table(&USAGE_HEADER, &usage_rows(&[v]));
    let subs: Vec<String> = v["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap_or(""),
                s["id"].as_str().unwrap_or("")
            )
        })
        .collect();
    if !subs.is_empty() {
        out.push_str(&format!("subscriptions: {}\n", subs.join(", ")));
    }
    let levels: Vec<String> = v["thresholds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let unit = t["unit"].as_str();
            let level = match t["percent"].as_u64() {
                Some(p) => format!("{p}%"),
                None => human(unit.unwrap_or(""), &t["amount"]),
            };
            [unit, t["period"].as_str(), Some(&level)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect();
    if !levels.is_empty() {
        out.push_str(&format!("thresholds: {}\n", levels.join(", ")));
    }
    if let Some(a) = v["at_limit"]["action"].as_str() {
        let detail = v["at_limit"]["redirect_address"]
            .as_str()
            .map(|r| format!(" to {r}"))
            .unwrap_or_default();
        out.push_str(&format!("at its limit: {a}{detail}\n"));
    }
    if v["blocked"].as_bool() == Some(true) {
        out.push_str("blocked: nothing under it is granted\n");
    }
    let n = v["children"].as_array().map_or(0, Vec::len);
    if n > 0 {
        out.push_str(&format!("children: {n}\n"));
    }
    out
}

/// `tenants`.
pub fn tenants(c: &Client, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", "/v1/tenants", None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["name"].as_str().unwrap_or("").to_owned(),
                t["time_zone"].as_str().unwrap_or("").to_owned(),
                t["nodes"].to_string(),
            ]
        })
        .collect();
    Ok(table(&["TENANT", "TIME ZONE", "NODES"], &rows))
}

/// `cluster`: the partition's owner and lease, the log's end, and every node with its lag.
pub fn cluster(c: &Client, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", "/v1/cluster", None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    if v["enabled"] != true {
        return Ok("not a cluster node (cluster.enabled is false)\n".into());
    }
    // Every partition, when the cluster has several; else the node's own.
    let parts = match v["partitions"].as_array() {
        Some(all) => all.clone(),
        None => vec![v.clone()],
    };
    let mut out = String::new();
    for v in &parts {
        let snapshot = match v["snapshot_entry"].as_u64() {
            Some(e) => format!("snapshot at entry {e}"),
            None => "no snapshot".into(),
        };
        out.push_str(&format!(
            "partition {}: owner {} (epoch {}, lease until {} ms), log from entry {} to {}, {snapshot}\n",
            v["partition"],
            v["owner"]["node"].as_str().unwrap_or("none"),
            v["epoch"],
            v["owner"]["until_ms"],
            v["log_first"],
            v["log_end"]
        ));
        let rows: Vec<Vec<String>> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                vec![
                    n["node"].as_str().unwrap_or("").to_owned(),
                    n["role"].as_str().unwrap_or("").to_owned(),
                    n["diameter"].as_str().unwrap_or("-").to_owned(),
                    n["entry"].to_string(),
                    n["lag_entries"].to_string(),
                    format!("{:.1} s", n["age_ms"].as_f64().unwrap_or(0.0) / 1000.0),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NODE", "ROLE", "DIAMETER", "ENTRY", "LAG", "SEEN"],
            &rows,
        ));
    }
    Ok(out)
}

/// `cluster peers [--freediameter]`: every node as a Diameter peer; with `freediameter`, as
/// `ConnectPeer` lines of a freeDiameter DRA's configuration.
pub fn peers(c: &Client, freediameter: bool, json: bool) -> Result<String, CtlError> {
    let v = call(c, "GET", "/v1/cluster/peers", None)?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    let text = |p: &serde_json::Value, k: &str| p[k].as_str().unwrap_or_default().to_owned();
    if freediameter {
        let mut out = String::new();
        for p in &peers {
            let Ok(addr) = text(p, "diameter").parse::<std::net::SocketAddr>() else {
                continue;
            };
            out.push_str(&format!(
                "ConnectPeer = \"{}\" {{ ConnectTo = \"{}\"; Port = {}; No_TLS; No_SCTP; }};\n",
                text(p, "host"),
                addr.ip(),
                addr.port()
            ));
        }
        return Ok(out);
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                text(p, "host"),
                text(p, "realm"),
                text(p, "diameter"),
                text(p, "node"),
            ]
        })
        .collect();
    Ok(table(&["HOST", "REALM", "DIAMETER", "NODE"], &rows))
}

/// `cluster drain [--to NODE] [--partition N]`.
pub fn drain(
    c: &Client,
    to: Option<&str>,
    partition: Option<u32>,
    json: bool,
) -> Result<String, CtlError> {
    let body = serde_json::json!({ "to": to });
    let path = match partition {
        Some(p) => format!("/v1/cluster/drain?partition={p}"),
        None => "/v1/cluster/drain".to_owned(),
    };
    let v = call(c, "POST", &path, Some(&body))?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    Ok(format!(
        "draining: partition {} goes to {}; this node stands by for it again\n",
        v["partition"],
        to.unwrap_or("whichever standby claims it first")
    ))
}

/// `sessions PATH`.
pub fn sessions(c: &Client, path: &str, json: bool) -> Result<String, CtlError> {
    let v = call(
        c,
        "GET",
        &format!("/v1/sessions/{}", encode_path(path)),
        None,
    )?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let held: Vec<String> = s["reservations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let unit = r["unit"].as_str().unwrap_or("");
                    format!("rg {} {}", r["rating_group"], human(unit, &r["reserved"]))
                })
                .collect();
            let used: u64 = s["used"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u["octets"].as_u64())
                .sum();
            vec![
                s["session_id"].as_str().unwrap_or("").to_owned(),
                s["subscriber"].as_str().unwrap_or("").to_owned(),
                s["account"].as_str().unwrap_or("").to_owned(),
                s["request_number"].to_string(),
                human("octets", &Value::from(used)),
                if held.is_empty() {
                    "-".into()
                } else {
                    held.join(", ")
                },
            ]
        })
        .collect();
    Ok(table(
        &[
            "SESSION-ID",
            "SUBSCRIBER",
            "ACCOUNT",
            "CC-REQ",
            "USED",
            "RESERVED",
        ],
        &rows,
    ))
}

/// `add-tenant NAME`.
pub fn add_tenant(
    c: &Client,
    name: &str,
    time_zone: Option<&str>,
    limits: &[String],
    json: bool,
) -> Result<String, CtlError> {
    let limits: Vec<Value> = limits
        .iter()
        .map(|l| parse_limit(l))
        .collect::<Result<_, _>>()?;
    let mut body = serde_json::json!({ "name": name, "limits": limits });
    if let Some(tz) = time_zone {
        body["time_zone"] = Value::from(tz);
    }
    let v = call(c, "POST", "/v1/tenants", Some(&body))?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        node_text(&v)
    })
}

/// Subscription ids of a new node.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(skip)]
pub struct Ids {
    /// MSISDN (E.164 number).
    #[arg(long)]
    pub msisdn: Option<String>,
    /// IMSI (15 digits).
    #[arg(long)]
    pub imsi: Option<String>,
    /// NAI (user@realm).
    #[arg(long)]
    pub nai: Option<String>,
    /// SIP URI.
    #[arg(long)]
    pub sip_uri: Option<String>,
}

impl Ids {
    /// Adds the ids given to a request body.
    fn put_into(&self, body: &mut Value) {
        for (k, v) in [
            ("msisdn", &self.msisdn),
            ("imsi", &self.imsi),
            ("nai", &self.nai),
            ("sip_uri", &self.sip_uri),
        ] {
            if let Some(v) = v {
                body[k] = Value::from(v.as_str());
            }
        }
    }
}

/// `add PATH`.
pub fn add(
    c: &Client,
    path: &str,
    limits: &[String],
    ids: &Ids,
    json: bool,
) -> Result<String, CtlError> {
    let limits: Vec<Value> = limits
        .iter()
        .map(|l| parse_limit(l))
        .collect::<Result<_, _>>()?;
    let mut body = serde_json::json!({ "limits": limits });
    ids.put_into(&mut body);
    let v = call(
        c,
        "POST",
        &format!("/v1/nodes/{}", encode_path(path)),
        Some(&body),
    )?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        node_text(&v)
    })
}

/// `ids PATH`: sets all of a node's subscription ids.
pub fn ids(c: &Client, path: &str, ids: &Ids, json: bool) -> Result<String, CtlError> {
    let mut body = serde_json::json!({});
    ids.put_into(&mut body);
    let v = call(
        c,
        "PUT",
        &format!("/v1/subscriptions/{}", encode_path(path)),
        Some(&body),
    )?;
    Ok(if json {
        format!("{v:#}\n")
    } else {
        node_text(&v)
    })
}

/// `remove PATH`.
pub fn remove(c: &Client, path: &str) -> Result<String, CtlError> {
    call(
        c,
        "DELETE",
        &format!("/v1/nodes/{}", encode_path(path)),
        None,
    )?;
    Ok(format!("removed {path}\n"))
}

/// `limit PATH --limit ...`: sets all the node's limits.
pub fn limit(c: &Client, path: &str, limits: &[String], json: bool) -> Result<String, CtlError> {
    let limits: Vec<Value> = limits
        .iter()
        .map(|l| parse_limit(l))
        .collect::<Result<_, _>>()?;
    let body = serde_json::json!({ "limits": limits });
    node_call(c, "PUT", "limits", path, Some(&body), json)
}

/// `move FROM TO AMOUNT`.
pub fn move_allowance(
    c: &Client,
    from: &str,
    to: &str,
    amount: &str,
    unit: &str,
    period: &str,
    json: bool,
) -> Result<String, CtlError> {
    let amount = match amount.trim().parse::<u64>() {
        Ok(n) if unit != "money" => Value::from(n),
        _ => Value::from(amount.trim()),
    };
    let body = serde_json::json!({
        "from": from, "to": to, "unit": unit, "period": period, "amount": amount
    });
    let v = call(c, "POST", "/v1/moves", Some(&body))?;
    if json {
        return Ok(format!("{v:#}\n"));
    }
    Ok(table(&USAGE_HEADER, &usage_rows(&[&v["from"], &v["to"]])))
}

/// `policy TENANT [--set JSON]`.
pub fn policy(c: &Client, tenant: &str, set: Option<&str>) -> Result<String, CtlError> {
    let path = format!("/v1/policy/{}", encode_path(tenant));
    let v = match set {
        Some(text) => {
            let body: Value = serde_json::from_str(text)
                .map_err(|e| CtlError::Usage(format!("--set: not JSON: {e}")))?;
            call(c, "PUT", &path, Some(&body))?
        }
        None => call(c, "GET", &path, None)?,
    };
    Ok(format!("{v:#}\n"))
}

/// `ready`: the readiness answer.
pub fn ready(c: &Client) -> Result<String, CtlError> {
    let v = call(c, "GET", "/ready", None)?;
    Ok(format!("{}\n", v["status"].as_str().unwrap_or("?")))
}

/// What `events` prints, and from where.
pub struct EventsQuery<'a> {
    pub after: u64,
    pub tenant: Option<&'a str>,
    pub node: Option<&'a str>,
    /// Kinds, comma-separated.
    pub kind: Option<&'a str>,
    pub limit: usize,
}

/// How long `events --follow` asks the API to wait for the next event at a time.
const FOLLOW_WAIT_MS: u64 = 5_000;

fn events_path(q: &EventsQuery, after: u64, wait_ms: u64) -> String {
    let mut p = format!("/v1/events?after={after}&limit={}", q.limit);
    if let Some(t) = q.tenant {
        p.push_str(&format!("&tenant={}", encode_query(t)));
    }
    if let Some(n) = q.node {
        p.push_str(&format!("&node={}", encode_query(n)));
    }
    if let Some(k) = q.kind {
        p.push_str(&format!("&kind={}", encode_query(k)));
    }
    if wait_ms > 0 {
        p.push_str(&format!("&wait_ms={wait_ms}"));
    }
    p
}

/// Percent-encodes a query value.
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One event as a line: id, time, kind, path, what was crossed (or the event's own fields).
fn event_line(e: &Value) -> String {
    if e.get("threshold").is_none() {
        let rest: Vec<String> = e
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !["seq", "id", "time", "kind", "tenant", "path"].contains(&k.as_str()))
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect();
        return format!(
            "{}\t{}\t{}\t{}\t{}\n",
            e["id"],
            e["time"],
            e["kind"].as_str().unwrap_or(""),
            e["path"].as_str().unwrap_or(""),
            rest.join(" ")
        );
    }
    let unit = e["unit"].as_str().unwrap_or("");
    let level = match (&e["threshold"]["percent"], &e["threshold"]["amount"]) {
        (p, _) if p.is_u64() => format!("{p}%"),
        (_, a) => human(unit, a),
    };
    format!(
        "{}\t{}\t{}\t{}\t{} {} of {} ({}: {})\n",
        e["id"],
        e["time"],
        e["kind"].as_str().unwrap_or(""),
        e["path"].as_str().unwrap_or(""),
        level,
        e["period"].as_str().unwrap_or(""),
        human(unit, &e["limit"]),
        unit,
        human(unit, &e["used"]),
    )
}

/// `events`: the events after `after`, as lines (or the API's JSON); with `follow`, goes on
/// printing new ones as they come, through `out`, until the API cannot be reached.
pub fn events(
    c: &Client,
    q: &EventsQuery,
    follow: bool,
    json: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), CtlError> {
    let mut after = q.after;
    loop {
        let wait = if follow { FOLLOW_WAIT_MS } else { 0 };
        let v = call(c, "GET", &events_path(q, after, wait), None)?;
        for e in v["events"].as_array().into_iter().flatten() {
            let line = if json {
                format!("{e}\n")
            } else {
                event_line(e)
            };
            if out
                .write_all(line.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                // The reader went away (`| head`): done.
                return Ok(());
            }
        }
        after = v["next_after"].as_u64().unwrap_or(after).max(after);
        let full = v["events"].as_array().is_some_and(|a| a.len() >= q.limit);
        if !follow && !full {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_amounts_read_and_print() {
        assert_eq!(
            parse_limit("octets:month:10 GiB").unwrap(),
            serde_json::json!({"unit":"octets","period":"month","amount":"10 GiB"})
        );
        assert_eq!(
            parse_limit("octets:1048576").unwrap()["amount"],
            serde_json::json!(1048576)
        );
        assert_eq!(parse_limit("money:total:5.00").unwrap()["amount"], "5.00");
        assert!(parse_limit("octets").is_err());
        assert_eq!(human("octets", &Value::from(10u64 << 30)), "10.0 GiB");
        assert_eq!(human("octets", &Value::from(512u64)), "512 B");
        assert_eq!(human("money", &Value::from("4.99")), "4.99");
    }

    #[test]
    fn tables_line_up() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
