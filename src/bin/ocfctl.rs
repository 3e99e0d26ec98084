//! ocfctl: the admin API of ocfd from a shell (docs/admin-api.yaml). Tables by default, the
//! API's JSON with --json. Exit status: 0 done, 1 refused by the API, 2 bad command line,
//! 3 the API cannot be reached, 4 `reconcile` found differences.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ocf::ctl::{self, CtlError, Ids, http::Client};

#[derive(Parser)]
#[command(
    name = "ocfctl",
    version,
    about = "Steer and watch ocfd's accounts through its admin API"
)]
struct Cli {
    /// The admin listener.
    #[arg(
        long,
        env = "OCFCTL_URL",
        default_value = "http://127.0.0.1:8868",
        global = true
    )]
    url: String,
    /// File whose first line is the bearer token (ocfd's admin.token_file).
    #[arg(
        long,
        env = "OCFCTL_TOKEN_FILE",
        default_value = "ocfd-data/admin-token",
        global = true
    )]
    token_file: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a token: operator (everything), manager (read and change within the scope) or
    /// viewer (read within the scope).
    Create {
        name: String,
        #[arg(long, value_parser = ["operator", "manager", "viewer"])]
        role: String,
        /// A tenant, or a node path and everything under it (needed but for operators).
        #[arg(long)]
        scope: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Hand a partition over: the owner (the node whose admin API this is) stops serving it,
    /// its log takes its last records, and the node named (or any standby) takes over; the
    /// owner stands by for it again.
    Drain {
        /// The standby to hand it to (default: whichever claims it first).
        #[arg(long)]
        to: Option<String>,
        /// The partition (needed when the node owns several).
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Every node as a Diameter peer (Origin-Host, realm, address), for a DRA's peer table.
    Peers {
        /// As freeDiameter `ConnectPeer` lines (over TCP, without TLS).
        #[arg(long)]
        freediameter: bool,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// The tenants (enterprises and consumers).
    Tenants,
    /// The cluster: the partition's owner and lease, and each node with how far behind the
    /// partition's log it is (docs/cluster.md); `cluster drain` hands the partition over.
    Cluster {
        #[command(subcommand)]
        cmd: Option<ClusterCmd>,
    },
    /// The tree under a node, with each node's usage.
    Tree {
        path: String,
        /// Levels below the node.
        #[arg(long, default_value_t = 1)]
        depth: usize,
    },
    /// Live usage of a node and its children: used, reserved, limit, headroom per period.
    Usage { path: String },
    /// A node: its limits, subscription ids and children.
    Node { path: String },
    /// Open credit-control sessions of a device or of everything under a node.
    Sessions { path: String },
    /// Add a tenant.
    AddTenant {
        name: String,
        #[arg(long)]
        time_zone: Option<String>,
        /// UNIT[:PERIOD]:AMOUNT, e.g. octets:month:10GiB (repeat for several).
        #[arg(long = "limit")]
        limits: Vec<String>,
    },
    /// Add a cost centre or a device under an existing node.
    Add {
        path: String,
        /// UNIT[:PERIOD]:AMOUNT (repeat for several).
        #[arg(long = "limit")]
        limits: Vec<String>,
        #[command(flatten)]
        ids: Ids,
    },
    /// Set all of a node's subscription ids (those left out are unbound).
    Ids {
        path: String,
        #[command(flatten)]
        ids: Ids,
    },
    /// Remove a node and everything under it.
    Remove { path: String },
    /// Set all of a node's limits.
    Limit {
        path: String,
        /// UNIT[:PERIOD]:AMOUNT (repeat for several).
        #[arg(long = "limit", required = true)]
        limits: Vec<String>,
    },
    /// Block a device or everything under a node: its open sessions are aborted (ASR) and
    /// nothing more is granted (4010) until it is unblocked.
    Block { path: String },
    /// Lift a block.
    Unblock { path: String },
    /// Re-authorise every open session under a node (RAR): their next grants follow the
    /// limits and policy as they are now.
    Reauth { path: String },
    /// Set a node's own policy at its limit: deny, terminate, redirect (--redirect URL) or
    /// restrict (--filter-id, --rule); --clear for the tenant's.
    AtLimit {
        path: String,
        #[arg(long, required_unless_present = "clear")]
        action: Option<String>,
        #[arg(long)]
        redirect: Option<String>,
        #[arg(long = "filter-id")]
        filter_ids: Vec<String>,
        #[arg(long = "rule")]
        rules: Vec<String>,
        #[arg(long, conflicts_with = "action")]
        clear: bool,
    },
    /// Show a node's rules over the request (with those it inherits and its personal
    /// account); --file sets all of them from a TOML file of [[rules]] tables, --clear removes
    /// them (docs/rules.md).
    Rules {
        path: String,
        #[arg(long, conflicts_with = "clear")]
        file: Option<std::path::PathBuf>,
        #[arg(long)]
        clear: bool,
    },
    /// Hold the ledger against the usage records and the open sessions, account by account
    /// (operators only); exit 4 with the differences when they disagree.
    Reconcile,
    /// A tenant's usage per device and cost centre in a period, from the usage records (this
    /// calendar month, UTC, by default).
    Statement {
        tenant: String,
        /// Unix seconds, included.
        #[arg(long)]
        from: Option<i64>,
        /// Unix seconds, excluded.
        #[arg(long)]
        to: Option<i64>,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Named tokens for the admin API (operators only): `token create NAME --role manager
    /// --scope acme` prints the new token once; `token list`; `token revoke NAME`.
    Token {
        #[command(subcommand)]
        what: TokenCmd,
    },
    /// Set a node's guards against bill shock, for everything under it, from JSON such as
    /// '{"velocity_octets":"2 GiB","max_month_money":"500.00"}'; --clear removes them
    /// (docs/rules.md). Shown by `ocfctl rules PATH`.
    Guards {
        path: String,
        #[arg(long, required_unless_present = "clear")]
        set: Option<String>,
        #[arg(long, conflicts_with = "set")]
        clear: bool,
    },
    /// Link a device to its user's personal account (an MSISDN, or imsi:/nai:/private: and
    /// the id, or a SIP URI); --clear unlinks it.
    PersonalAccount {
        path: String,
        #[arg(required_unless_present = "clear")]
        account: Option<String>,
        #[arg(long, conflicts_with = "account")]
        clear: bool,
    },
    /// Explain a subscriber's recent decisions (the rule, the account, each level's headroom,
    /// why a grant was cut or refused) and its latest usage records; --what-if decides a
    /// hypothetical request instead, charging nothing (docs/rules.md).
    Explain {
        /// An MSISDN, or imsi:/nai:/private: and the id, or a SIP URI.
        subscriber: String,
        /// Usage records to show (0 to 100).
        #[arg(long, default_value_t = 10)]
        history: usize,
        #[arg(long)]
        what_if: bool,
        #[arg(long, requires = "what_if")]
        rating_group: Option<u32>,
        #[arg(long, requires = "what_if")]
        service_id: Option<u32>,
        #[arg(long, requires = "what_if")]
        apn: Option<String>,
        /// The serving network, MCCMNC.
        #[arg(long, requires = "what_if")]
        serving_network: Option<String>,
        #[arg(long, requires = "what_if")]
        rat_type: Option<String>,
        #[arg(long, requires = "what_if")]
        roaming: Option<bool>,
        #[arg(long, requires = "what_if")]
        zone: Option<String>,
        /// The tenant's local time: "22:00" or "sat 22:00".
        #[arg(long, requires = "what_if")]
        at: Option<String>,
        /// Octets asked for.
        #[arg(long, requires = "what_if")]
        requested: Option<u64>,
    },
    /// Set all of a node's own thresholds (none given: clears them).
    Thresholds {
        path: String,
        /// [UNIT[:PERIOD]:]LEVEL, e.g. 80% or octets:month:4GiB (repeat for several).
        #[arg(long = "level")]
        levels: Vec<String>,
    },
    /// Move allowance from one node to another of the same tenant.
    Move {
        from: String,
        to: String,
        /// e.g. "10GiB", or "2.50" for money.
        amount: String,
        #[arg(long, default_value = "octets")]
        unit: String,
        #[arg(long, default_value = "month")]
        period: String,
    },
    /// Show a tenant's policy, or replace it with --set '{"final_unit_action": ...}'.
    Policy {
        tenant: String,
        #[arg(long)]
        set: Option<String>,
    },
    /// Events (thresholds crossed, limits reached) from the outbox, oldest first.
    Events {
        /// Only events after this id.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        tenant: Option<String>,
        /// Only events of this node or below it.
        #[arg(long)]
        node: Option<String>,
        /// Only events of these kinds, comma-separated (threshold_crossed, limit_reached,
        /// policy_applied, blocked, unblocked, allowance_moved, session_aborted).
        #[arg(long)]
        kind: Option<String>,
        /// Events asked for at a time.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Keep printing new events as they come.
        #[arg(long)]
        follow: bool,
    },
    /// Whether ocfd is ready.
    Ready,
}

fn run(cli: &Cli) -> Result<String, CtlError> {
    let token = std::fs::read_to_string(&cli.token_file)
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()));
    let c = Client::new(&cli.url, token).map_err(CtlError::Usage)?;
    let json = cli.json;
    match &cli.command {
        Cmd::Tenants => ctl::tenants(&c, json),
        Cmd::Cluster { cmd: None } => ctl::cluster(&c, json),
        Cmd::Cluster {
            cmd: Some(ClusterCmd::Drain { to, partition }),
        } => ctl::drain(&c, to.as_deref(), *partition, json),
        Cmd::Cluster {
            cmd: Some(ClusterCmd::Peers { freediameter }),
        } => ctl::peers(&c, *freediameter, json),
        Cmd::Tree { path, depth } => ctl::tree(&c, path, *depth, json),
        Cmd::Usage { path } => ctl::usage(&c, path, json),
        Cmd::Node { path } => ctl::node(&c, path, json),
        Cmd::Sessions { path } => ctl::sessions(&c, path, json),
        Cmd::AddTenant {
            name,
            time_zone,
            limits,
        } => ctl::add_tenant(&c, name, time_zone.as_deref(), limits, json),
        Cmd::Add { path, limits, ids } => ctl::add(&c, path, limits, ids, json),
        Cmd::Ids { path, ids } => ctl::ids(&c, path, ids, json),
        Cmd::Remove { path } => ctl::remove(&c, path),
        Cmd::Limit { path, limits } => ctl::limit(&c, path, limits, json),
        Cmd::Thresholds { path, levels } => ctl::thresholds(&c, path, levels, json),
        Cmd::Block { path } => ctl::blocked(&c, path, true, json),
        Cmd::Unblock { path } => ctl::blocked(&c, path, false, json),
        Cmd::Reauth { path } => ctl::reauth(&c, path, json),
        Cmd::Explain {
            subscriber,
            history,
            what_if,
            rating_group,
            service_id,
            apn,
            serving_network,
            rat_type,
            roaming,
            zone,
            at,
            requested,
        } => {
            if *what_if {
                let q: Vec<(&str, String)> = [
                    ("rating_group", rating_group.map(|v| v.to_string())),
                    ("service_id", service_id.map(|v| v.to_string())),
                    ("apn", apn.clone()),
                    ("serving_network", serving_network.clone()),
                    ("rat_type", rat_type.clone()),
                    ("roaming", roaming.map(|v| v.to_string())),
                    ("zone", zone.clone()),
                    ("at", at.clone()),
                    ("requested", requested.map(|v| v.to_string())),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
                ctl::what_if(&c, subscriber, &q, json)
            } else {
                ctl::explain(&c, subscriber, *history, json)
            }
        }
        Cmd::Rules { path, file, clear } => ctl::rules(&c, path, file.as_deref(), *clear),
        Cmd::Reconcile => ctl::reconcile(&c, json),
        Cmd::Statement {
            tenant,
            from,
            to,
            csv,
        } => ctl::statement(&c, tenant, (*from, *to), *csv, json),
        Cmd::Token { what } => match what {
            TokenCmd::Create { name, role, scope } => {
                ctl::token_create(&c, name, role, scope.as_deref(), json)
            }
            TokenCmd::List => ctl::token_list(&c, json),
            TokenCmd::Revoke { name } => ctl::token_revoke(&c, name),
        },
        Cmd::Guards {
            path,
            set,
            clear: _,
        } => ctl::guards(&c, path, set.as_deref()),
        Cmd::PersonalAccount {
            path,
            account,
            clear: _,
        } => ctl::personal_account(&c, path, account.as_deref()),
        Cmd::AtLimit {
            path,
            action,
            redirect,
            filter_ids,
            rules,
            clear,
        } => {
            let body = (!clear).then(|| {
                serde_json::json!({
                    "action": action,
                    "redirect_address": redirect,
                    "filter_ids": filter_ids,
                    "restriction_rules": rules,
                })
            });
            ctl::at_limit(&c, path, body.as_ref(), json)
        }
        Cmd::Move {
            from,
            to,
            amount,
            unit,
            period,
        } => ctl::move_allowance(&c, from, to, amount, unit, period, json),
        Cmd::Policy { tenant, set } => ctl::policy(&c, tenant, set.as_deref()),
        Cmd::Ready => ctl::ready(&c),
        Cmd::Events {
            after,
            tenant,
            node,
            kind,
            limit,
            follow,
        } => {
            let q = ctl::EventsQuery {
                after: *after,
                tenant: tenant.as_deref(),
                node: node.as_deref(),
                kind: kind.as_deref(),
                limit: *limit,
            };
            // Printed as they come, not gathered: --follow never ends by itself.
            ctl::events(&c, &q, *follow, json, &mut std::io::stdout().lock())?;
            Ok(String::new())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(out) => {
            // A closed pipe (`ocfctl usage acme | head`) is not an error worth a panic.
            use std::io::Write;
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ocfctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
