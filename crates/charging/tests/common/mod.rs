//! What the engine's tests share.

use ocf_charging::Engine;
use ocf_charging::ledger::Unit;
use ocf_protocol::base::LocalIdentity;
use ocf_protocol::codes::application;

/// Our identity as the engine answers with it (as tests/common/mod.rs builds it).
pub(crate) fn identity(product_name: &str) -> LocalIdentity {
    LocalIdentity {
        origin_host: "ocfd.localdomain".into(),
        origin_realm: "localdomain".into(),
        host_ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        vendor_id: 10415,
        product_name: product_name.into(),
        firmware_revision: 1,
        origin_state_id: 1,
        auth_application_ids: vec![application::CREDIT_CONTROL],
        supported_vendor_ids: vec![10415],
    }
}

/// (used, reserved) of the node's counter of `unit`.
pub(crate) fn counter(engine: &Engine, path: &[&str], unit: Unit) -> (u64, u64) {
    let ledger = engine.ledger();
    let tree = ledger.find_tree(path[0]).expect("tree");
    let t = ledger.lock(tree).unwrap();
    let node = t.find(path).unwrap_or_else(|| panic!("no node {path:?}"));
    let c = t.nodes[node as usize]
        .counters
        .iter()
        .find(|c| c.unit == unit)
        .unwrap_or_else(|| panic!("{path:?} has no {unit:?} limit"));
    (c.used, c.reserved)
}
