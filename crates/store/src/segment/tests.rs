//! Segment reading against injected faults: short writes (every truncation point), torn tails,
//! zero-filled tails, flipped bits, gaps; model-based: whatever survives is exactly a prefix
//! of what was written, and anything but a tail is reported as corruption.

use super::*;
use crate::record::Account;
use crate::record::Op;

fn rec(sequence: u64) -> Record {
    Record {
        sequence,
        time: 1_000 + sequence as i64,
        op: Op::Commit {
            reservation: sequence,
            account: Account { tree: 1, node: 2 },
            unit: 0,
            reserved: 10,
            used: sequence,
        },
    }
}

/// Writes records 1..=n, `per` records per append, in segments of `segment_bytes`.
fn write(dir: &Path, n: u64, per: u64, segment_bytes: u64) {
    let mut w = SegmentWriter::open(dir, 1, segment_bytes).unwrap();
    let mut s = 1;
    while s <= n {
        let k = per.min(n - s + 1);
        let mut buf = Vec::new();
        for q in s..s + k {
            rec(q).encode(&mut buf);
        }
        w.append(&buf, k).unwrap();
        s += k;
    }
    w.sync().unwrap();
}

fn read(dir: &Path, repair: bool) -> Result<(Vec<Record>, ReadSummary), ReadError> {
    let mut got = Vec::new();
    let s = read_all(dir, 0, repair, |r| got.push(r.clone()))?;
    Ok((got, s))
}

#[test]
fn written_records_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1000, 7, 4096);
    assert!(list(dir.path()).unwrap().len() > 5, "several segments");
    let (got, s) = read(dir.path(), true).unwrap();
    assert_eq!(got, (1..=1000).map(rec).collect::<Vec<_>>());
    assert_eq!(
        (s.records, s.last_sequence, s.truncated),
        (1000, Some(1000), None)
    );
    // Appending again continues the sequence in the last segment.
    let mut w = SegmentWriter::open(dir.path(), 1001, 4096).unwrap();
    let mut buf = Vec::new();
    rec(1001).encode(&mut buf);
    w.append(&buf, 1).unwrap();
    assert_eq!(read(dir.path(), true).unwrap().0.len(), 1001);
    // Reading after a snapshot's sequence skips what it covers.
    let mut n = 0;
    read_all(dir.path(), 990, false, |_| n += 1).unwrap();
    assert_eq!(n, 11);
}

#[test]
fn every_short_write_of_the_tail_is_truncated_to_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 20, 1, 1 << 20);
    let path = list(dir.path()).unwrap()[0].1.clone();
    let full = fs::read(&path).unwrap();
    for cut in SEGMENT_HEADER..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (got, s) = read(dir.path(), true).unwrap();
        // Model: the records wholly before the cut survive, nothing else.
        let mut expect = Vec::new();
        let mut pos = SEGMENT_HEADER;
        for q in 1..=20 {
            let mut b = Vec::new();
            rec(q).encode(&mut b);
            if pos + b.len() <= cut {
                expect.push(rec(q));
            }
            pos += b.len();
        }
        assert_eq!(got, expect, "cut at {cut}");
        // Repaired: the file now ends at the last whole record and reads cleanly.
        let again = read(dir.path(), true).unwrap();
        assert_eq!(again.0, expect);
        assert_eq!(
            again.1.truncated, None,
            "cut at {cut}: second read finds nothing to cut"
        );
        // Something was cut exactly when the cut fell inside a record.
        let whole = SEGMENT_HEADER
            + expect
                .iter()
                .map(|r| {
                    let mut b = Vec::new();
                    r.encode(&mut b);
                    b.len()
                })
                .sum::<usize>();
        assert_eq!(s.truncated.is_some(), whole != cut, "cut at {cut}");
    }
}

#[test]
fn a_zero_filled_tail_is_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 5, 1, 1 << 20);
    let path = list(dir.path()).unwrap()[0].1.clone();
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(&[0; 4096]);
    fs::write(&path, &data).unwrap();
    let (got, s) = read(dir.path(), true).unwrap();
    assert_eq!(got.len(), 5);
    assert_eq!(s.truncated.map(|t| t.2), Some(4096));
}

#[test]
fn a_flipped_bit_in_the_middle_stops_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 50, 1, 1 << 20);
    let path = list(dir.path()).unwrap()[0].1.clone();
    let clean = fs::read(&path).unwrap();
    let mut hits = 0;
    for byte in (SEGMENT_HEADER..clean.len() - 200).step_by(7) {
        let mut data = clean.clone();
        data[byte] ^= 0x10;
        fs::write(&path, &data).unwrap();
        match read(dir.path(), true) {
            Err(ReadError::Corrupt { file, offset, .. }) => {
                assert_eq!(file, path);
                assert!(
                    offset as usize <= byte && byte < offset as usize + 64,
                    "offset {offset} for byte {byte}"
                );
                hits += 1;
            }
            other => panic!("flipped byte {byte}: {other:?}"),
        }
        // Nothing was truncated by the failed read.
        assert_eq!(fs::read(&path).unwrap(), data);
    }
    assert!(hits > 50);
}

#[test]
fn gaps_and_bad_headers_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 300, 10, 2048);
    let segs = list(dir.path()).unwrap();
    assert!(segs.len() >= 3);
    // A missing middle segment is a gap.
    let moved = segs[1].1.with_extension("away");
    fs::rename(&segs[1].1, &moved).unwrap();
    assert!(
        matches!(read(dir.path(), true), Err(ReadError::Corrupt { reason, .. }) if reason.contains("gap"))
    );
    fs::rename(&moved, &segs[1].1).unwrap();
    // A segment whose header does not match its name.
    let mut data = fs::read(&segs[0].1).unwrap();
    data[0] = b'X';
    fs::write(&segs[0].1, &data).unwrap();
    assert!(matches!(
        read(dir.path(), true),
        Err(ReadError::Corrupt { offset: 0, .. })
    ));
    // A cut-short record in a segment that is not the last is corruption, not a tail.
    data[0] = b'O';
    data.truncate(data.len() - 3);
    fs::write(&segs[0].1, &data).unwrap();
    assert!(matches!(
        read(dir.path(), true),
        Err(ReadError::Corrupt { .. })
    ));
}

#[test]
fn an_empty_directory_reads_as_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (got, s) = read(&dir.path().join("missing"), true).unwrap();
    assert!(got.is_empty());
    assert_eq!(s, ReadSummary::default());
}

#[test]
fn cutting_at_corruption_keeps_what_precedes_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 300, 10, 2048);
    let segs = list(dir.path()).unwrap();
    let mut data = fs::read(&segs[1].1).unwrap();
    data[SEGMENT_HEADER + 200] ^= 1;
    fs::write(&segs[1].1, &data).unwrap();
    assert!(read(dir.path(), true).is_err());
    let (file, offset) = cut_at_corruption(dir.path(), 0, 42).unwrap().unwrap();
    assert_eq!(file, segs[1].1);
    let (got, _) = read(dir.path(), true).unwrap();
    // Everything before the corrupt record, in order, and nothing after it.
    assert!(!got.is_empty());
    assert_eq!(got, (1..=got.len() as u64).map(rec).collect::<Vec<_>>());
    assert!(offset > SEGMENT_HEADER as u64);
    // The damaged and later segments are kept aside, untouched.
    let kept = fs::read_dir(dir.path().join("quarantine-42"))
        .unwrap()
        .count();
    assert_eq!(kept, segs.len() - 1);
    // Clean now: nothing more to cut.
    assert_eq!(cut_at_corruption(dir.path(), 0, 43).unwrap(), None);
}

#[test]
fn a_follower_behind_removed_segments_goes_on_from_the_oldest_left() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), 1000, 7, 4096);
    let segments = list(dir.path()).unwrap();
    assert!(segments.len() > 3, "several segments");
    // A snapshot covered the first two segments and they were removed; a follower that
    // resumes from before them (a usage file whose last line is older) must not wait for
    // them forever.
    for (_, path) in &segments[..2] {
        fs::remove_file(path).unwrap();
    }
    let oldest = segments[2].0;
    let mut follower = Follower::new(dir.path(), 0);
    let mut seen = Vec::new();
    follower
        .read_up_to(1000, &[2], |r| seen.push(r.sequence)) // kind 2: Commit
        .unwrap();
    assert_eq!(seen, (oldest..=1000).collect::<Vec<_>>());
    assert_eq!(follower.next_sequence(), 1001);
    // With nothing removed it starts where it was told.
    let mut follower = Follower::new(dir.path(), oldest + 5);
    let mut n = 0;
    follower.read_up_to(1000, &[2], |_| n += 1).unwrap();
    assert_eq!(n, 1000 - oldest - 5);
}
