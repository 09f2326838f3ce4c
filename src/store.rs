//! Safetensors files of f32 tensors with a JSON metadata map, written
//! atomically. Model files and run checkpoints are both stored this way.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Largest file we agree to read: a DCGAN checkpoint is a few MB, so anything
/// bigger is not ours and is refused before it is read into memory.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// What can go wrong reading or writing a tensor file. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Not a safetensors file, or a damaged one.
    #[error("{path}: not a valid safetensors file ({reason})")]
    Format { path: String, reason: String },
    /// A valid file whose content does not fit what we expect.
    #[error("{path}: {reason}")]
    Content { path: String, reason: String },
    /// A tensor operation failed while gathering data.
    #[error("{path}: {source}")]
    Tensor { path: String, source: candle_core::Error },
}

/// Writes `bytes` to `path` through a temporary file in the same folder and
/// a rename, so readers (and a crash) never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Encodes named tensors (converted to f32, in name order) and `metadata`.
pub fn encode(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>, StoreError> {
    let terr = |source| StoreError::Tensor { path: path.display().to_string(), source };
    let mut raw: BTreeMap<&str, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, t) in tensors {
        let v: Vec<f32> = t
            .flatten_all()
            .and_then(|f| f.to_dtype(candle_core::DType::F32))
            .and_then(|f| f.to_vec1())
            .map_err(terr)?;
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        raw.insert(name, (t.dims().to_vec(), bytes));
    }
    let views = raw
        .iter()
        .map(|(name, (shape, bytes))| TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.to_string(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Format { path: path.display().to_string(), reason: e.to_string() })?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| StoreError::Format { path: path.display().to_string(), reason: e.to_string() })
}

/// Reads a whole file after checking its size.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, StoreError> {
    let io = |source| StoreError::Io { path: path.display().to_string(), source };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(StoreError::Content {
            path: path.display().to_string(),
            reason: format!("file is {len} bytes, over the {MAX_FILE_BYTES}-byte limit"),
        });
    }
    std::fs::read(path).map_err(io)
}

/// A parsed header: metadata plus each tensor's shape, before any tensor data
/// is copied.
pub struct Header {
    /// The string metadata map (empty when absent).
    pub metadata: HashMap<String, String>,
    /// Tensor name -> (dtype, shape).
    pub shapes: BTreeMap<String, (Dtype, Vec<usize>)>,
}

/// Parses the header of safetensors `bytes`; `source` names them in errors.
pub fn header(bytes: &[u8], source: &str) -> Result<Header, StoreError> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| StoreError::Format { path: source.to_string(), reason: e.to_string() })?;
    let shapes = meta.tensors().into_iter().map(|(n, info)| (n, (info.dtype, info.shape.clone()))).collect();
    Ok(Header { metadata: meta.metadata().clone().unwrap_or_default(), shapes })
}

/// Checks that the header holds exactly the `expected` f32 tensors with the
/// expected shapes, then copies them out. Nothing is allocated for a file
/// that does not match.
pub fn decode(
    bytes: &[u8],
    source: &str,
    expected: &[(String, Vec<usize>)],
    device: &candle_core::Device,
) -> Result<BTreeMap<String, Tensor>, StoreError> {
    let content = |reason: String| StoreError::Content { path: source.to_string(), reason };
    let head = header(bytes, source)?;
    for (name, shape) in expected {
        match head.shapes.get(name) {
            None => return Err(content(format!("missing tensor `{name}`"))),
            Some((dtype, _)) if *dtype != Dtype::F32 => {
                return Err(content(format!("tensor `{name}` is {dtype:?}, expected F32")));
            }
            Some((_, s)) if s != shape => {
                return Err(content(format!("tensor `{name}` has shape {s:?}, expected {shape:?}")));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = head.shapes.keys().find(|n| !expected.iter().any(|(e, _)| e == *n)) {
        return Err(content(format!("unexpected tensor `{extra}`")));
    }
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| StoreError::Format { path: source.to_string(), reason: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (name, shape) in expected {
        let view = st.tensor(name).map_err(|e| content(e.to_string()))?;
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        if data.iter().any(|v| !v.is_finite()) {
            return Err(content(format!("tensor `{name}` holds NaN or infinite values")));
        }
        let t = Tensor::from_vec(data, shape.as_slice(), device)
            .map_err(|e| StoreError::Tensor { path: source.to_string(), source: e })?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}
