//! Dictionaries: AVP definitions (code, vendor, data format, M-bit rule, enumerated values,
//! Grouped contents) and command rules (required and maximum AVPs), read from XML files.
//!
//! The shipped files in `dictionaries/` are built in; further texts the caller supplies (the
//! daemon reads them from a directory, in file-name order) are loaded after them, and a
//! definition there replaces a built-in one with the same name or code. Any error names the
//! file, line and column. The format is described in `docs/dictionaries.md`. Nothing here reads
//! the file system.
//!
//! [`Dictionary::validate`] applies RFC 6733 §7: unknown AVPs with the M bit (5001), data that
//! does not fit its format (5014/5004), closed enumerations (5004), and per-command and
//! per-Grouped rules (5005, 5009, 5008).

use std::collections::{BTreeMap, HashMap};

use bytes::{Bytes, BytesMut};

use super::avp::{self, Avp, AvpFlags};
use super::codes::ResultCode;
use super::error::DiameterError;
use super::header::CommandFlags;
use super::message::Message;
use super::types::{AvpType, Value};

/// The built-in dictionary files, in load order.
pub(crate) const BUILTIN: &[(&str, &str)] = &[
    ("base.xml", include_str!("../../../dictionaries/base.xml")),
    // Before credit-control.xml, whose commands name its AVPs.
    ("doic.xml", include_str!("../../../dictionaries/doic.xml")),
    ("sy.xml", include_str!("../../../dictionaries/sy.xml")),
    (
        "credit-control.xml",
        include_str!("../../../dictionaries/credit-control.xml"),
    ),
    (
        "3gpp-gy.xml",
        include_str!("../../../dictionaries/3gpp-gy.xml"),
    ),
];

/// IETF AVP codes below this are looked up in a dense table.
const IETF_DENSE: usize = 1024;
/// 3GPP (vendor 10415) AVP codes below this are looked up in a dense table too: Gy requests
/// are full of them, and a binary search over every vendor's AVPs was the largest cost of
/// validation.
const TGPP_DENSE: usize = 4096;

/// How deep Grouped AVPs are checked; deeper nesting is refused rather than recursed into.
const MAX_DEPTH: usize = 16;

/// What the M bit of an AVP must be when sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagRule {
    Must,
    May,
    MustNot,
}

/// One AVP's definition.
#[derive(Clone, Debug)]
pub struct AvpDef {
    pub name: String,
    pub code: u32,
    pub vendor_id: u32,
    pub ty: AvpType,
    pub mandatory: FlagRule,
    /// Unknown values of a closed enumeration, sent with the M bit, are 5004.
    pub closed_values: bool,
    /// Named values, sorted by value.
    pub enums: Vec<(i32, String)>,
    /// Contents of a Grouped AVP.
    pub group: Option<RuleSet>,
}

impl AvpDef {
    pub(crate) fn enum_name(&self, value: i32) -> Option<&str> {
        self.enums
            .binary_search_by_key(&value, |(v, _)| *v)
            .ok()
            .map(|i| self.enums[i].1.as_str())
    }

    /// Flags we set when sending this AVP.
    pub fn flags(&self) -> u8 {
        let mut f = 0;
        if self.vendor_id != 0 {
            f |= AvpFlags::VENDOR;
        }
        if self.mandatory == FlagRule::Must {
            f |= AvpFlags::MANDATORY;
        }
        f
    }

    /// An example of this AVP for Failed-AVP when it is missing: zero data of the minimum
    /// length for its format (RFC 6733 §7.5).
    fn example(&self) -> Bytes {
        let len = self.ty.fixed_len().unwrap_or(0);
        let mut out = BytesMut::with_capacity(12 + len);
        avp::put_header(&mut out, self.code, self.flags(), self.vendor_id, len);
        out.resize(out.len() + avp::padded(len), 0);
        out.freeze()
    }
}

/// Which AVPs may appear, how often, and whether others are admitted (`*[ AVP ]`).
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub any: bool,
    /// For each AVP definition (by index), the position of its rule, or `NO_RULE`: counting
    /// an AVP is one lookup instead of a scan of the rules (a CCR has about fifty).
    slot: Vec<u16>,
    /// Positions of the rules with a minimum, in order.
    required: Vec<u16>,
}

const NO_RULE: u16 = u16::MAX;

impl RuleSet {
    /// The position of the rule for AVP definition `def`.
    fn rule_of(&self, def: usize) -> Option<usize> {
        match self.slot.get(def) {
            Some(&p) if p != NO_RULE => Some(p as usize),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Index into the dictionary's AVP table.
    pub avp: usize,
    pub min: u32,
    pub max: Option<u32>,
}

/// One command's definition.
#[derive(Clone, Debug)]
pub struct CommandDef {
    pub name: String,
    pub code: u32,
    pub application_id: Option<u32>,
    pub request: RuleSet,
    pub answer: RuleSet,
}

/// A loaded set of dictionaries.
#[derive(Clone, Debug, Default)]
pub struct Dictionary {
    avps: Vec<AvpDef>,
    /// IETF AVPs (vendor 0) with small codes: index + 1 by code, 0 when undefined.
    ietf: Vec<u32>,
    /// The same for vendor 10415.
    tgpp: Vec<u32>,
    /// Every AVP, sorted by (vendor, code), for the rest.
    sorted: Vec<((u32, u32), usize)>,
    names: HashMap<String, usize>,
    commands: HashMap<u32, CommandDef>,
    applications: BTreeMap<u32, String>,
    vendors: BTreeMap<u32, String>,
}

/// A dictionary file that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct DictionaryError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub reason: String,
}

struct Pos<'a> {
    file: &'a str,
    doc: &'a roxmltree::Document<'a>,
}

impl Pos<'_> {
    fn err(&self, node: roxmltree::Node, reason: impl Into<String>) -> DictionaryError {
        let p = self.doc.text_pos_at(node.range().start);
        DictionaryError {
            file: self.file.to_owned(),
            line: p.row,
            column: p.col,
            reason: reason.into(),
        }
    }
}

/// A rule as read, before AVP names are resolved.
struct RawRule {
    avp: String,
    min: u32,
    max: Option<u32>,
    file: String,
    line: u32,
    column: u32,
}

#[derive(Default)]
struct RawRuleSet {
    rules: Vec<RawRule>,
    any: bool,
}

/// Definitions read from files, resolved once all are read.
#[derive(Default)]
struct Loader {
    avps: Vec<(AvpDef, Option<RawRuleSet>)>,
    commands: Vec<(String, u32, Option<u32>, RawRuleSet, RawRuleSet)>,
    applications: BTreeMap<u32, String>,
    vendors: BTreeMap<u32, String>,
    /// Names of replaced definitions, which keep pointing at their replacement: (old, new).
    aliases: Vec<(String, String)>,
}

fn attr<'a>(
    pos: &Pos,
    node: roxmltree::Node<'a, 'a>,
    name: &str,
) -> Result<&'a str, DictionaryError> {
    node.attribute(name).ok_or_else(|| {
        pos.err(
            node,
            format!("<{}> needs a '{name}' attribute", node.tag_name().name()),
        )
    })
}

fn num<T: std::str::FromStr>(
    pos: &Pos,
    node: roxmltree::Node,
    name: &str,
) -> Result<Option<T>, DictionaryError> {
    match node.attribute(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| pos.err(node, format!("'{name}' must be a number, not '{v}'"))),
    }
}

fn rules(pos: &Pos, parent: roxmltree::Node) -> Result<RawRuleSet, DictionaryError> {
    let mut set = RawRuleSet::default();
    for child in parent.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "rule" => {
                let p = pos.doc.text_pos_at(child.range().start);
                let min = num::<u32>(pos, child, "min")?.unwrap_or(0);
                let max = num::<u32>(pos, child, "max")?;
                if max.is_some_and(|m| m < min || m == 0) {
                    return Err(pos.err(child, "'max' must be at least 1 and not below 'min'"));
                }
                set.rules.push(RawRule {
                    avp: attr(pos, child, "avp")?.to_owned(),
                    min,
                    max,
                    file: pos.file.to_owned(),
                    line: p.row,
                    column: p.col,
                });
            }
            "any" => set.any = true,
            "enum" => {}
            other => return Err(pos.err(child, format!("unexpected <{other}> here"))),
        }
    }
    Ok(set)
}

impl Loader {
    fn read(&mut self, file: &str, text: &str) -> Result<(), DictionaryError> {
        let doc = roxmltree::Document::parse(text).map_err(|e| {
            let p = e.pos();
            DictionaryError {
                file: file.to_owned(),
                line: p.row,
                column: p.col,
                reason: e.to_string(),
            }
        })?;
        let pos = Pos { file, doc: &doc };
        let root = doc.root_element();
        if root.tag_name().name() != "dictionary" {
            return Err(pos.err(root, "the root element must be <dictionary>"));
        }
        let mut names_here = std::collections::HashSet::new();
        let mut codes_here = std::collections::HashSet::new();
        for node in root.children().filter(|n| n.is_element()) {
            match node.tag_name().name() {
                "vendor" => {
                    let id = num::<u32>(&pos, node, "id")?
                        .ok_or_else(|| pos.err(node, "<vendor> needs 'id'"))?;
                    self.vendors
                        .insert(id, attr(&pos, node, "name")?.to_owned());
                }
                "application" => {
                    let id = num::<u32>(&pos, node, "id")?
                        .ok_or_else(|| pos.err(node, "<application> needs 'id'"))?;
                    self.applications
                        .insert(id, attr(&pos, node, "name")?.to_owned());
                }
                "avp" => {
                    let name = attr(&pos, node, "name")?.to_owned();
                    let code = num::<u32>(&pos, node, "code")?
                        .ok_or_else(|| pos.err(node, "<avp> needs 'code'"))?;
                    let vendor_id = num::<u32>(&pos, node, "vendor")?.unwrap_or(0);
                    let ty_name = attr(&pos, node, "type")?;
                    let ty = AvpType::from_name(ty_name)
                        .ok_or_else(|| pos.err(node, format!("unknown data format '{ty_name}'")))?;
                    let mandatory = match node.attribute("mandatory").unwrap_or("must") {
                        "must" => FlagRule::Must,
                        "may" => FlagRule::May,
                        "mustnot" => FlagRule::MustNot,
                        other => {
                            return Err(pos.err(
                                node,
                                format!("'mandatory' must be must, may or mustnot, not '{other}'"),
                            ));
                        }
                    };
                    let closed_values = match node.attribute("values").unwrap_or("open") {
                        "open" => false,
                        "closed" => true,
                        other => {
                            return Err(pos.err(
                                node,
                                format!("'values' must be open or closed, not '{other}'"),
                            ));
                        }
                    };
                    if !names_here.insert(name.clone()) || !codes_here.insert((code, vendor_id)) {
                        return Err(pos.err(node, format!("AVP '{name}' ({code}, vendor {vendor_id}) is defined twice in this file")));
                    }
                    let mut enums = Vec::new();
                    for e in node.children().filter(|n| n.has_tag_name("enum")) {
                        let v = num::<i32>(&pos, e, "code")?
                            .ok_or_else(|| pos.err(e, "<enum> needs 'code'"))?;
                        enums.push((v, attr(&pos, e, "name")?.to_owned()));
                    }
                    if !enums.is_empty() && ty != AvpType::Enumerated {
                        return Err(pos.err(node, "<enum> values belong to Enumerated AVPs only"));
                    }
                    enums.sort_by_key(|(v, _)| *v);
                    let group = rules(&pos, node)?;
                    let group = if ty == AvpType::Grouped {
                        Some(group)
                    } else if !group.rules.is_empty() || group.any {
                        return Err(pos.err(node, "<rule> and <any/> belong to Grouped AVPs only"));
                    } else {
                        None
                    };
                    let def = AvpDef {
                        name,
                        code,
                        vendor_id,
                        ty,
                        mandatory,
                        closed_values,
                        enums,
                        group: None,
                    };
                    // A later file replaces an earlier definition with the same name or code;
                    // rules that named the old one follow to the new one.
                    for (old, _) in &self.avps {
                        if (old.code, old.vendor_id) == (code, vendor_id) && old.name != def.name {
                            self.aliases.push((old.name.clone(), def.name.clone()));
                        }
                    }
                    self.avps.retain(|(d, _)| {
                        d.name != def.name && (d.code, d.vendor_id) != (code, vendor_id)
                    });
                    self.avps.push((def, group));
                }
                "command" => {
                    let name = attr(&pos, node, "name")?.to_owned();
                    let code = num::<u32>(&pos, node, "code")?
                        .ok_or_else(|| pos.err(node, "<command> needs 'code'"))?;
                    let app = num::<u32>(&pos, node, "application")?;
                    let mut request = None;
                    let mut answer = None;
                    for part in node.children().filter(|n| n.is_element()) {
                        match part.tag_name().name() {
                            "request" => request = Some(rules(&pos, part)?),
                            "answer" => answer = Some(rules(&pos, part)?),
                            other => {
                                return Err(
                                    pos.err(part, format!("unexpected <{other}> in <command>"))
                                );
                            }
                        }
                    }
                    let (Some(request), Some(answer)) = (request, answer) else {
                        return Err(pos.err(node, "<command> needs <request> and <answer>"));
                    };
                    self.commands.retain(|c| c.1 != code);
                    self.commands.push((name, code, app, request, answer));
                }
                other => return Err(pos.err(node, format!("unexpected <{other}> in <dictionary>"))),
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Dictionary, DictionaryError> {
        let mut dict = Dictionary {
            applications: self.applications,
            vendors: self.vendors,
            ..Default::default()
        };
        let mut groups = Vec::new();
        let mut defs = self.avps;
        defs.sort_by_key(|(d, _)| (d.vendor_id, d.code));
        for (i, (def, group)) in defs.into_iter().enumerate() {
            dict.sorted.push(((def.vendor_id, def.code), i));
            if def.vendor_id == 0 && (def.code as usize) < IETF_DENSE {
                if dict.ietf.len() <= def.code as usize {
                    dict.ietf.resize(def.code as usize + 1, 0);
                }
                dict.ietf[def.code as usize] = i as u32 + 1;
            }
            if def.vendor_id == super::codes::VENDOR_3GPP && (def.code as usize) < TGPP_DENSE {
                if dict.tgpp.len() <= def.code as usize {
                    dict.tgpp.resize(def.code as usize + 1, 0);
                }
                dict.tgpp[def.code as usize] = i as u32 + 1;
            }
            dict.names.insert(def.name.clone(), i);
            dict.avps.push(def);
            groups.push(group);
        }
        let avp_count = dict.avps.len();
        let resolve = |names: &HashMap<String, usize>,
                       raw: RawRuleSet|
         -> Result<RuleSet, DictionaryError> {
            let mut set = RuleSet {
                rules: Vec::with_capacity(raw.rules.len()),
                any: raw.any,
                slot: vec![NO_RULE; avp_count],
                required: Vec::new(),
            };
            for r in raw.rules {
                let Some(&avp) = names.get(&r.avp) else {
                    return Err(DictionaryError {
                        file: r.file,
                        line: r.line,
                        column: r.column,
                        reason: format!("rule names AVP '{}', which no dictionary defines", r.avp),
                    });
                };
                if r.min > 0 {
                    set.required
                        .push(u16::try_from(set.rules.len()).unwrap_or(NO_RULE));
                }
                if set.slot[avp] == NO_RULE {
                    set.slot[avp] = u16::try_from(set.rules.len()).unwrap_or(NO_RULE);
                }
                set.rules.push(Rule {
                    avp,
                    min: r.min,
                    max: r.max,
                });
            }
            Ok(set)
        };
        for (old, new) in &self.aliases {
            if let Some(&i) = dict.names.get(new) {
                dict.names.entry(old.clone()).or_insert(i);
            }
        }
        for (i, group) in groups.into_iter().enumerate() {
            if let Some(raw) = group {
                dict.avps[i].group = Some(resolve(&dict.names, raw)?);
            }
        }
        dict.sorted.sort_unstable_by_key(|(k, _)| *k);
        for (name, code, application_id, req, ans) in self.commands {
            let request = resolve(&dict.names, req)?;
            let answer = resolve(&dict.names, ans)?;
            dict.commands.insert(
                code,
                CommandDef {
                    name,
                    code,
                    application_id,
                    request,
                    answer,
                },
            );
        }
        Ok(dict)
    }
}

impl Dictionary {
    /// The shipped dictionaries.
    pub fn builtin() -> Result<Dictionary, DictionaryError> {
        Self::with(&[])
    }

    /// The shipped dictionaries, then `extra` (each a file's name, for errors, and its text)
    /// in the order given.
    pub fn with(extra: &[(String, String)]) -> Result<Dictionary, DictionaryError> {
        let mut loader = Loader::default();
        for (name, text) in BUILTIN {
            loader.read(&format!("(built-in) {name}"), text)?;
        }
        for (name, text) in extra {
            loader.read(name, text)?;
        }
        loader.finish()
    }

    /// The index of an AVP's definition.
    fn lookup(&self, code: u32, vendor_id: u32) -> Option<usize> {
        let dense = match vendor_id {
            0 if (code as usize) < IETF_DENSE => Some(&self.ietf),
            super::codes::VENDOR_3GPP if (code as usize) < TGPP_DENSE => Some(&self.tgpp),
            _ => None,
        };
        if let Some(table) = dense {
            return match table.get(code as usize) {
                Some(&i) if i > 0 => Some(i as usize - 1),
                _ => None,
            };
        }
        self.sorted
            .binary_search_by_key(&(vendor_id, code), |(k, _)| *k)
            .ok()
            .map(|i| self.sorted[i].1)
    }

    pub fn avp(&self, code: u32, vendor_id: u32) -> Option<&AvpDef> {
        self.lookup(code, vendor_id).map(|i| &self.avps[i])
    }

    pub fn avp_by_name(&self, name: &str) -> Option<&AvpDef> {
        self.names.get(name).map(|&i| &self.avps[i])
    }

    pub fn command(&self, code: u32) -> Option<&CommandDef> {
        self.commands.get(&code)
    }

    pub(crate) fn application_name(&self, id: u32) -> Option<&str> {
        self.applications.get(&id).map(String::as_str)
    }

    pub(crate) fn vendor_name(&self, id: u32) -> Option<&str> {
        self.vendors.get(&id).map(String::as_str)
    }

    pub fn avp_count(&self) -> usize {
        self.avps.len()
    }

    /// Checks a decoded message against RFC 6733 §3 (header bits) and the dictionary: an
    /// unknown command is 3001; then every AVP and the command's rules.
    pub fn validate(&self, msg: &Message) -> Result<(), DiameterError> {
        check_header_bits(msg)?;
        let Some(cmd) = self.command(msg.header.command_code) else {
            return Err(DiameterError::new(
                ResultCode::CommandUnsupported,
                "command is not supported",
            ));
        };
        let rules = if msg.header.flags.is_request() {
            Some(&cmd.request)
        } else if msg.header.flags.is_error() {
            // Error answers follow RFC 6733 §7.2, not the command's answer rules.
            None
        } else {
            Some(&cmd.answer)
        };
        let mut counts = Counts::new(rules);
        for a in msg.avps() {
            let def = self.lookup(a.code, a.vendor_id);
            self.check_avp(&a, def, 0).map_err(|e| *e)?;
            counts.add(def, &a).map_err(|e| *e)?;
        }
        counts.finish(self).map_err(|e| *e)
    }

    fn check_avp(&self, a: &Avp, def: Option<usize>, depth: usize) -> Check {
        if a.flags.0 & AvpFlags::RESERVED != 0 {
            return Err(Box::new(
                DiameterError::new(ResultCode::InvalidAvpBits, "AVP has reserved flag bits set")
                    .with_avp(a.to_bytes()),
            ));
        }
        let Some(def) = def.map(|i| &self.avps[i]) else {
            if a.flags.is_mandatory() {
                return Err(Box::new(
                    DiameterError::new(
                        ResultCode::AvpUnsupported,
                        "AVP with the M bit is not supported",
                    )
                    .with_avp(a.to_bytes()),
                ));
            }
            return Ok(());
        };
        if let Err(e) = Value::check(def.ty, a.data) {
            return Err(Box::new(
                DiameterError::new(e.result_code(), e.reason()).with_avp(a.to_bytes()),
            ));
        }
        if def.closed_values && a.flags.is_mandatory() {
            let v = super::types::decode_i32(a.data).unwrap_or(i32::MIN);
            if def.enum_name(v).is_none() {
                return Err(Box::new(
                    DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "enumerated value is not defined",
                    )
                    .with_avp(a.to_bytes()),
                ));
            }
        }
        if let Some(group) = &def.group {
            if depth >= MAX_DEPTH {
                return Err(Box::new(
                    DiameterError::new(
                        ResultCode::InvalidAvpValue,
                        "Grouped AVPs nested too deeply",
                    )
                    .with_avp(a.to_bytes()),
                ));
            }
            let mut counts = Counts::new(Some(group));
            let mut children = a.children();
            for child in children.by_ref() {
                let cdef = self.lookup(child.code, child.vendor_id);
                self.check_avp(&child, cdef, depth + 1)
                    .map_err(|e| Box::new(a.wrap_error(*e)))?;
                counts
                    .add(cdef, &child)
                    .map_err(|e| Box::new(a.wrap_error(*e)))?;
            }
            children.finish().map_err(|e| Box::new(a.wrap_error(e)))?;
            counts
                .finish(self)
                .map_err(|e| Box::new(a.wrap_error(*e)))?;
        }
        Ok(())
    }
}

/// Occurrences of each rule's AVP while a message or group is walked.
/// Validation's result: boxed, so that the well-formed path returns one word.
type Check = Result<(), Box<DiameterError>>;

struct Counts<'r> {
    set: Option<&'r RuleSet>,
    small: [u32; SMALL_RULES],
    large: Vec<u32>,
}

/// Rule sets up to this size count on the stack (a CCR's has about fifty rules).
const SMALL_RULES: usize = 64;

impl<'r> Counts<'r> {
    fn new(set: Option<&'r RuleSet>) -> Self {
        let n = set.map_or(0, |s| s.rules.len());
        Counts {
            set,
            small: [0; SMALL_RULES],
            large: if n > SMALL_RULES {
                vec![0; n]
            } else {
                Vec::new()
            },
        }
    }

    fn slot(&mut self, i: usize) -> &mut u32 {
        if self.large.is_empty() {
            &mut self.small[i]
        } else {
            &mut self.large[i]
        }
    }

    /// Counts one AVP: 5009 past its maximum, 5008 if the rules do not admit it.
    fn add(&mut self, def: Option<usize>, a: &Avp) -> Check {
        let Some(set) = self.set else { return Ok(()) };
        match def.and_then(|d| set.rule_of(d)) {
            Some(p) => {
                let n = self.slot(p);
                *n += 1;
                if set.rules[p].max.is_some_and(|m| *n > m) {
                    return Err(Box::new(
                        DiameterError::new(
                            ResultCode::AvpOccursTooManyTimes,
                            "AVP occurs too many times",
                        )
                        .with_avp(a.to_bytes()),
                    ));
                }
                Ok(())
            }
            None if set.any => Ok(()),
            None => Err(Box::new(
                DiameterError::new(ResultCode::AvpNotAllowed, "AVP is not allowed here")
                    .with_avp(a.to_bytes()),
            )),
        }
    }

    /// 5005 for the first rule whose minimum was not met, with an example AVP.
    fn finish(mut self, dict: &Dictionary) -> Check {
        let Some(set) = self.set else { return Ok(()) };
        for &i in &set.required {
            let i = usize::from(i);
            let rule = set.rules[i];
            if *self.slot(i) < rule.min {
                let def = &dict.avps[rule.avp];
                return Err(Box::new(
                    DiameterError::new(ResultCode::MissingAvp, format!("missing AVP {}", def.name))
                        .with_avp(def.example()),
                ));
            }
        }
        Ok(())
    }
}

/// RFC 6733 §3: reserved command flag bits must be zero and a request must not carry the E bit
/// (3008 INVALID_HDR_BITS).
pub(crate) fn check_header_bits(msg: &Message) -> Result<(), DiameterError> {
    let f = msg.header.flags;
    if f.0 & CommandFlags::RESERVED != 0 {
        return Err(DiameterError::new(
            ResultCode::InvalidHdrBits,
            "reserved command flag bits are set",
        ));
    }
    if f.is_request() && f.is_error() {
        return Err(DiameterError::new(
            ResultCode::InvalidHdrBits,
            "a request must not have the E bit set",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::{self, avp as c};
    use crate::encode::MessageWriter;
    use crate::header::Header;
    use crate::types::Address;

    fn dict() -> Dictionary {
        Dictionary::builtin().unwrap()
    }

    /// Every AVP constant in the code matches the shipped files: code, vendor and M bit.
    #[test]
    fn code_constants_match_the_dictionary_files() {
        let d = dict();
        for k in codes::avp::ALL {
            let def = d
                .avp_by_name(k.name)
                .unwrap_or_else(|| panic!("{} not in the dictionaries", k.name));
            assert_eq!(
                (def.code, def.vendor_id),
                (k.code, k.vendor_id),
                "{}",
                k.name
            );
            assert_eq!(
                def.mandatory == FlagRule::Must,
                k.mandatory,
                "M bit of {}",
                k.name
            );
        }
        for (code, name) in [
            (
                codes::command::CAPABILITIES_EXCHANGE,
                "Capabilities-Exchange",
            ),
            (codes::command::DEVICE_WATCHDOG, "Device-Watchdog"),
            (codes::command::DISCONNECT_PEER, "Disconnect-Peer"),
            (codes::command::CREDIT_CONTROL, "Credit-Control"),
            (codes::command::RE_AUTH, "Re-Auth"),
            (codes::command::ABORT_SESSION, "Abort-Session"),
        ] {
            assert_eq!(d.command(code).unwrap().name, name);
        }
        assert_eq!(
            d.application_name(codes::application::CREDIT_CONTROL),
            Some("Diameter Credit-Control")
        );
        assert_eq!(d.vendor_name(codes::VENDOR_3GPP), Some("3GPP"));
    }

    fn cer(extra: impl FnOnce(&mut MessageWriter)) -> Message {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(257, 0, 1, 1));
        w.identity(c::ORIGIN_HOST, "gw.example.net");
        w.identity(c::ORIGIN_REALM, "example.net");
        w.address(
            c::HOST_IP_ADDRESS,
            &Address::Ip("10.0.0.1".parse().unwrap()),
        );
        w.u32(c::VENDOR_ID, 0);
        w.utf8(c::PRODUCT_NAME, "test");
        extra(&mut w);
        w.finish();
        Message::decode(buf.freeze()).unwrap()
    }

    #[test]
    fn valid_cer_passes() {
        dict()
            .validate(&cer(|w| w.u32(c::AUTH_APPLICATION_ID, 4)))
            .unwrap();
    }

    #[test]
    fn rule_and_avp_errors() {
        let d = dict();
        let dup = d
            .validate(&cer(|w| w.identity(c::ORIGIN_HOST, "again.example.net")))
            .unwrap_err();
        assert_eq!(dup.result_code, ResultCode::AvpOccursTooManyTimes);
        let failed = dup.failed_avp.clone().unwrap();
        let second = avp::AvpIter::new(&failed).next().unwrap();
        assert_eq!(
            second.data, b"again.example.net",
            "Failed-AVP is the instance past the maximum"
        );

        let unknown = d
            .validate(&cer(|w| {
                w.bytes(
                    crate::AvpCode {
                        name: "x",
                        code: 9999,
                        vendor_id: 0,
                        mandatory: true,
                    },
                    b"zz",
                )
            }))
            .unwrap_err();
        assert_eq!(unknown.result_code, ResultCode::AvpUnsupported);
        // Without the M bit an unknown AVP is ignored.
        d.validate(&cer(|w| {
            w.bytes(
                crate::AvpCode {
                    name: "x",
                    code: 9999,
                    vendor_id: 0,
                    mandatory: false,
                },
                b"zz",
            )
        }))
        .unwrap();

        let bad_len = d
            .validate(&cer(|w| w.bytes(c::ORIGIN_STATE_ID, &[1, 2])))
            .unwrap_err();
        assert_eq!(bad_len.result_code, ResultCode::InvalidAvpLength);

        let bad_group = d
            .validate(&cer(|w| {
                let g = w.begin_group(c::VENDOR_SPECIFIC_APPLICATION_ID);
                w.u32(c::AUTH_APPLICATION_ID, 4);
                w.end_group(g);
            }))
            .unwrap_err();
        assert_eq!(bad_group.result_code, ResultCode::MissingAvp);
        // Failed-AVP: the group wrapping an example Vendor-Id.
        let failed = bad_group.failed_avp.unwrap();
        let outer = avp::AvpIter::new(&failed).next().unwrap();
        assert_eq!(outer.code, 260);
        let inner = outer.children().next().unwrap();
        assert_eq!((inner.code, inner.data.len()), (266, 4));
    }

    #[test]
    fn missing_required_avp_is_5005_with_an_example() {
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(280, 0, 1, 1));
        w.identity(c::ORIGIN_REALM, "example.net");
        w.finish();
        let e = dict()
            .validate(&Message::decode(buf.freeze()).unwrap())
            .unwrap_err();
        assert_eq!(e.result_code, ResultCode::MissingAvp);
        let failed = e.failed_avp.unwrap();
        let ex = avp::AvpIter::new(&failed).next().unwrap();
        assert_eq!((ex.code, ex.flags.0, ex.data.len()), (264, 0x40, 0));
    }

    #[test]
    fn closed_enum_and_header_bits() {
        let d = dict();
        let mut buf = BytesMut::new();
        let mut w = MessageWriter::new(&mut buf, &Header::request(282, 0, 1, 1));
        w.identity(c::ORIGIN_HOST, "gw.example.net");
        w.identity(c::ORIGIN_REALM, "example.net");
        w.u32(c::DISCONNECT_CAUSE, 7);
        w.finish();
        let mut msg = Message::decode(buf.freeze()).unwrap();
        assert_eq!(
            d.validate(&msg).unwrap_err().result_code,
            ResultCode::InvalidAvpValue
        );
        msg.header.flags.0 |= CommandFlags::ERROR;
        assert_eq!(
            d.validate(&msg).unwrap_err().result_code,
            ResultCode::InvalidHdrBits
        );
        msg.header.flags.0 = CommandFlags::REQUEST | 0x01;
        assert_eq!(
            d.validate(&msg).unwrap_err().result_code,
            ResultCode::InvalidHdrBits
        );
        msg.header.command_code = 999;
        msg.header.flags.0 = CommandFlags::REQUEST;
        assert_eq!(
            d.validate(&msg).unwrap_err().result_code,
            ResultCode::CommandUnsupported
        );
    }

    #[test]
    fn broken_files_name_file_line_and_column() {
        let cases = [
            (
                "<dictionary>\n  <avp name=\"X\" code=\"1\" type=\"Nope\"/>\n</dictionary>",
                ":2:3: unknown data format 'Nope'",
            ),
            (
                "<dictionary>\n<avp name=\"X\" code=\"70000\" type=\"Grouped\">\n <rule avp=\"Nobody\"/>\n</avp>\n</dictionary>",
                ":3:2: rule names AVP 'Nobody'",
            ),
            (
                "<dictionary>\n<avp name=\"X\" code==\"1\"/></dictionary>",
                ":2:",
            ),
            (
                "<dictionary><avp name=\"X\" code=\"1\" type=\"UTF8String\"/><avp name=\"X\" code=\"2\" type=\"UTF8String\"/></dictionary>",
                "defined twice",
            ),
        ];
        for (text, want) in cases {
            let extra = [("dir/vendor.xml".to_owned(), text.to_owned())];
            let err = Dictionary::with(&extra).unwrap_err().to_string();
            assert!(err.starts_with("dir/vendor.xml"), "{err}");
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn vendor_file_adds_and_replaces() {
        let extra = [(
            "acme.xml".to_owned(),
            r#"<dictionary><vendor id="99999" name="Acme"/>
               <avp name="Acme-Flavour" code="1" vendor="99999" type="Enumerated" values="closed"><enum code="1" name="VANILLA"/></avp>
               <avp name="Product-Name" code="269" type="UTF8String" mandatory="may"/></dictionary>"#
                .to_owned(),
        )];
        let d = Dictionary::with(&extra).unwrap();
        let f = d.avp(1, 99999).unwrap();
        assert_eq!(f.enum_name(1), Some("VANILLA"));
        assert_eq!(
            d.avp_by_name("Product-Name").unwrap().mandatory,
            FlagRule::May
        );
        // Rules naming a replaced AVP still resolve to it.
        d.validate(&cer(|_| {})).unwrap();
    }
}
