//! A safetensors file's header: an 8-byte little-endian length, then that much JSON
//! describing each tensor's dtype, shape and byte range.
//!
//! Read with two plain reads and checked against the file's length, so a truncated
//! download is caught without touching the data (the `safetensors` crate's own reader
//! wants the whole file in memory, or mapped).
use std::{fs::File, io::Read as _, path::Path};

use safetensors::{tensor::Metadata, Dtype};

use super::error::CheckpointError;

/// Largest header the safetensors format allows.
pub const MAX_HEADER: u64 = 100_000_000;

/// One tensor as the header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorHeader {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Bytes it takes in the file (its byte range).
    pub bytes: u64,
}

impl TensorHeader {
    /// Elements over all dimensions (1 for a scalar).
    pub fn elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// The header length in the first 8 bytes of a `file_len`-byte file; the reason when it
/// cannot be one.
pub fn header_len(prefix: [u8; 8], file_len: u64) -> Result<u64, String> {
    let n = u64::from_le_bytes(prefix);
    if n > MAX_HEADER || 8 + n > file_len {
        return Err(format!("header length {n} does not fit a {file_len}-byte file"));
    }
    Ok(n)
}

/// The header's JSON, checked (the `safetensors` crate checks that the byte ranges are
/// contiguous and match each dtype and shape; this checks they end where the file does).
pub fn parse_header(json: &[u8], file_len: u64) -> Result<Metadata, String> {
    let meta: Metadata = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let expected = 8 + json.len() as u64 + meta.data_len() as u64;
    if expected != file_len {
        return Err(format!("the header describes {expected} bytes but the file has {file_len} (truncated?)"));
    }
    Ok(meta)
}

/// The header of the safetensors file at `path`.
pub fn read_header(path: &Path) -> Result<Metadata, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.to_path_buf(), reason };
    let io = CheckpointError::io;
    let mut f = File::open(path).map_err(io(path))?;
    let file_len = f.metadata().map_err(io(path))?.len();
    if file_len < 8 {
        return Err(corrupt(format!("{file_len} bytes: too short for a header")));
    }
    let mut prefix = [0u8; 8];
    f.read_exact(&mut prefix).map_err(io(path))?;
    let n = header_len(prefix, file_len).map_err(corrupt)?;
    let mut json = vec![0u8; n as usize];
    f.read_exact(&mut json).map_err(io(path))?;
    parse_header(&json, file_len).map_err(corrupt)
}

/// The tensors of the safetensors file at `path`, sorted by name.
pub fn read_tensors(path: &Path) -> Result<Vec<TensorHeader>, CheckpointError> {
    let meta = read_header(path)?;
    let mut tensors: Vec<TensorHeader> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorHeader {
            name,
            dtype: info.dtype,
            shape: info.shape.clone(),
            bytes: (info.data_offsets.1 - info.data_offsets.0) as u64,
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use safetensors::tensor::TensorView;

    use super::*;

    /// Writes a safetensors file with zero-filled tensors of `(name, dtype, shape)`.
    fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, &[usize])]) {
        let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, d, s)| (n.to_string(), *d, s.to_vec(), vec![0u8; s.iter().product::<usize>() * d.bitsize() / 8]))
            .collect();
        let views: Vec<(String, TensorView<'_>)> =
            data.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    #[test]
    fn tensors_are_listed_from_the_header_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("b", Dtype::BF16, &[10]), ("a", Dtype::F32, &[4, 8]), ("s", Dtype::F32, &[])]);
        let tensors = read_tensors(&path).unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "s"]);
        assert_eq!(tensors[0], TensorHeader { name: "a".into(), dtype: Dtype::F32, shape: vec![4, 8], bytes: 128 });
        assert_eq!((tensors[1].dtype, tensors[1].elements(), tensors[1].bytes), (Dtype::BF16, 10, 20));
        assert_eq!((tensors[2].elements(), tensors[2].bytes), (1, 4));
    }

    #[test]
    fn a_truncated_or_foreign_file_is_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        write_safetensors(&path, &[("a", Dtype::F32, &[1000])]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
        let err = read_header(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&path.display().to_string()) && text.contains("truncated"), "{text}");
        for (content, reason) in [
            (&b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage"[..], "does not fit a 15-byte file"),
            (b"abc", "3 bytes: too short for a header"),
            (b"\x04\x00\x00\x00\x00\x00\x00\x00nope", "expected ident"),
        ] {
            std::fs::write(&path, content).unwrap();
            match read_header(&path) {
                Err(CheckpointError::Corrupt { reason: r, .. }) => assert!(r.contains(reason), "{r}"),
                other => panic!("{content:?}: {other:?}"),
            }
        }
        let missing = dir.path().join("gone.safetensors");
        assert!(matches!(read_tensors(&missing), Err(CheckpointError::Io { .. })));
    }

    #[test]
    fn header_checks_on_text() {
        assert_eq!(header_len(2u64.to_le_bytes(), 10), Ok(2));
        assert!(header_len(3u64.to_le_bytes(), 10).is_err());
        assert!(header_len((MAX_HEADER + 1).to_le_bytes(), u64::MAX).is_err());
        let json = br#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#;
        let file_len = 8 + json.len() as u64 + 8;
        assert_eq!(parse_header(json, file_len).unwrap().data_len(), 8);
        assert!(parse_header(json, file_len + 1).unwrap_err().contains("truncated"));
        // Byte ranges that do not match the dtype and shape.
        let bad = br#"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#;
        assert!(parse_header(bad, 8 + bad.len() as u64 + 8).is_err());
    }
}
