//! The offline tools of the `ocfd` binary (`ocfd journal`, `ocfd tenants`, `ocfd decode`):
//! they read and write files and print what they found, and never start the server.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ocf_charging::accounts::provisioning;
use ocf_charging::accounts::tenant::Directory;
use ocf_charging::ledger::Ledger;
use ocf_protocol::dump;

/// The journal sequence the snapshot in `state_dir` includes (0 without one).
fn snapshot_sequence(state_dir: &Path) -> anyhow::Result<u64> {
    let path = state_dir.join("snapshot");
    match std::fs::read(&path) {
        Ok(data) => Ok(ocf_store::snapshot::header(&data, &path)?.info.sequence),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Reads the journal under `state_dir` and reports what it holds (a torn last record is cut
/// off).
pub(crate) fn journal_check(state_dir: &Path) -> anyhow::Result<()> {
    let dir = state_dir.join("journal");
    let after = snapshot_sequence(state_dir)?;
    let s = ocf_store::segment::read_all(&dir, after, true, |_| {})?;
    println!(
        "{}: {} records, last sequence {}",
        dir.display(),
        s.records,
        s.last_sequence.unwrap_or(0)
    );
    if let Some((file, offset, dropped)) = s.truncated {
        println!(
            "cut a torn last record: {} at {offset} ({dropped} octets)",
            file.display()
        );
    }
    Ok(())
}

/// After corruption: keeps the journal up to the first bad record and moves the damaged
/// segment and all later ones to `journal/quarantine-<now>/`.
pub(crate) fn journal_repair(state_dir: &Path, now: i64) -> anyhow::Result<()> {
    let dir = state_dir.join("journal");
    let after = snapshot_sequence(state_dir)?;
    match ocf_store::segment::cut_at_corruption(&dir, after, now)? {
        None => println!("{}: no corruption found; nothing changed", dir.display()),
        Some((file, offset)) => println!(
            "cut {} at offset {offset}; the damaged and later segments are in {}",
            file.display(),
            dir.join(format!("quarantine-{now}")).display()
        ),
    }
    Ok(())
}

/// Writes a provisioning file of `enterprises` tenants sharing `devices` devices (standard
/// output without `out`).
pub(crate) fn tenants_generate(
    enterprises: u64,
    devices: u64,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    anyhow::ensure!(enterprises >= 1, "--enterprises must be at least 1");
    anyhow::ensure!(
        devices <= provisioning::MAX_DEVICES,
        "--devices is at most {}",
        provisioning::MAX_DEVICES
    );
    let text = provisioning::generate(enterprises, devices);
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Loads provisioning files as ocfd would and reports what they hold.
pub(crate) fn tenants_check(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut ledger = Ledger::new();
    let mut dir = Directory::default();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let n = provisioning::load_str(&f.display().to_string(), &text, &mut ledger, &mut dir)?;
        println!("{}: {n} tenants", f.display());
    }
    println!(
        "{} tenants, {} subscription ids",
        ledger.tree_count(),
        dir.subscriber_count()
    );
    Ok(())
}

/// Prints a human-readable dump of Diameter messages given as hex (standard input when `hex`
/// is empty or "-"), with the dictionaries of `dictionary_dir` added.
pub(crate) fn decode(hex: &[String], dictionary_dir: Option<&Path>) -> anyhow::Result<()> {
    let dict = ocf::config::load_dictionary(dictionary_dir)?;
    let text = if hex.is_empty() || hex == ["-"] {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        hex.join("")
    };
    let bytes = dump::parse_hex(&text).map_err(anyhow::Error::msg)?;
    print!("{}", dump::render(&dict, &bytes));
    Ok(())
}
