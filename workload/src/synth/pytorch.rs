//! `pytorch_model.bin` as `torch.save` writes it (the zip format, PyTorch ≥ 1.6): a pickle
//! of an ordered dict from names to `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, ...)`, each storage a persistent id whose bytes are the zip entry
//! `data/N`, stored uncompressed. Written by hand so the loading path for such
//! checkpoints runs at any size without torch.
use std::io::Write as _;
use std::path::Path;

use zip::write::SimpleFileOptions;

use super::StorageDtype;

/// One tensor to write: its name, dtype, shape and little-endian bytes.
pub struct PthTensor<'a> {
    pub name: &'a str,
    pub dtype: StorageDtype,
    pub shape: &'a [usize],
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// The largest element count, dimension or stride written (what BININT holds).
const MAX_INT: usize = i32::MAX as usize;

/// Writes `tensors` (produced one at a time, so that only one is in memory) to `path`.
/// A tensor of more than 2^31 - 1 elements is refused, naming it: candle reads sizes as
/// 32-bit pickle integers only (safetensors has no such limit).
pub fn write<'a>(path: &Path, tensors: impl Iterator<Item = PthTensor<'a>>) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    // torch aligns each record to 64 bytes; readers that map the file rely on it.
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64).large_file(true);
    let mut pickle = Pickle::new();
    pickle.begin_dict();
    for (i, t) in tensors.enumerate() {
        let elements: usize = t.shape.iter().product();
        if elements > MAX_INT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("tensor {} has {elements} elements, more than pytorch_model.bin as candle reads it holds (2^31 - 1): use safetensors", t.name),
            ));
        }
        zip.start_file(format!("pytorch_model/data/{i}"), stored).map_err(zip_error)?;
        zip.write_all(&t.data)?;
        pickle.tensor(t.name, t.dtype, &i.to_string(), t.shape);
    }
    pickle.end_dict();
    zip.start_file("pytorch_model/data.pkl", stored).map_err(zip_error)?;
    zip.write_all(&pickle.out)?;
    zip.start_file("pytorch_model/version", stored).map_err(zip_error)?;
    zip.write_all(b"3\n")?;
    zip.start_file("pytorch_model/byteorder", stored).map_err(zip_error)?;
    zip.write_all(b"little")?;
    zip.finish().map_err(zip_error)?.flush()
}

fn zip_error(e: zip::result::ZipError) -> std::io::Error {
    std::io::Error::other(e)
}

/// The pickle opcodes (protocol 2) that `torch.save` emits for a state dict.
struct Pickle {
    out: Vec<u8>,
}

impl Pickle {
    fn new() -> Self {
        Pickle { out: vec![0x80, 2] }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn string(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// BININT: torch writes larger numbers as LONG1, which candle's reader does not take
    /// for sizes, strides or offsets; [`write`] refuses such tensors first.
    fn int(&mut self, v: usize) {
        debug_assert!(v <= MAX_INT);
        self.out.push(b'J');
        self.out.extend_from_slice(&(v as i32).to_le_bytes());
    }

    fn tuple(&mut self, items: &[usize]) {
        self.out.push(b'(');
        for &i in items {
            self.int(i);
        }
        self.out.push(b't');
    }

    /// An empty dict, as torch writes a state dict's top level, then MARK for its items.
    fn begin_dict(&mut self) {
        self.out.extend_from_slice(b"}(");
    }

    fn end_dict(&mut self) {
        self.out.extend_from_slice(b"u.");
    }

    /// `name: _rebuild_tensor_v2(storage key, 0, shape, contiguous strides, False, OrderedDict())`.
    fn tensor(&mut self, name: &str, dtype: StorageDtype, key: &str, shape: &[usize]) {
        self.string(name);
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        // The persistent id ('storage', torch.XStorage, key, 'cpu', numel).
        self.out.push(b'(');
        self.string("storage");
        self.global("torch", storage_class(dtype));
        self.string(key);
        self.string("cpu");
        self.int(shape.iter().product());
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        self.tuple(shape);
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        self.tuple(&strides);
        self.out.push(0x89); // NEWFALSE: requires_grad
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R"); // backward hooks
        self.out.extend_from_slice(b"tR");
    }
}

fn storage_class(dtype: StorageDtype) -> &'static str {
    match dtype {
        StorageDtype::F32 => "FloatStorage",
        StorageDtype::F16 => "HalfStorage",
        StorageDtype::Bf16 => "BFloat16Storage",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn candle_reads_back_what_was_written_names_dtypes_shapes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pytorch_model.bin");
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<half::f16> = (0..5).map(|i| half::f16::from_f32(i as f32)).collect();
        let tensors = vec![
            PthTensor { name: "enc.w", dtype: StorageDtype::F32, shape: &[3, 4], data: a.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into() },
            PthTensor { name: "enc.b", dtype: StorageDtype::F16, shape: &[5], data: b.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>().into() },
        ];
        write(&path, tensors.into_iter()).unwrap();
        let infos = candle_core::pickle::read_pth_tensor_info(&path, false, None).unwrap();
        let mut names: Vec<(String, DType, Vec<usize>)> = infos.iter().map(|i| (i.name.clone(), i.dtype, i.layout.dims().to_vec())).collect();
        names.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(names, [("enc.b".to_string(), DType::F16, vec![5]), ("enc.w".to_string(), DType::F32, vec![3, 4])]);
        let pth = candle_core::pickle::PthTensors::new(&path, None).unwrap();
        let w = pth.get("enc.w").unwrap().unwrap();
        assert_eq!(w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a);
        let bias = pth.get("enc.b").unwrap().unwrap();
        assert_eq!(bias.to_vec1::<half::f16>().unwrap(), b);
        let expected = Tensor::new(a.as_slice(), &Device::Cpu).unwrap().reshape((3, 4)).unwrap();
        assert_eq!(w.to_vec2::<f32>().unwrap(), expected.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn a_tensor_past_32_bit_sizes_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let shape = [1usize << 16, 1 << 15];
        let t = PthTensor { name: "model.huge", dtype: StorageDtype::Bf16, shape: &shape, data: std::borrow::Cow::Borrowed(&[]) };
        let e = write(&dir.path().join("pytorch_model.bin"), std::iter::once(t)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("model.huge") && e.to_string().contains("use safetensors"), "{e}");
    }
}
