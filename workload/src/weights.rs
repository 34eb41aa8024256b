//! Safetensors weights read straight into their final buffers: the lean loader.
//!
//! candle's own loader maps each file and copies every tensor out of the mapping, so while
//! a model loads the process holds the mapped file pages (resident, counted against its
//! memory cgroup) and the copy: about twice the weights. Here each tensor is read with
//! `pread` into the buffer the tensor keeps; the file goes through the page cache, which
//! the kernel can drop, and is never mapped. A tensor stored in another dtype is read in
//! bounded chunks and converted on the way. Peak memory: the weights at their target
//! dtype plus one chunk.
use std::{collections::HashMap, fs::File, os::unix::fs::FileExt as _, path::Path};

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use half::{bf16, f16};

/// Bytes read at a time when a tensor is converted.
const CHUNK_BYTES: usize = 8 << 20;

/// Where one tensor lies.
#[derive(Debug, Clone)]
struct Located {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute offset of its first byte in the file.
    offset: u64,
    bytes: u64,
}

pub struct ReadSafetensors {
    files: Vec<(File, std::path::PathBuf)>,
    tensors: HashMap<String, Located>,
}

impl ReadSafetensors {
    /// Reads the headers of `paths` (shards of one model).
    pub fn open(paths: &[std::path::PathBuf]) -> candle_core::Result<Self> {
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let meta = host::checkpoint::read_header(path).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let file = File::open(path).map_err(|e| io_error(path, e))?;
            let len = file.metadata().map_err(|e| io_error(path, e))?.len();
            // The header was checked to end where the data does, and the data where the file does.
            let data_start = len - meta.data_len() as u64;
            for (name, info) in meta.tensors() {
                let dtype = crate::checkpoint::candle_dtype(info.dtype).ok_or_else(|| {
                    candle_core::Error::Msg(format!("{}: tensor {name} has dtype {:?}, which this service cannot load", path.display(), info.dtype))
                })?;
                let (from, to) = info.data_offsets;
                tensors.insert(
                    name,
                    Located { file: i, dtype, shape: info.shape.clone(), offset: data_start + from as u64, bytes: (to - from) as u64 },
                );
            }
            files.push((file, path.clone()));
        }
        Ok(ReadSafetensors { files, tensors })
    }

    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let loc = self.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        match dtype {
            DType::F32 => self.load_as::<f32>(loc, dev),
            DType::BF16 => self.load_as::<bf16>(loc, dev),
            DType::F16 => self.load_as::<f16>(loc, dev),
            DType::F64 => self.load_as::<f64>(loc, dev),
            DType::U8 => self.load_as::<u8>(loc, dev),
            DType::U32 => self.load_as::<u32>(loc, dev),
            DType::I64 => self.load_as::<i64>(loc, dev),
            other => Err(candle_core::Error::Msg(format!("tensor {name}: loading as {other:?} is not supported"))),
        }
    }

    fn load_as<T: WithDType>(&self, loc: &Located, dev: &Device) -> candle_core::Result<Tensor> {
        let data: Vec<T> = match loc.dtype {
            DType::F32 => self.read::<f32, T>(loc)?,
            DType::BF16 => self.read::<bf16, T>(loc)?,
            DType::F16 => self.read::<f16, T>(loc)?,
            DType::F64 => self.read::<f64, T>(loc)?,
            DType::U8 => self.read::<u8, T>(loc)?,
            DType::U32 => self.read::<u32, T>(loc)?,
            DType::I64 => self.read::<i64, T>(loc)?,
            other => return Err(candle_core::Error::Msg(format!("stored dtype {other:?} is not supported"))),
        };
        // On the CPU the vector becomes the tensor's storage, without a copy.
        Tensor::from_vec(data, Shape::from(loc.shape.clone()), dev)
    }

    /// The tensor's elements, stored as `S`, as a vector of `T`.
    fn read<S: WithDType, T: WithDType>(&self, loc: &Located) -> candle_core::Result<Vec<T>> {
        let (file, path) = &self.files[loc.file];
        let n = loc.shape.iter().product::<usize>();
        if (n * std::mem::size_of::<S>()) as u64 != loc.bytes {
            return Err(candle_core::Error::Msg(format!("{}: a tensor's byte range does not match its shape", path.display())));
        }
        if S::DTYPE == T::DTYPE {
            let mut out: Vec<T> = Vec::with_capacity(n);
            // SAFETY: the spare capacity is n elements of a plain numeric type; every byte
            // of it is written by read_exact_at before set_len, or the error returns first.
            unsafe {
                let bytes = std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>());
                file.read_exact_at(bytes, loc.offset).map_err(|e| io_error(path, e))?;
                out.set_len(n);
            }
            return Ok(out);
        }
        let mut out: Vec<T> = Vec::with_capacity(n);
        let per_chunk = (CHUNK_BYTES / std::mem::size_of::<S>()).max(1);
        let mut chunk: Vec<S> = Vec::with_capacity(per_chunk.min(n));
        let mut done = 0usize;
        while done < n {
            let k = per_chunk.min(n - done);
            chunk.clear();
            // SAFETY: as above, for k elements of the chunk buffer.
            unsafe {
                let bytes = std::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, k * std::mem::size_of::<S>());
                file.read_exact_at(bytes, loc.offset + (done * std::mem::size_of::<S>()) as u64).map_err(|e| io_error(path, e))?;
                chunk.set_len(k);
            }
            out.extend(chunk.iter().map(|&s| T::from_f64(s.to_f64())));
            done += k;
        }
        Ok(out)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> candle_core::Error {
    candle_core::Error::Msg(format!("reading {}: {e}", path.display()))
}

impl candle_nn::var_builder::SimpleBackend for ReadSafetensors {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.load(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape { msg: format!("shape mismatch for {name}"), expected: s, got: tensor.shape().clone() }.bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::var_builder::SimpleBackend as _;

    fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
        let map: HashMap<String, Tensor> = tensors.iter().map(|(n, t)| (n.to_string(), (*t).clone())).collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn reads_the_same_tensors_as_candles_mapped_loader_in_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::arange(0f32, 6000.0, &Device::Cpu).unwrap().reshape((60, 100)).unwrap().affine(0.37, -5.0).unwrap();
        let b = a.to_dtype(DType::BF16).unwrap();
        let c = Tensor::arange(0u32, 7, &Device::Cpu).unwrap();
        let one = dir.path().join("one.safetensors");
        let two = dir.path().join("two.safetensors");
        write(&one, &[("a", &a), ("c", &c)]);
        write(&two, &[("b", &b)]);
        let paths = vec![one, two];
        let ours = ReadSafetensors::open(&paths).unwrap();
        // SAFETY: test files, not written while mapped.
        let theirs = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&paths) }.unwrap();
        for name in ["a", "b", "c"] {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                if name == "c" && dtype != DType::F32 {
                    continue;
                }
                let got = ours.get_unchecked(name, dtype, &Device::Cpu).unwrap();
                let want = theirs.load(name, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
                assert_eq!(got.dims(), want.dims(), "{name} as {dtype:?}");
                assert_eq!(got.dtype(), dtype);
                let diff = (got.to_dtype(DType::F64).unwrap() - want.to_dtype(DType::F64).unwrap())
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap();
                assert_eq!(diff, 0.0, "{name} as {dtype:?}");
            }
        }
        assert!(ours.contains_tensor("b") && !ours.contains_tensor("nope"));
        let e = ours.get(Shape::from((2, 2)), "a", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("shape mismatch"), "{e}");
    }
}
