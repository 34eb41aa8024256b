//! Safetensors weights read straight into their final buffers: the lean loader.
//!
//! candle's own loader maps each file and copies every tensor out of the mapping, so while
//! a model loads the process holds the mapped file pages (resident, counted against its
//! memory cgroup) and the copy: about twice the weights. Here each tensor is read with
//! `pread` into the buffer the tensor keeps; the file goes through the page cache, which
//! the kernel can drop, and is never mapped. A tensor stored in another dtype is read in
//! bounded chunks and converted on the way. Peak memory: the weights at their target
//! dtype plus one chunk per thread. A large tensor is read by every core at once, each
//! its own range, into huge pages where the kernel allows them: from a warm page cache
//! that is several times what one thread copying 4 KiB pages achieves.
use std::{collections::HashMap, fs::File, os::unix::fs::FileExt as _, path::Path};

use candle_core::{DType, Device, Shape, Tensor, WithDType};
use half::{bf16, f16};

/// Bytes read at a time when a tensor is converted.
const CHUNK_BYTES: usize = 8 << 20;

/// Where one tensor lies.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) file: usize,
    pub(crate) dtype: DType,
    shape: Vec<usize>,
    /// Absolute offset of its first byte in the file.
    pub(crate) offset: u64,
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

    /// Where `name` lies, its byte range checked against its shape.
    pub(crate) fn locate(&self, name: &str) -> candle_core::Result<&Located> {
        let loc = self.tensors.get(name).ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.to_string() }.bt())?;
        if (loc.shape.iter().product::<usize>() * loc.dtype.size_in_bytes()) as u64 != loc.bytes {
            let path = &self.files[loc.file].1;
            return Err(candle_core::Error::Msg(format!("{}: the byte range of {name} does not match its shape", path.display())));
        }
        Ok(loc)
    }

    pub(crate) fn shape_of(&self, name: &str) -> candle_core::Result<Shape> {
        Ok(Shape::from(self.locate(name)?.shape.clone()))
    }

    pub(crate) fn elements_of(&self, name: &str) -> candle_core::Result<usize> {
        Ok(self.locate(name)?.shape.iter().product())
    }

    /// Reads one piece of a preload (see crate::preload).
    pub(crate) fn fill_job(&self, job: crate::preload::Job<'_>) -> candle_core::Result<()> {
        let (file, path) = &self.files[job.file];
        crate::preload::fill_piece(file, job.offset, job.stored, job.into).map_err(|e| io_error(path, e))
    }

    fn load(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let loc = self.locate(name)?;
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
        self.read_split::<S, T>(loc, workers(), MIN_PART_BYTES)
    }

    /// As `read`, the tensor cut into up to `workers` ranges of at least `min_part_bytes`
    /// read side by side: one core copying from the page cache reads about 2-3 GB/s, the
    /// page cache itself gives more.
    fn read_split<S: WithDType, T: WithDType>(&self, loc: &Located, workers: usize, min_part_bytes: usize) -> candle_core::Result<Vec<T>> {
        let (file, path) = &self.files[loc.file];
        let n = loc.shape.iter().product::<usize>();
        if (n * std::mem::size_of::<S>()) as u64 != loc.bytes {
            return Err(candle_core::Error::Msg(format!("{}: a tensor's byte range does not match its shape", path.display())));
        }
        let mut out: Vec<T> = Vec::with_capacity(n);
        advise_huge_pages(&mut out);
        let parts = (n * std::mem::size_of::<T>() / min_part_bytes.max(1)).clamp(1, workers.max(1));
        let per_part = n.div_ceil(parts).max(1);
        let spare = &mut out.spare_capacity_mut()[..n];
        let result: std::io::Result<()> = std::thread::scope(|s| {
            let mut ranges = spare.chunks_mut(per_part).enumerate();
            let first = ranges.next();
            let others: Vec<_> = ranges
                .map(|(i, part)| s.spawn(move || fill::<S, T>(file, loc.offset, i * per_part, part)))
                .collect();
            let mut result = match first {
                Some((_, part)) => fill::<S, T>(file, loc.offset, 0, part),
                None => Ok(()),
            };
            for h in others {
                let r = h.join().unwrap_or_else(|_| Err(std::io::Error::other("a reading thread panicked")));
                result = result.and(r);
            }
            result
        });
        result.map_err(|e| io_error(path, e))?;
        // SAFETY: every one of the n elements was written by fill, or the error returned above.
        unsafe { out.set_len(n) };
        Ok(out)
    }
}

/// Tensors smaller than twice this are read by one thread: below it, starting a thread
/// costs more than it saves.
const MIN_PART_BYTES: usize = 1 << 20;

/// Threads one tensor is read with: the cores this process may run on.
fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Asks for transparent huge pages behind a large buffer about to be filled: one fault per
/// 2 MiB instead of per 4 KiB halves the cost of reading from the page cache. Where the
/// kernel has them off, nothing changes. Not in a VM whose balloon reports free pages to
/// its host (see [`host_reclaims_free_huge_blocks`]).
pub(crate) fn advise_huge_pages<T>(v: &mut Vec<T>) {
    const HUGE: usize = 2 << 20;
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *SKIP.get_or_init(|| host_reclaims_free_huge_blocks(Path::new("/sys/bus/virtio/drivers/virtio_balloon"))) {
        return;
    }
    let start = v.as_mut_ptr() as usize;
    let end = start + v.capacity() * std::mem::size_of::<T>();
    let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if to > from {
        // SAFETY: the range lies inside the vector's own allocation; the advice changes how
        // its pages are backed, never their contents.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

/// Whether a virtio balloon under `driver` (its sysfs folder) negotiated free page
/// reporting (feature bit 5, VIRTIO_BALLOON_F_REPORTING). The guest then hands free blocks
/// of 2 MiB and more back to the hypervisor, and a huge page comes from exactly such a
/// block: every first touch of it faults into the host. Measured on such a VM (Firecracker,
/// 2 cores): a warm 2.46 GB NLLB load took 1.88-5.29 s with huge pages and 1.17-1.52 s
/// without, in alternating runs.
fn host_reclaims_free_huge_blocks(driver: &Path) -> bool {
    const REPORTING: usize = 5;
    std::fs::read_dir(driver)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("features")).ok())
        .any(|bits| bits.as_bytes().get(REPORTING) == Some(&b'1'))
}

/// Writes elements `first..first + part.len()` of a tensor stored as `S` at `offset` into
/// `part` as `T`, converting in chunks of CHUNK_BYTES.
pub(crate) fn fill<S: WithDType, T: WithDType>(file: &File, offset: u64, first: usize, part: &mut [std::mem::MaybeUninit<T>]) -> std::io::Result<()> {
    let at = offset + (first * std::mem::size_of::<S>()) as u64;
    if S::DTYPE == T::DTYPE {
        // SAFETY: part is plain numeric elements; read_exact_at writes every byte or fails,
        // and the caller only marks them initialised when every part succeeded.
        let bytes = unsafe { std::slice::from_raw_parts_mut(part.as_mut_ptr() as *mut u8, std::mem::size_of_val(part)) };
        fault_in(bytes);
        return file.read_exact_at(bytes, at);
    }
    let per_chunk = (CHUNK_BYTES / std::mem::size_of::<S>()).max(1);
    let mut chunk: Vec<S> = Vec::with_capacity(per_chunk.min(part.len()));
    for (i, dst) in part.chunks_mut(per_chunk).enumerate() {
        let k = dst.len();
        chunk.clear();
        // SAFETY: as above, for k elements of the chunk buffer, set only once read.
        unsafe {
            let bytes = std::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, k * std::mem::size_of::<S>());
            file.read_exact_at(bytes, at + (i * per_chunk * std::mem::size_of::<S>()) as u64)?;
            chunk.set_len(k);
        }
        for (d, &s) in dst.iter_mut().zip(&chunk) {
            d.write(T::from_f64(s.to_f64()));
        }
    }
    Ok(())
}

/// Maps every page of `bytes` from user space (a write per page) before the kernel copies
/// into it. A page first touched inside `pread`'s copy faults in kernel mode, which takes
/// the process's whole mmap lock rather than the mapping's own: the loading threads then
/// queue behind each other and behind any mmap or mprotect of the allocator (perf of a
/// warm load: rwsem wake-ups under `pread` at the top). Faulted from user space, each
/// thread takes only its mapping's lock.
fn fault_in(bytes: &mut [u8]) {
    const PAGE: usize = 4096;
    let p = bytes.as_mut_ptr();
    // A write at every 4096th byte and at the last one touches every page of the range.
    for i in (0..bytes.len()).step_by(PAGE).chain(bytes.len().checked_sub(1)) {
        // SAFETY: i < len; volatile so the write is not dropped before the read overwrites it.
        unsafe { std::ptr::write_volatile(p.add(i), 0) };
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

    #[test]
    fn free_page_reporting_is_read_from_the_balloons_feature_bits() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!host_reclaims_free_huge_blocks(&dir.path().join("absent")));
        let dev = dir.path().join("virtio0");
        std::fs::create_dir(&dev).unwrap();
        std::fs::write(dev.join("features"), "0110000100000000\n").unwrap();
        assert!(!host_reclaims_free_huge_blocks(dir.path()), "bit 5 clear");
        // This VM's balloon, as sysfs shows it.
        std::fs::write(dev.join("features"), "01100101000000000000000000000000100000000000\n").unwrap();
        assert!(host_reclaims_free_huge_blocks(dir.path()));
        // The kernel's own answer where a balloon is bound; none is no reporting.
        let sys = Path::new("/sys/bus/virtio/drivers/virtio_balloon");
        let bound: Vec<_> = std::fs::read_dir(sys).into_iter().flatten().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("virtio")).collect();
        if bound.is_empty() {
            assert!(!host_reclaims_free_huge_blocks(sys));
        }
    }

    #[test]
    fn fault_in_writes_into_every_page_of_an_unaligned_range() {
        const PAGE: usize = 4096;
        let mut buf = vec![0xffu8; 5 * PAGE];
        let start = PAGE - 3 + (PAGE - buf.as_ptr() as usize % PAGE) % PAGE;
        for len in [1, 3, 4, PAGE, PAGE + 1, 3 * PAGE - 7] {
            buf.fill(0xff);
            let range = &mut buf[start..start + len];
            fault_in(range);
            let first_page = range.as_ptr() as usize / PAGE;
            let pages: std::collections::BTreeSet<usize> =
                range.iter().enumerate().filter(|(_, b)| **b == 0).map(|(i, _)| (range.as_ptr() as usize + i) / PAGE).collect();
            let spanned = (range.as_ptr() as usize + len - 1) / PAGE - first_page + 1;
            assert_eq!(pages.len(), spanned, "len {len}: written pages {pages:?}");
            assert!(buf[..start].iter().chain(&buf[start + len..]).all(|b| *b == 0xff), "len {len}: wrote outside the range");
        }
    }

    #[test]
    fn a_tensor_read_in_parts_by_several_threads_is_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        // 6000 elements: uneven parts for 7 workers, and conversion chunks inside each part.
        let a = Tensor::arange(0f32, 6000.0, &Device::Cpu).unwrap().affine(1.5, -7.0).unwrap();
        let b = a.to_dtype(DType::BF16).unwrap();
        let path = dir.path().join("m.safetensors");
        write(&path, &[("a", &a), ("b", &b)]);
        let ours = ReadSafetensors::open(&[path]).unwrap();
        let want_a = a.to_vec1::<f32>().unwrap();
        let want_b = b.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        for workers in [1, 2, 7] {
            for min_part in [1, 100, 1 << 30] {
                let got = ours.read_split::<f32, f32>(&ours.tensors["a"], workers, min_part).unwrap();
                assert_eq!(got, want_a, "f32 with {workers} workers, parts of at least {min_part} bytes");
                let got = ours.read_split::<bf16, f32>(&ours.tensors["b"], workers, min_part).unwrap();
                assert_eq!(got, want_b, "bf16 to f32 with {workers} workers, parts of at least {min_part} bytes");
            }
        }
    }

    #[test]
    fn a_file_cut_short_is_an_error_naming_it_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::arange(0f32, 4096.0, &Device::Cpu).unwrap();
        let path = dir.path().join("m.safetensors");
        write(&path, &[("a", &a)]);
        let ours = ReadSafetensors::open(std::slice::from_ref(&path)).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 100).unwrap();
        let e = ours.read_split::<f32, f32>(&ours.tensors["a"], 4, 1).unwrap_err();
        assert!(e.to_string().contains("m.safetensors"), "{e}");
    }
}
