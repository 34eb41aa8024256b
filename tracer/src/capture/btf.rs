//! Just enough of a BTF reader to find a struct member's byte offset in the running
//! kernel (`task_struct.exit_code`), which no tracepoint exposes.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("not a BTF blob (bad magic)")]
    BadMagic,
    #[error("BTF blob is truncated")]
    Truncated,
    #[error("unknown BTF kind {0}")]
    UnknownKind(u32),
}

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Truncated)
}

fn name_at(strings: &[u8], off: u32) -> &[u8] {
    let rest = strings.get(off as usize..).unwrap_or(&[]);
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    &rest[..end]
}

/// Byte offset of `member` in `struct struct_name`, or `None` when either is absent.
pub fn member_offset(btf: &[u8], struct_name: &str, member: &str) -> Result<Option<u32>, BtfError> {
    if btf.len() < 24 || u16::from_le_bytes([btf[0], btf[1]]) != BTF_MAGIC {
        return Err(BtfError::BadMagic);
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let (type_off, type_len) = (u32_at(btf, 8)? as usize, u32_at(btf, 12)? as usize);
    let (str_off, str_len) = (u32_at(btf, 16)? as usize, u32_at(btf, 20)? as usize);
    let types = btf
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .ok_or(BtfError::Truncated)?;
    let strings = btf
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .ok_or(BtfError::Truncated)?;

    let mut at = 0;
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)?;
        let info = u32_at(types, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 == 1;
        at += 12;
        let extra = match kind {
            1 | 14 | 17 => 4,           // INT, VAR, DECL_TAG
            2 | 7..=12 | 16 | 18 => 0,  // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
            3 => 12,                    // ARRAY
            4 | 5 => vlen * 12,         // STRUCT, UNION
            6 | 13 => vlen * 8,         // ENUM, FUNC_PROTO
            15 | 19 => vlen * 12,       // DATASEC, ENUM64
            other => return Err(BtfError::UnknownKind(other)),
        };
        if kind == KIND_STRUCT && name_at(strings, name_off) == struct_name.as_bytes() {
            for m in 0..vlen {
                let base = at + m * 12;
                if name_at(strings, u32_at(types, base)?) == member.as_bytes() {
                    let raw = u32_at(types, base + 8)?;
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    return Ok(Some(bits / 8));
                }
            }
            return Ok(None);
        }
        at += extra;
    }
    Ok(None)
}

/// `task_struct.exit_code` of the running kernel, if it has BTF.
pub fn task_exit_code_offset() -> Option<u32> {
    let blob = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    member_offset(&blob, "task_struct", "exit_code").ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `int` and `struct s { int a; int b; }`.
    fn tiny_blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0".to_vec();
        let mut types = Vec::new();
        let push = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
        // [1] INT "int" size 4
        push(&mut types, 1);
        push(&mut types, 1 << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // [2] STRUCT "s" size 8, 2 members
        push(&mut types, 5);
        push(&mut types, (4 << 24) | 2);
        push(&mut types, 8);
        for (name, bit_off) in [(7u32, 0u32), (9, 32)] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, bit_off);
        }
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.push(1);
        blob.push(0);
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_member_offset_in_bytes() {
        let blob = tiny_blob();
        assert_eq!(member_offset(&blob, "s", "b").unwrap(), Some(4));
        assert_eq!(member_offset(&blob, "s", "zz").unwrap(), None);
        assert_eq!(member_offset(&blob, "t", "a").unwrap(), None);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(matches!(member_offset(b"hello world, not btf at all", "s", "a"), Err(BtfError::BadMagic)));
        let mut blob = tiny_blob();
        blob.truncate(30);
        assert!(member_offset(&blob, "s", "a").is_err());
    }

    #[test]
    fn running_kernel_task_struct_has_exit_code() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            eprintln!("no BTF on this kernel; the e2e exit tests cover the fallback");
            return;
        }
        let off = task_exit_code_offset().expect("exit_code in task_struct");
        assert!(off > 0 && off < 16384, "implausible offset {off}");
    }
}
