//! What a load run sends: the scenario (sessions of CCR-INITIAL, k × CCR-UPDATE and
//! CCR-TERMINATE, or single EVENT requests), the subscribers it draws on, and the encoding of
//! each Credit-Control-Request (RFC 4006 §3.1, TS 32.299 §6.4.2) straight into the output
//! buffer.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use ocf_protocol::codes::{avp as c, command};
use ocf_protocol::{CommandFlags, Header, MessageWriter};

use crate::gy::{EVENT, INITIAL, TERMINATION, UPDATE};

/// At most this many Multiple-Services-Credit-Control AVPs per request.
pub const MAX_MSCC: usize = 16;

/// The kind of request, used to index per-type statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Initial = 0,
    Update = 1,
    Termination = 2,
    Event = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Initial, Kind::Update, Kind::Termination, Kind::Event];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Initial => "initial",
            Kind::Update => "update",
            Kind::Termination => "termination",
            Kind::Event => "event",
        }
    }

    /// The CC-Request-Type value.
    pub fn request_type(self) -> u32 {
        match self {
            Kind::Initial => INITIAL,
            Kind::Update => UPDATE,
            Kind::Termination => TERMINATION,
            Kind::Event => EVENT,
        }
    }
}

/// What each session does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// CCR-INITIAL, `updates` × CCR-UPDATE (each reporting the last grant as used), then
    /// CCR-TERMINATE reporting the last grant.
    Session { updates: u32 },
    /// One CCR-EVENT with Requested-Action DIRECT_DEBITING.
    Event,
}

/// The subscribers sessions are opened for, by MSISDN (Subscription-Id-Type END_USER_E164).
#[derive(Clone, Debug, Default)]
pub struct Subscribers {
    /// Single MSISDNs, used first.
    single: Vec<String>,
    /// (first MSISDN, count), with the running total before each range.
    ranges: Vec<(u64, u64, u64)>,
    total: u64,
}

impl Subscribers {
    /// `count` consecutive MSISDNs from `first`.
    pub fn range(first: u64, count: u64) -> Subscribers {
        let mut s = Subscribers::default();
        s.push_range(first, count);
        s
    }

    fn push_range(&mut self, first: u64, count: u64) {
        if count > 0 {
            self.ranges.push((first, count, self.total));
            self.total += count;
        }
    }

    /// Parses `FIRST:COUNT` (for example `15551000000:5000`).
    pub fn parse_range(s: &str) -> Result<Subscribers, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("expected FIRST:COUNT, got {s:?}"))?;
        let first = a
            .parse::<u64>()
            .map_err(|e| format!("first MSISDN {a:?}: {e}"))?;
        let count = b.parse::<u64>().map_err(|e| format!("count {b:?}: {e}"))?;
        if count == 0 || first.checked_add(count).is_none() {
            return Err(format!("{s:?}: the range is empty or overflows"));
        }
        Ok(Subscribers::range(first, count))
    }

    /// Every device of a provisioning file (the format `ocfd tenants generate` writes and
    /// `docs/provisioning.md` describes): nodes with an `msisdn` and `devices` ranges.
    pub fn from_provisioning(path: &Path) -> Result<Subscribers, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut s = Subscribers::default();
        let tenants = doc.get("tenant").and_then(|t| t.as_array());
        for tenant in tenants.into_iter().flatten() {
            let nodes = tenant.get("node").and_then(|n| n.as_array());
            for node in nodes.into_iter().flatten() {
                if let Some(m) = node.get("msisdn").and_then(|m| m.as_str()) {
                    s.single.push(m.to_owned());
                    s.total += 1;
                }
            }
            let ranges = tenant.get("devices").and_then(|d| d.as_array());
            for r in ranges.into_iter().flatten() {
                let first = r.get("msisdn_from").and_then(|v| v.as_integer());
                let count = r.get("count").and_then(|v| v.as_integer());
                match (first, count) {
                    (Some(f), Some(n)) if f >= 0 && n >= 0 => s.push_range(f as u64, n as u64),
                    _ => {
                        return Err(format!(
                            "{}: a devices range without msisdn_from and count",
                            path.display()
                        ));
                    }
                }
            }
        }
        // Singles were counted before the ranges' running totals were taken: shift them.
        let singles = s.single.len() as u64;
        let mut before = singles;
        for r in &mut s.ranges {
            r.2 = before;
            before += r.1;
        }
        s.total = before;
        if s.total == 0 {
            return Err(format!("{}: no devices", path.display()));
        }
        Ok(s)
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Writes the MSISDN of subscriber `i mod len()` into `out`.
    pub fn msisdn(&self, i: u64, out: &mut String) {
        out.clear();
        if self.total == 0 {
            return;
        }
        let i = i % self.total;
        if let Some(m) = self.single.get(i as usize) {
            out.push_str(m);
            return;
        }
        let k = self.ranges.partition_point(|r| r.2 <= i) - 1;
        let (first, _, before) = self.ranges[k];
        let _ = write!(out, "{}", first + (i - before));
    }
}

/// Everything the connections share about what to send.
#[derive(Clone, Debug)]
pub struct Plan {
    pub origin_host: String,
    pub origin_realm: String,
    /// Destination-Realm; `None`: the server's Origin-Realm from its CEA.
    pub destination_realm: Option<String>,
    pub destination_host: Option<String>,
    pub service_context_id: String,
    pub auth_application_id: u32,
    pub scenario: Scenario,
    /// Rating-Group of each MSCC in a request (one MSCC per entry).
    pub rating_groups: Vec<u32>,
    /// Octets asked for in each MSCC's Requested-Service-Unit.
    pub requested_octets: u64,
    pub subscribers: Subscribers,
    /// Pause between an answer and the session's next request.
    pub think: Duration,
    /// Sent in Service-Information/PS-Information of every request when set: the APN
    /// (Called-Station-Id), the serving network (3GPP-SGSN-MCC-MNC) and the RAT type
    /// (3GPP-RAT-Type), so that rules over the request have something to match.
    pub attributes: Attributes,
}

/// Request attributes the load sends (none by default).
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub apn: Option<String>,
    pub serving_network: Option<String>,
    pub rat_type: Option<u8>,
}

/// Reporting-Reason FORCED_REAUTHORISATION (TS 32.299): an update the server asked for.
pub const FORCED_REAUTHORISATION: u32 = 7;

/// The state of one session that [`write_ccr`] needs.
#[derive(Clone, Debug)]
pub struct SessionState {
    /// Unique within the run: the third part of the Session-Id.
    pub serial: u64,
    pub subscriber: u64,
    /// CC-Request-Number of the next request.
    pub next_number: u32,
    /// Requests of the session done, answered or abated (DOIC): which one comes next. An
    /// abated update takes a step but no CC-Request-Number.
    pub step: u32,
    /// Octets granted per MSCC by the last answer, reported as used by the next request.
    pub granted: [u64; MAX_MSCC],
    /// The server asked to re-authorise (RAR): the next update goes at once, with
    /// Reporting-Reason FORCED_REAUTHORISATION.
    pub forced: bool,
}

/// Reusable text buffers, so that a request costs no allocation.
#[derive(Default)]
pub struct Scratch {
    session_id: String,
    msisdn: String,
}

impl Plan {
    /// The kind of the session's next request.
    pub fn next_kind(&self, s: &SessionState) -> Kind {
        match self.scenario {
            Scenario::Event => Kind::Event,
            Scenario::Session { updates } => match s.step {
                0 => Kind::Initial,
                n if n <= updates => Kind::Update,
                _ => Kind::Termination,
            },
        }
    }

    /// Writes one CCR for session `s` into `out`, ending with `extra` (already-encoded AVPs:
    /// DOIC's OC-Supported-Features, or nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn write_ccr(
        &self,
        out: &mut BytesMut,
        scratch: &mut Scratch,
        destination_realm: &str,
        origin_host: &str,
        session_prefix: &str,
        s: &SessionState,
        kind: Kind,
        ids: (u32, u32),
        retransmit: bool,
        extra: &[u8],
    ) {
        let mut h = Header::request(
            command::CREDIT_CONTROL,
            self.auth_application_id,
            ids.0,
            ids.1,
        );
        if retransmit {
            h.flags.0 |= CommandFlags::RETRANSMIT;
        }
        scratch.session_id.clear();
        let _ = write!(scratch.session_id, "{session_prefix}{}", s.serial);
        self.subscribers.msisdn(s.subscriber, &mut scratch.msisdn);
        let mut w = MessageWriter::new(out, &h);
        w.utf8(c::SESSION_ID, &scratch.session_id);
        w.identity(c::ORIGIN_HOST, origin_host);
        w.identity(c::ORIGIN_REALM, &self.origin_realm);
        w.identity(c::DESTINATION_REALM, destination_realm);
        if let Some(dh) = &self.destination_host {
            w.identity(c::DESTINATION_HOST, dh);
        }
        w.u32(c::AUTH_APPLICATION_ID, self.auth_application_id);
        w.utf8(c::SERVICE_CONTEXT_ID, &self.service_context_id);
        w.u32(c::CC_REQUEST_TYPE, kind.request_type());
        w.u32(c::CC_REQUEST_NUMBER, s.next_number);
        let g = w.begin_group(c::SUBSCRIPTION_ID);
        w.u32(c::SUBSCRIPTION_ID_TYPE, 0);
        w.utf8(c::SUBSCRIPTION_ID_DATA, &scratch.msisdn);
        w.end_group(g);
        if kind == Kind::Event {
            w.u32(c::REQUESTED_ACTION, 0);
        }
        w.u32(c::MULTIPLE_SERVICES_INDICATOR, 1);
        let a = &self.attributes;
        if a.apn.is_some() || a.serving_network.is_some() || a.rat_type.is_some() {
            let si = w.begin_group(c::SERVICE_INFORMATION);
            let ps = w.begin_group(c::PS_INFORMATION);
            if let Some(plmn) = &a.serving_network {
                w.utf8(c::THREEGPP_SGSN_MCC_MNC, plmn);
            }
            if let Some(rat) = a.rat_type {
                w.bytes(c::THREEGPP_RAT_TYPE, &[rat]);
            }
            if let Some(apn) = &a.apn {
                w.utf8(c::CALLED_STATION_ID, apn);
            }
            w.end_group(ps);
            w.end_group(si);
        }
        for (i, rg) in self.rating_groups.iter().enumerate().take(MAX_MSCC) {
            let g = w.begin_group(c::MULTIPLE_SERVICES_CREDIT_CONTROL);
            if kind != Kind::Termination {
                let r = w.begin_group(c::REQUESTED_SERVICE_UNIT);
                w.u64(c::CC_TOTAL_OCTETS, self.requested_octets);
                w.end_group(r);
            }
            if matches!(kind, Kind::Update | Kind::Termination) {
                let u = w.begin_group(c::USED_SERVICE_UNIT);
                w.u64(c::CC_TOTAL_OCTETS, s.granted[i]);
                if s.forced && kind == Kind::Update {
                    w.u32(c::REPORTING_REASON, FORCED_REAUTHORISATION);
                }
                w.end_group(u);
            }
            w.u32(c::RATING_GROUP, *rg);
            w.end_group(g);
        }
        w.raw(extra);
        w.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_walk_singles_then_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(
            &p,
            "[[tenant]]\nname = \"a\"\n[[tenant.node]]\npath = \"a\"\nmsisdn = \"4470\"\n\
             [[tenant.devices]]\nparent = \"a\"\nmsisdn_from = 100\ncount = 2\n\
             [[tenant]]\nname = \"b\"\n[[tenant.devices]]\nparent = \"b\"\nmsisdn_from = 500\ncount = 3\n",
        )
        .unwrap();
        let s = Subscribers::from_provisioning(&p).unwrap();
        assert_eq!(s.len(), 6);
        let mut out = String::new();
        let all: Vec<String> = (0..7)
            .map(|i| {
                s.msisdn(i, &mut out);
                out.clone()
            })
            .collect();
        assert_eq!(all, ["4470", "100", "101", "500", "501", "502", "4470"]);
    }

    #[test]
    fn doic_only_appends_oc_supported_features() {
        use ocf_protocol::doic;
        let plan = Plan {
            origin_host: "lt.localdomain".into(),
            origin_realm: "localdomain".into(),
            destination_realm: None,
            destination_host: None,
            service_context_id: "32251@3gpp.org".into(),
            auth_application_id: 4,
            scenario: Scenario::Session { updates: 1 },
            rating_groups: vec![10, 20],
            requested_octets: 1000,
            subscribers: Subscribers::range(15551000000, 10),
            think: Duration::ZERO,
            attributes: Attributes {
                apn: Some("internet".into()),
                serving_network: Some("20801".into()),
                rat_type: Some(6),
            },
        };
        let s = SessionState {
            serial: 7,
            subscriber: 3,
            next_number: 1,
            step: 2,
            granted: [500; MAX_MSCC],
            forced: false,
        };
        assert_eq!(plan.next_kind(&s), Kind::Termination, "by step, not number");
        let write = |extra: &[u8]| {
            let mut out = BytesMut::new();
            let mut scratch = Scratch::default();
            let k = Kind::Update;
            plan.write_ccr(
                &mut out,
                &mut scratch,
                "r",
                "lt.localdomain",
                "p;",
                &s,
                k,
                (1, 2),
                false,
                extra,
            );
            out
        };
        let plain = write(&[]);
        let avps = doic::encode(doic::OLR_DEFAULT_ALGO, None);
        let with = write(&avps);
        // The same request, its length aside, followed by OC-Supported-Features.
        assert_eq!(with.len(), plain.len() + avps.len());
        assert_eq!(with[4..plain.len()], plain[4..]);
        assert_eq!(with[plain.len()..], avps[..]);
        assert!(!doic::frame_announces_loss(&plain));
        assert!(doic::frame_announces_loss(&with));
        let m = ocf_protocol::Message::decode(with.freeze()).unwrap();
        assert_eq!(doic::announced(m.avps()), Some(doic::OLR_DEFAULT_ALGO));
        // The attributes, in Service-Information/PS-Information.
        let ps = m
            .find(c::SERVICE_INFORMATION)
            .and_then(|si| si.children().find(|a| a.is(c::PS_INFORMATION)))
            .expect("PS-Information");
        let get = |code| ps.children().find(|a| a.is(code)).map(|a| a.data.to_vec());
        assert_eq!(get(c::CALLED_STATION_ID), Some(b"internet".to_vec()));
        assert_eq!(get(c::THREEGPP_SGSN_MCC_MNC), Some(b"20801".to_vec()));
        assert_eq!(get(c::THREEGPP_RAT_TYPE), Some(vec![6]));
    }

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        let s = Subscribers::parse_range("15551000000:5000").unwrap();
        assert_eq!(s.len(), 5000);
        let mut out = String::new();
        s.msisdn(4999, &mut out);
        assert_eq!(out, "15551004999");
        for bad in ["", "1", "a:1", "1:0", "1:x"] {
            assert!(Subscribers::parse_range(bad).is_err(), "{bad}");
        }
    }
}
