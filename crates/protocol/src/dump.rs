//! A human-readable rendering of any message, for engineers reading captures
//! (`ocfd decode <hex>`): header fields, then every AVP with its name, flags, vendor and value,
//! Grouped AVPs indented, enumerated values named.

use std::fmt::Write;

use bytes::Bytes;

use super::avp::{Avp, AvpIter};
use super::dictionary::Dictionary;
use super::frame;
use super::message::Message;
use super::types::{self, AvpType, Value, time_to_unix};

/// Parses hex (whitespace, colons and a leading 0x ignored) into octets.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .trim()
        .trim_start_matches("0x")
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("'{s}' is not hex"))
        })
        .collect()
}

/// Renders every message in `data` (several may follow each other).
pub fn render(dict: &Dictionary, data: &[u8]) -> String {
    let mut out = String::new();
    let mut rest = Bytes::copy_from_slice(data);
    while !rest.is_empty() {
        let len = match frame::check(&rest, usize::MAX) {
            Ok(Some(len)) if len <= rest.len() => len,
            Ok(Some(len)) => {
                let _ = writeln!(
                    out,
                    "! message declares {len} octets but only {} remain",
                    rest.len()
                );
                return out;
            }
            Ok(None) => {
                let _ = writeln!(out, "! {} octets left, fewer than a header", rest.len());
                return out;
            }
            Err(e) => {
                let _ = writeln!(out, "! {}", e.reason());
                return out;
            }
        };
        let frame = rest.split_to(len);
        match Message::decode(frame) {
            Ok(msg) => render_message(dict, &msg, &mut out),
            Err(fail) => {
                render_message(dict, &fail.partial, &mut out);
                let _ = writeln!(out, "! {}", fail.error);
            }
        }
    }
    out
}

fn render_message(dict: &Dictionary, msg: &Message, out: &mut String) {
    let h = &msg.header;
    let cmd = dict
        .command(h.command_code)
        .map(|c| c.name.as_str())
        .unwrap_or("unknown command");
    let kind = if h.flags.is_request() {
        "Request"
    } else {
        "Answer"
    };
    let mut flags = String::new();
    for (bit, c) in [(0x80, 'R'), (0x40, 'P'), (0x20, 'E'), (0x10, 'T')] {
        flags.push(if h.flags.0 & bit != 0 { c } else { '-' });
    }
    let app = dict
        .application_name(h.application_id)
        .unwrap_or("unknown application");
    let _ = writeln!(
        out,
        "{cmd}-{kind} (code {}) flags {flags} length {} application {} ({app}) hop-by-hop {:#010x} end-to-end {:#010x}",
        h.command_code, h.length, h.application_id, h.hop_by_hop, h.end_to_end
    );
    for a in msg.avps() {
        render_avp(dict, &a, 1, out);
    }
}

fn render_avp(dict: &Dictionary, a: &Avp, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let def = dict.avp(a.code, a.vendor_id);
    let name = def.map(|d| d.name.as_str()).unwrap_or("Unknown-AVP");
    let mut flags = String::new();
    for (bit, c) in [(0x80, 'V'), (0x40, 'M'), (0x20, 'P')] {
        flags.push(if a.flags.0 & bit != 0 { c } else { '-' });
    }
    let vendor = if a.flags.is_vendor() {
        format!(
            " vendor {} ({})",
            a.vendor_id,
            dict.vendor_name(a.vendor_id).unwrap_or("?")
        )
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "{indent}{name} ({}) {flags}{vendor} len {}",
        a.code,
        a.wire_len()
    );
    let Some(def) = def else {
        let _ = writeln!(out, " = 0x{}", types::hex(a.data));
        return;
    };
    if def.ty == AvpType::Grouped {
        let _ = writeln!(out);
        if depth > 16 {
            let _ = writeln!(out, "{indent}  ! nested too deeply");
            return;
        }
        let mut children = AvpIter::new(a.data);
        for c in children.by_ref() {
            render_avp(dict, &c, depth + 1, out);
        }
        if let Some(e) = children.error() {
            let _ = writeln!(out, "{indent}  ! {e}");
        }
        return;
    }
    let text = match Value::decode(def.ty, a.data) {
        Ok(Value::OctetString(b)) => match std::str::from_utf8(&b) {
            Ok(s) if !s.is_empty() && s.chars().all(|c| !c.is_control()) => {
                format!("0x{} \"{s}\"", types::hex(&b))
            }
            _ => format!("0x{}", types::hex(&b)),
        },
        Ok(Value::Enumerated(v)) => format!("{v} ({})", def.enum_name(v).unwrap_or("?")),
        Ok(Value::Time(t)) => format!("{t} (unix {})", time_to_unix(t)),
        Ok(Value::UTF8String(s) | Value::DiameterIdentity(s) | Value::IPFilterRule(s)) => {
            format!("\"{s}\"")
        }
        Ok(Value::DiameterURI(u)) => u.to_string(),
        Ok(Value::Address(addr)) => addr.to_string(),
        Ok(Value::Unsigned32(v)) => v.to_string(),
        Ok(Value::Unsigned64(v)) => v.to_string(),
        Ok(Value::Integer32(v)) => v.to_string(),
        Ok(Value::Integer64(v)) => v.to_string(),
        Ok(Value::Float32(v)) => v.to_string(),
        Ok(Value::Float64(v)) => v.to_string(),
        Ok(Value::Grouped(_)) => String::new(),
        Err(e) => format!("0x{} ! {}", types::hex(a.data), e.reason()),
    };
    let _ = writeln!(out, " = {text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_cer() {
        use crate::codes::avp as c;
        use crate::{Header, MessageWriter};
        let mut buf = bytes::BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(257, 0, 1, 2));
        w.identity(c::ORIGIN_HOST, "gw.example");
        w.address(
            c::HOST_IP_ADDRESS,
            &types::Address::Ip("10.0.0.1".parse().unwrap()),
        );
        let g = w.begin_group(c::VENDOR_SPECIFIC_APPLICATION_ID);
        w.u32(c::VENDOR_ID, 10415);
        w.u32(c::AUTH_APPLICATION_ID, 4);
        w.end_group(g);
        w.u32(c::DISCONNECT_CAUSE, 2);
        w.u32(c::REPORTING_REASON, 77);
        w.bytes(
            crate::AvpCode {
                name: "x",
                code: 7777,
                vendor_id: 0,
                mandatory: false,
            },
            &[1, 2],
        );
        w.finish();
        let hex = types::hex(&buf);
        let d = Dictionary::builtin().unwrap();
        let text = render(&d, &parse_hex(&hex).unwrap());
        let want = [
            "Capabilities-Exchange-Request (code 257) flags RP-- length 128 application 0 (Diameter Common Messages) hop-by-hop 0x00000001 end-to-end 0x00000002",
            "  Origin-Host (264) -M- len 18 = \"gw.example\"",
            "  Host-IP-Address (257) -M- len 14 = 10.0.0.1",
            "  Vendor-Specific-Application-Id (260) -M- len 32",
            "    Vendor-Id (266) -M- len 12 = 10415",
            "    Auth-Application-Id (258) -M- len 12 = 4",
            "  Disconnect-Cause (273) -M- len 12 = 2 (DO_NOT_WANT_TO_TALK_TO_YOU)",
            "  Reporting-Reason (872) VM- vendor 10415 (3GPP) len 16 = 77 (?)",
            "  Unknown-AVP (7777) --- len 10 = 0x0102",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), want, "{text}");
    }

    #[test]
    fn hex_parsing_and_garbage() {
        assert_eq!(parse_hex("0x01 02:ff").unwrap(), vec![1, 2, 0xff]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        let d = Dictionary::builtin().unwrap();
        assert!(render(&d, &[2, 0, 0, 20]).contains('!'));
        assert!(
            render(
                &d,
                &[1, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
            )
            .contains("unknown command")
        );
    }
}
