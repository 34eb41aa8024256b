//! Tracepoint record layouts, read at run time from tracefs `format` files.
//!
//! Rust eBPF has no CO-RE relocations, and these layouts change between kernels
//! (tcp_send_reset gained `reason` in 6.10, mark_victim gained its memory fields in 6.8),
//! so offsets and symbol tables are never compiled in: they come from here.
use std::collections::BTreeMap;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum FormatError {
    #[error("format file has no `name:` line")]
    NoName,
    #[error("malformed field line {line:?}: {why}")]
    BadField { line: String, why: &'static str },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C type as written (`int`, `__u8[28]`, `__data_loc char[]`...).
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    /// `__data_loc`: the field holds (len << 16 | offset) of a string in the record.
    pub data_loc: bool,
}

/// One tracepoint's record layout and its `print fmt`.
#[derive(Clone, Debug)]
pub struct Format {
    pub name: String,
    pub fields: Vec<Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        let mut name = None;
        let mut fields = Vec::new();
        let mut print_fmt = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("name:") {
                name = Some(rest.trim().to_string());
            } else if trimmed.starts_with("field:") {
                fields.push(parse_field(trimmed)?);
            } else if let Some(rest) = trimmed.strip_prefix("print fmt:") {
                print_fmt = rest.trim().to_string();
            }
        }
        Ok(Format { name: name.ok_or(FormatError::NoName)?, fields, print_fmt })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a field as the kernel programs want it: `None` when absent.
    pub fn offset(&self, name: &str) -> Option<u16> {
        self.field(name).and_then(|f| u16::try_from(f.offset).ok())
    }

    /// The `__print_symbolic(REC->field, { value, "NAME" }, ...)` table of a field.
    /// Entries whose value is itself a symbol (e.g. `TCP_ESTABLISHED`) are skipped:
    /// their numbers are not in the file.
    pub fn symbols(&self, field: &str) -> BTreeMap<i64, String> {
        symbolic_table(&self.print_fmt, field)
    }

    /// An integer field, sign-extended when the kernel says it is signed.
    pub fn read_int(&self, data: &[u8], name: &str) -> Option<i64> {
        let f = self.field(name)?;
        let bytes = data.get(f.offset..f.offset + f.size)?;
        Some(match (f.size, f.signed) {
            (1, true) => bytes[0] as i8 as i64,
            (1, false) => bytes[0] as i64,
            (2, true) => i16::from_ne_bytes(bytes.try_into().ok()?) as i64,
            (2, false) => u16::from_ne_bytes(bytes.try_into().ok()?) as i64,
            (4, true) => i32::from_ne_bytes(bytes.try_into().ok()?) as i64,
            (4, false) => u32::from_ne_bytes(bytes.try_into().ok()?) as i64,
            (8, _) => i64::from_ne_bytes(bytes.try_into().ok()?),
            _ => return None,
        })
    }

    pub fn read_u64(&self, data: &[u8], name: &str) -> Option<u64> {
        self.read_int(data, name).map(|v| v as u64)
    }

    /// The raw bytes of a fixed-size field (arrays such as addresses).
    pub fn read_bytes<'d>(&self, data: &'d [u8], name: &str) -> Option<&'d [u8]> {
        let f = self.field(name)?;
        data.get(f.offset..f.offset + f.size)
    }

    /// A string field: `char[N]` inline or `__data_loc char[]` stored later in the record.
    pub fn read_str(&self, data: &[u8], name: &str) -> Option<String> {
        let f = self.field(name)?;
        let bytes = if f.data_loc {
            let loc = u32::from_ne_bytes(data.get(f.offset..f.offset + 4)?.try_into().ok()?);
            let (off, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
            // A string past the copied part of the record comes back truncated.
            let end = (off + len).min(data.len());
            data.get(off..end)?
        } else {
            data.get(f.offset..f.offset + f.size)?
        };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }
}

fn parse_field(line: &str) -> Result<Field, FormatError> {
    let bad = |why| FormatError::BadField { line: line.to_string(), why };
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some(v) = part.strip_prefix("field:") {
            decl = Some(v.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl.ok_or_else(|| bad("no declaration"))?;
    let (c_type, name) = decl.rsplit_once(' ').ok_or_else(|| bad("no field name"))?;
    // `saddr[28]` -> name `saddr`, type `__u8[28]`.
    let (name, c_type) = match name.split_once('[') {
        Some((n, dims)) => (n.to_string(), format!("{c_type}[{dims}")),
        None => (name.to_string(), c_type.to_string()),
    };
    Ok(Field {
        data_loc: c_type.starts_with("__data_loc"),
        name,
        c_type,
        offset: offset.ok_or_else(|| bad("no offset"))?,
        size: size.ok_or_else(|| bad("no size"))?,
        signed,
    })
}

fn symbolic_table(print_fmt: &str, field: &str) -> BTreeMap<i64, String> {
    let mut table = BTreeMap::new();
    let needle = format!("__print_symbolic(REC->{field},");
    let Some(start) = print_fmt.find(&needle) else {
        return table;
    };
    let mut rest = &print_fmt[start + needle.len()..];
    // Entries are `{ value, "NAME" }` until the closing parenthesis of the call.
    loop {
        let trimmed = rest.trim_start_matches([' ', ',']);
        let Some(body) = trimmed.strip_prefix('{') else {
            break;
        };
        let Some(close) = body.find('}') else {
            break;
        };
        let entry = &body[..close];
        rest = &body[close + 1..];
        let Some((value, name)) = entry.split_once(',') else {
            continue;
        };
        let name = name.trim().trim_matches('"');
        if let Some(v) = parse_c_int(value.trim()) {
            table.insert(v, name.to_string());
        }
    }
    table
}

fn parse_c_int(s: &str) -> Option<i64> {
    if let Some(hex) = s.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSS_STAT_6_18: &str = include_str!("testdata/6.18/rss_stat");
    const SEND_RESET_6_18: &str = include_str!("testdata/6.18/tcp_send_reset");
    const SEND_RESET_5_15: &str = include_str!("testdata/5.15/tcp_send_reset");
    const MARK_VICTIM_5_15: &str = include_str!("testdata/5.15/mark_victim");
    const MARK_VICTIM_6_18: &str = include_str!("testdata/6.18/mark_victim");

    #[test]
    fn parses_fields_with_offsets_sizes_and_sign() {
        let f = Format::parse(RSS_STAT_6_18).unwrap();
        assert_eq!(f.name, "rss_stat");
        let size = f.field("size").unwrap();
        assert_eq!((size.offset, size.size, size.signed), (24, 8, true));
        assert_eq!(f.offset("curr"), Some(12));
        assert_eq!(f.offset("nope"), None);
    }

    #[test]
    fn rss_member_names_come_from_print_fmt() {
        let f = Format::parse(RSS_STAT_6_18).unwrap();
        let names = f.symbols("member");
        assert_eq!(names.get(&0).map(String::as_str), Some("MM_FILEPAGES"));
        assert_eq!(names.get(&1).map(String::as_str), Some("MM_ANONPAGES"));
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn reset_reason_table_parsed_and_symbolic_state_keys_skipped() {
        let f = Format::parse(SEND_RESET_6_18).unwrap();
        let reasons = f.symbols("reason");
        assert_eq!(reasons.get(&1).map(String::as_str), Some("NO_SOCKET"));
        assert_eq!(reasons.get(&11).map(String::as_str), Some("TCP_ABORT_ON_CLOSE"));
        assert_eq!(reasons.get(&12).map(String::as_str), Some("TCP_ABORT_ON_LINGER"));
        // state keys are C symbols without numbers in the file
        assert!(f.symbols("state").is_empty());
        let saddr = f.field("saddr").unwrap();
        assert_eq!((saddr.offset, saddr.size, saddr.c_type.as_str()), (32, 28, "__u8[28]"));
    }

    #[test]
    fn older_tcp_send_reset_has_no_reason_and_reads_as_unknown() {
        let f = Format::parse(SEND_RESET_5_15).unwrap();
        assert!(f.field("reason").is_none());
        assert!(f.symbols("reason").is_empty());
        let data = vec![0u8; 128];
        assert_eq!(f.read_int(&data, "reason"), None);
        // the older layout still has the 4-tuple, at other offsets
        assert_eq!(f.field("sport").map(|f| f.offset), Some(28));
    }

    #[test]
    fn older_mark_victim_has_only_pid() {
        let f = Format::parse(MARK_VICTIM_5_15).unwrap();
        assert_eq!(f.offset("pid"), Some(8));
        assert!(f.field("total_vm").is_none());
        assert!(f.field("comm").is_none());
        let mut data = vec![0u8; 64];
        data[8..12].copy_from_slice(&4711i32.to_ne_bytes());
        assert_eq!(f.read_int(&data, "pid"), Some(4711));
        assert_eq!(f.read_u64(&data, "anon_rss"), None);
    }

    #[test]
    fn data_loc_string_is_read_from_its_offset() {
        let f = Format::parse(MARK_VICTIM_6_18).unwrap();
        let comm = f.field("comm").unwrap();
        assert!(comm.data_loc);
        let mut data = vec![0u8; 128];
        let text = b"workload\0";
        data[100..100 + text.len()].copy_from_slice(text);
        let loc: u32 = ((text.len() as u32) << 16) | 100;
        data[comm.offset..comm.offset + 4].copy_from_slice(&loc.to_ne_bytes());
        assert_eq!(f.read_str(&data, "comm").as_deref(), Some("workload"));
        let mut oom = vec![0u8; 128];
        oom[64..66].copy_from_slice(&(-1000i16).to_ne_bytes());
        assert_eq!(f.read_int(&oom, "oom_score_adj"), Some(-1000));
    }

    #[test]
    fn malformed_field_line_is_an_error_not_a_panic() {
        let err = Format::parse("name: x\n\tfield:int;\toffset:8;\n").unwrap_err();
        assert!(err.to_string().contains("malformed field line"), "{err}");
    }
}
