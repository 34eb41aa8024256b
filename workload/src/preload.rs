//! Every tensor a model needs, read at once by every core before the model is built.
//!
//! A model asks for its tensors one at a time while it builds its layers, so reading each
//! tensor only when asked leaves cores idle at every tensor's end. Here the model is built
//! twice: first over stand-ins (one zero broadcast to the asked shape: no memory) to learn
//! exactly which tensors it asks for and in which dtype, then, once they are all read by a
//! pool of threads working through the files in order, over the real tensors. Nothing the
//! model does not ask for is read, so the memory is what the lazy loader uses.
use std::{
    collections::HashMap,
    mem::MaybeUninit,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use candle_nn::var_builder::SimpleBackend;
use half::{bf16, f16};

use crate::weights::{fill, ReadSafetensors};

/// Largest piece of a tensor one thread reads at a time.
const JOB_BYTES: usize = 8 << 20;

/// Which tensors, in which dtype, a model asks for: recorded while it is built over
/// stand-ins.
pub struct Recording<'a> {
    reader: &'a ReadSafetensors,
    asked: Mutex<Vec<(String, DType)>>,
}

impl<'a> Recording<'a> {
    pub fn new(reader: &'a ReadSafetensors) -> Self {
        Recording { reader, asked: Mutex::new(Vec::new()) }
    }

    /// The tensors asked for, each (name, dtype) once, in the order first asked.
    pub fn asked(&self) -> Vec<(String, DType)> {
        let mut asked = self.asked.lock().map(|a| a.clone()).unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        asked.retain(|k| seen.insert(k.clone()));
        asked
    }

    fn stand_in(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let shape = self.reader.shape_of(name)?;
        if let Ok(mut asked) = self.asked.lock() {
            asked.push((name.to_string(), dtype));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(shape)
    }
}

impl SimpleBackend for Recording<'_> {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let stored = self.reader.shape_of(name)?;
        if stored != s {
            return Err(candle_core::Error::UnexpectedShape { msg: format!("shape mismatch for {name}"), expected: s, got: stored }.bt());
        }
        self.stand_in(name, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.stand_in(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.reader.contains_tensor(name)
    }
}

/// Tensors read ahead: the backend of the second build.
pub struct Preloaded {
    tensors: HashMap<(String, DType), Tensor>,
    /// For a tensor the first build did not ask for (a model that asks differently the
    /// second time): read then.
    reader: ReadSafetensors,
}

impl Preloaded {
    /// Reads every tensor in `asked` with `workers` threads, in pieces of at most
    /// `job_bytes`; `loaded` counts the bytes as they arrive.
    pub fn read(
        reader: ReadSafetensors,
        asked: &[(String, DType)],
        workers: usize,
        job_bytes: usize,
        loaded: &AtomicU64,
    ) -> candle_core::Result<Self> {
        let mut buffers = Vec::with_capacity(asked.len());
        for (name, dtype) in asked {
            buffers.push(Buffer::new(*dtype, reader.elements_of(name)?)?);
        }
        let mut jobs = Vec::new();
        for ((name, _), buffer) in asked.iter().zip(buffers.iter_mut()) {
            let loc = reader.locate(name)?;
            buffer.cut(loc.file, loc.dtype, loc.offset, job_bytes, &mut jobs);
        }
        // File order: neighbouring reads let the kernel's readahead run ahead of a cold cache.
        jobs.sort_by_key(|j| (j.file, j.offset));
        let queue = Mutex::new(jobs.into_iter().rev().collect::<Vec<_>>());
        let next = || queue.lock().ok().and_then(|mut q| q.pop());
        let work = || -> candle_core::Result<()> {
            while let Some(job) = next() {
                let bytes = job.bytes();
                if let Err(e) = reader.fill_job(job) {
                    // The others stop at their next piece.
                    if let Ok(mut q) = queue.lock() {
                        q.clear();
                    }
                    return Err(e);
                }
                loaded.fetch_add(bytes, Ordering::Relaxed);
            }
            Ok(())
        };
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..workers.max(1)).map(|_| s.spawn(work)).collect();
            let mut result = Ok(());
            for w in workers {
                let r = w.join().unwrap_or_else(|_| Err(candle_core::Error::Msg("a thread reading the weights panicked".into())));
                result = result.and(r);
            }
            result
        })?;
        let mut tensors = HashMap::with_capacity(asked.len());
        for ((name, dtype), buffer) in asked.iter().zip(buffers) {
            // SAFETY: every job of every buffer succeeded (an error returned above), and the
            // jobs of a buffer cover all its elements.
            let tensor = unsafe { buffer.into_tensor(reader.shape_of(name)?) }?;
            tensors.insert((name.clone(), *dtype), tensor);
        }
        Ok(Preloaded { tensors, reader })
    }

    fn tensor(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.tensors.get(&(name.to_string(), dtype)) {
            // Tensors share their storage: a tied weight asked twice is held once.
            Some(t) => Ok(t.clone()),
            None => self.reader.get_unchecked(name, dtype, dev),
        }
    }
}

impl SimpleBackend for Preloaded {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let tensor = self.tensor(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape { msg: format!("shape mismatch for {name}"), expected: s, got: tensor.shape().clone() }.bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.tensor(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.reader.contains_tensor(name)
    }
}

/// One tensor's storage being filled, in the dtype it was asked for.
enum Buffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    U8(Vec<u8>),
    U32(Vec<u32>),
    I64(Vec<i64>),
}

/// A piece of one buffer and where its elements lie in a file.
pub(crate) struct Job<'a> {
    pub(crate) file: usize,
    /// Byte offset of the piece's first stored element.
    pub(crate) offset: u64,
    pub(crate) stored: DType,
    pub(crate) into: Piece<'a>,
}

pub(crate) enum Piece<'a> {
    F32(&'a mut [MaybeUninit<f32>]),
    F16(&'a mut [MaybeUninit<f16>]),
    BF16(&'a mut [MaybeUninit<bf16>]),
    F64(&'a mut [MaybeUninit<f64>]),
    U8(&'a mut [MaybeUninit<u8>]),
    U32(&'a mut [MaybeUninit<u32>]),
    I64(&'a mut [MaybeUninit<i64>]),
}

impl Job<'_> {
    fn bytes(&self) -> u64 {
        (match &self.into {
            Piece::F32(p) => std::mem::size_of_val(*p),
            Piece::F16(p) => std::mem::size_of_val(*p),
            Piece::BF16(p) => std::mem::size_of_val(*p),
            Piece::F64(p) => std::mem::size_of_val(*p),
            Piece::U8(p) => std::mem::size_of_val(*p),
            Piece::U32(p) => std::mem::size_of_val(*p),
            Piece::I64(p) => std::mem::size_of_val(*p),
        }) as u64
    }
}

impl Buffer {
    fn new(dtype: DType, n: usize) -> candle_core::Result<Self> {
        fn alloc<T>(n: usize) -> Vec<T> {
            let mut v = Vec::with_capacity(n);
            crate::weights::advise_huge_pages(&mut v);
            v
        }
        Ok(match dtype {
            DType::F32 => Buffer::F32(alloc(n)),
            DType::F16 => Buffer::F16(alloc(n)),
            DType::BF16 => Buffer::BF16(alloc(n)),
            DType::F64 => Buffer::F64(alloc(n)),
            DType::U8 => Buffer::U8(alloc(n)),
            DType::U32 => Buffer::U32(alloc(n)),
            DType::I64 => Buffer::I64(alloc(n)),
            other => return Err(candle_core::Error::Msg(format!("loading as {other:?} is not supported"))),
        })
    }

    /// Cuts the buffer's spare capacity into jobs of at most JOB_BYTES.
    fn cut<'a>(&'a mut self, file: usize, stored: DType, offset: u64, job_bytes: usize, jobs: &mut Vec<Job<'a>>) {
        fn pieces<'a, T>(
            v: &'a mut Vec<T>,
            file: usize,
            stored: DType,
            offset: u64,
            job_bytes: usize,
            wrap: fn(&'a mut [MaybeUninit<T>]) -> Piece<'a>,
            jobs: &mut Vec<Job<'a>>,
        ) {
            let n = v.capacity();
            let per = (job_bytes / std::mem::size_of::<T>()).max(1);
            for (i, piece) in v.spare_capacity_mut()[..n].chunks_mut(per).enumerate() {
                let at = offset + (i * per * stored.size_in_bytes()) as u64;
                jobs.push(Job { file, offset: at, stored, into: wrap(piece) });
            }
        }
        match self {
            Buffer::F32(v) => pieces(v, file, stored, offset, job_bytes, Piece::F32, jobs),
            Buffer::F16(v) => pieces(v, file, stored, offset, job_bytes, Piece::F16, jobs),
            Buffer::BF16(v) => pieces(v, file, stored, offset, job_bytes, Piece::BF16, jobs),
            Buffer::F64(v) => pieces(v, file, stored, offset, job_bytes, Piece::F64, jobs),
            Buffer::U8(v) => pieces(v, file, stored, offset, job_bytes, Piece::U8, jobs),
            Buffer::U32(v) => pieces(v, file, stored, offset, job_bytes, Piece::U32, jobs),
            Buffer::I64(v) => pieces(v, file, stored, offset, job_bytes, Piece::I64, jobs),
        }
    }

    /// # Safety
    /// Every element of the capacity has been written.
    unsafe fn into_tensor(self, shape: Shape) -> candle_core::Result<Tensor> {
        unsafe fn done<T: WithDType>(mut v: Vec<T>, shape: Shape) -> candle_core::Result<Tensor> {
            // SAFETY: the caller's promise.
            unsafe { v.set_len(v.capacity()) };
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        // SAFETY: passed on from the caller.
        unsafe {
            match self {
                Buffer::F32(v) => done(v, shape),
                Buffer::F16(v) => done(v, shape),
                Buffer::BF16(v) => done(v, shape),
                Buffer::F64(v) => done(v, shape),
                Buffer::U8(v) => done(v, shape),
                Buffer::U32(v) => done(v, shape),
                Buffer::I64(v) => done(v, shape),
            }
        }
    }
}

/// Fills `into` from `file` at `offset`, stored as `stored`.
pub(crate) fn fill_piece(file: &std::fs::File, offset: u64, stored: DType, into: Piece<'_>) -> std::io::Result<()> {
    fn as_stored<T: WithDType>(file: &std::fs::File, offset: u64, stored: DType, into: &mut [MaybeUninit<T>]) -> std::io::Result<()> {
        match stored {
            DType::F32 => fill::<f32, T>(file, offset, 0, into),
            DType::F16 => fill::<f16, T>(file, offset, 0, into),
            DType::BF16 => fill::<bf16, T>(file, offset, 0, into),
            DType::F64 => fill::<f64, T>(file, offset, 0, into),
            DType::U8 => fill::<u8, T>(file, offset, 0, into),
            DType::U32 => fill::<u32, T>(file, offset, 0, into),
            DType::I64 => fill::<i64, T>(file, offset, 0, into),
            other => Err(std::io::Error::other(format!("stored dtype {other:?} is not supported"))),
        }
    }
    match into {
        Piece::F32(p) => as_stored(file, offset, stored, p),
        Piece::F16(p) => as_stored(file, offset, stored, p),
        Piece::BF16(p) => as_stored(file, offset, stored, p),
        Piece::F64(p) => as_stored(file, offset, stored, p),
        Piece::U8(p) => as_stored(file, offset, stored, p),
        Piece::U32(p) => as_stored(file, offset, stored, p),
        Piece::I64(p) => as_stored(file, offset, stored, p),
    }
}

/// Builds a model by `build` the lean, parallel way: over stand-ins first, then over its
/// tensors read by `workers` threads.
pub fn build<M>(
    reader: ReadSafetensors,
    dtype: DType,
    workers: usize,
    loaded: Arc<AtomicU64>,
    build: impl Fn(candle_nn::VarBuilder<'_>) -> candle_core::Result<M>,
) -> candle_core::Result<M> {
    let asked = {
        let recording = Recording::new(&reader);
        let vb = candle_nn::VarBuilder::from_backend(Box::new(RecordingRef(&recording)), dtype, Device::Cpu);
        drop(build(vb)?);
        recording.asked()
    };
    let preloaded = Preloaded::read(reader, &asked, workers, JOB_BYTES, &loaded)?;
    build(candle_nn::VarBuilder::from_backend(Box::new(preloaded), dtype, Device::Cpu))
}

/// A borrowed recording as a backend (the var builder wants it boxed).
struct RecordingRef<'a>(&'a Recording<'a>);

impl SimpleBackend for RecordingRef<'_> {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, tensors: &[(&str, &Tensor)]) {
        let map: HashMap<String, Tensor> = tensors.iter().map(|(n, t)| (n.to_string(), (*t).clone())).collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    /// A "model": three tensors, one asked twice (tied), one asked in another dtype.
    fn model(vb: candle_nn::VarBuilder<'_>) -> candle_core::Result<Vec<Tensor>> {
        Ok(vec![
            vb.get((300, 70), "big")?,
            vb.get_with_hints_dtype((300, 70), "big", candle_nn::Init::Const(0.0), DType::F32)?,
            vb.get(7, "small")?,
            vb.get_with_hints_dtype(50, "half", candle_nn::Init::Const(0.0), DType::F32)?,
        ])
    }

    #[test]
    fn builds_the_model_from_exactly_the_tensors_it_asks_for_read_by_several_threads() {
        let dir = tempfile::tempdir().unwrap();
        let big = Tensor::arange(0f32, 21000.0, &Device::Cpu).unwrap().affine(0.25, 3.0).unwrap().reshape((300, 70)).unwrap();
        let small = Tensor::arange(0f32, 7.0, &Device::Cpu).unwrap();
        let half = Tensor::arange(0f32, 50.0, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        let unused = Tensor::zeros(100_000, DType::F32, &Device::Cpu).unwrap();
        let one = dir.path().join("a.safetensors");
        let two = dir.path().join("b.safetensors");
        write(&one, &[("big", &big), ("unused", &unused)]);
        write(&two, &[("small", &small), ("half", &half)]);
        let paths = vec![one, two];

        let reader = ReadSafetensors::open(&paths).unwrap();
        let recording = Recording::new(&reader);
        model(candle_nn::VarBuilder::from_backend(Box::new(RecordingRef(&recording)), DType::F32, Device::Cpu)).unwrap();
        let asked = recording.asked();
        let names: Vec<&str> = asked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["big", "small", "half"], "each tensor once, the unused one never");

        let loaded = Arc::new(AtomicU64::new(0));
        let got = build(ReadSafetensors::open(&paths).unwrap(), DType::F32, 3, loaded.clone(), model).unwrap();
        let want = model(candle_nn::VarBuilder::from_backend(Box::new(ReadSafetensors::open(&paths).unwrap()), DType::F32, Device::Cpu)).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.dims(), w.dims());
            assert_eq!(g.flatten_all().unwrap().to_vec1::<f32>().unwrap(), w.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
        assert_eq!(loaded.load(Ordering::Relaxed), (21000 + 7 + 50) * 4, "bytes counted once each, the unused tensor not read");

        // Pieces far smaller than a tensor, uneven, converted across piece boundaries.
        for job_bytes in [1, 1000, 4 << 10] {
            let pre = Preloaded::read(ReadSafetensors::open(&paths).unwrap(), &asked, 3, job_bytes, &AtomicU64::new(0)).unwrap();
            for (name, dtype) in &asked {
                let g = pre.tensor(name, *dtype, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                let w = reader.get_unchecked(name, *dtype, &Device::Cpu).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap();
                assert_eq!(g.to_vec1::<f32>().unwrap(), w.to_vec1::<f32>().unwrap(), "{name} in pieces of {job_bytes} bytes");
            }
        }
    }

    #[test]
    fn a_shape_the_file_does_not_have_fails_in_the_first_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        write(&path, &[("w", &Tensor::zeros((4, 4), DType::F32, &Device::Cpu).unwrap())]);
        let e = build(ReadSafetensors::open(&[path]).unwrap(), DType::F32, 2, Arc::new(AtomicU64::new(0)), |vb| vb.get((4, 5), "w"))
            .unwrap_err();
        assert!(e.to_string().contains("shape mismatch for w"), "{e}");
    }

    #[test]
    fn a_file_cut_short_fails_the_load_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.safetensors");
        write(&path, &[("w", &Tensor::zeros(1 << 20, DType::F32, &Device::Cpu).unwrap())]);
        let reader = ReadSafetensors::open(std::slice::from_ref(&path)).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len / 2).unwrap();
        let e = build(reader, DType::F32, 2, Arc::new(AtomicU64::new(0)), |vb| vb.get(1 << 20, "w")).unwrap_err();
        assert!(e.to_string().contains("cut.safetensors"), "{e}");
    }
}
