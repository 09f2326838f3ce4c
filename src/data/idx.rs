//! MNIST-style IDX files: `*-images-idx3-ubyte` (N x rows x cols bytes) with
//! optional `*-labels-idx1-ubyte` (N bytes), either possibly gzipped (`.gz`).
//! This is how MNIST, Fashion-MNIST (Debian's `dataset-fashion-mnist` puts it
//! in /usr/share/datasets/fashion-mnist) and KMNIST are distributed.
//!
//! A folder may hold several splits; the `train*` split is used when there is
//! one (GANs have no use for a held-out split, and "Fashion-MNIST" usually
//! means its 60,000 training images), otherwise every split, in name order.
//!
//! Headers are checked before anything is allocated: the byte count they
//! promise must be at most [`MAX_IDX_BYTES`] and, for plain files, equal to
//! what the file holds; gzipped data is read through a `take` limit into a
//! growing buffer, so memory follows the data that is really there, not the
//! header's claim.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use image::{DynamicImage, GrayImage};

use super::{DataError, Dataset, LoadOptions, par_convert, prepare, push_chw};

/// Largest pixel payload we accept from one IDX file (1 GiB; all of MNIST's
/// 60,000 training images are 47 MB).
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Class names for Fashion-MNIST, from zalandoresearch/fashion-mnist's README.
const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// One split: an image file and, when present, its label file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Split {
    pub images: PathBuf,
    pub labels: Option<PathBuf>,
}

/// The splits to load from `dir`, or `None` when it holds no IDX image file.
pub(super) fn find(dir: &Path) -> Result<Option<Vec<Split>>, DataError> {
    let io = |source| DataError::Io { path: dir.to_owned(), source };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.path().is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut splits: Vec<Split> = names
        .iter()
        .filter(|n| is_images_name(n))
        // "x.gz" beside an unpacked "x": the same split twice; keep the plain one.
        .filter(|n| !(n.ends_with(".gz") && names.contains(&n.trim_end_matches(".gz").to_owned())))
        .map(|n| Split { images: dir.join(n), labels: labels_for(dir, n, &names) })
        .collect();
    if splits.is_empty() {
        return Ok(None);
    }
    let is_train =
        |s: &Split| s.images.file_name().is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().starts_with("train"));
    if splits.iter().any(is_train) {
        splits.retain(is_train);
    }
    Ok(Some(splits))
}

/// Loads a single IDX image file given directly, with its label file when one
/// sits beside it.
pub(super) fn load_file(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !is_images_name(&name) {
        return Err(DataError::Options {
            spec: path.display().to_string(),
            reason: "a dataset is a folder of images, a folder of IDX files or an `*-images-idx3-ubyte[.gz]` file"
                .into(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        names.extend(entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
    }
    let split = Split { images: path.to_owned(), labels: labels_for(dir, &name, &names) };
    load_pairs(path, &[split], opts)
}

/// Loads and concatenates the given splits. Labels are kept only when every
/// split has them.
pub(super) fn load_pairs(source: &Path, splits: &[Split], opts: &LoadOptions) -> Result<Dataset, DataError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut side = None;
    let mut all_labelled = true;
    for split in splits {
        let (dims, bytes) = read_idx(&split.images, 3)?;
        let (n, rows, cols) = (dims[0], dims[1], dims[2]);
        if let Some((r, c)) = side.filter(|&rc| rc != (rows, cols)) {
            return Err(idx_err(&split.images, format!("images are {rows}x{cols}, the other split's are {r}x{c}")));
        }
        side = Some((rows, cols));
        match &split.labels {
            Some(path) => {
                let (ldims, lbytes) = read_idx(path, 1)?;
                if ldims[0] != n {
                    return Err(idx_err(path, format!("{} labels for {n} images", ldims[0])));
                }
                labels.extend(lbytes.iter().map(|&l| u32::from(l)));
            }
            None => {
                all_labelled = false;
                labels.extend(std::iter::repeat_n(0, n));
            }
        }
        if pixels.is_empty() {
            pixels = bytes;
        } else {
            pixels.extend_from_slice(&bytes);
        }
    }
    let (rows, cols) = side.unwrap_or((0, 0));

    let classes = if all_labelled && !labels.is_empty() {
        let count = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let fashion = source.to_string_lossy().to_ascii_lowercase().contains("fashion");
        (0..count)
            .map(|i| match FASHION_CLASSES.get(i) {
                Some(name) if fashion && count <= FASHION_CLASSES.len() => (*name).to_owned(),
                _ => i.to_string(),
            })
            .collect()
    } else {
        labels.iter_mut().for_each(|l| *l = 0);
        Vec::new()
    };

    let per = rows * cols;
    let starts: Vec<usize> = (0..labels.len()).map(|i| i * per).collect();
    let (images, _) = par_convert(&starts, opts.image_len(), |&start, out| {
        let raw = pixels[start..start + per].to_vec();
        match GrayImage::from_raw(cols as u32, rows as u32, raw) {
            Some(img) => {
                push_chw(&prepare(DynamicImage::ImageLuma8(img), opts), out);
                true
            }
            None => false,
        }
    });
    if images.len() != labels.len() * opts.image_len() {
        return Err(idx_err(source, "could not convert the images".into()));
    }
    Ok(Dataset {
        name: source.display().to_string(),
        images,
        labels,
        classes,
        channels: opts.channels,
        resolution: opts.resolution,
        ..Default::default()
    })
}

/// Reads an unsigned-byte IDX file with `ndims` dimensions: returns the
/// dimensions and the payload, refusing sizes before allocating for them.
pub(super) fn read_idx(path: &Path, ndims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let file = std::fs::File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::NotFound { path: path.to_owned() },
        _ => DataError::Io { path: path.to_owned(), source },
    })?;
    let file_len = file.metadata().map_err(|source| DataError::Io { path: path.to_owned(), source })?.len();
    let gz = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let mut reader: Box<dyn Read> =
        if gz { Box::new(MultiGzDecoder::new(BufReader::new(file))) } else { Box::new(BufReader::new(file)) };
    let read_err = |e: std::io::Error| idx_err(path, format!("reading failed: {e}"));

    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(read_err)?;
    if magic[..2] != [0, 0] {
        return Err(idx_err(path, format!("bad magic number {magic:02x?}")));
    }
    if magic[2] != 0x08 {
        return Err(idx_err(
            path,
            format!("element type 0x{:02x}; only unsigned bytes (0x08) are supported", magic[2]),
        ));
    }
    if usize::from(magic[3]) != ndims {
        return Err(idx_err(path, format!("{} dimensions, expected {ndims}", magic[3])));
    }
    let mut dims = Vec::with_capacity(ndims);
    let mut total: u64 = 1;
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        reader.read_exact(&mut d).map_err(read_err)?;
        let d = u32::from_be_bytes(d);
        total = total.saturating_mul(u64::from(d));
        dims.push(d as usize);
    }
    if dims[1..].contains(&0) {
        return Err(idx_err(path, format!("zero-sized images {dims:?}")));
    }
    if total > MAX_IDX_BYTES {
        return Err(idx_err(
            path,
            format!("header {dims:?} promises {total} bytes, more than the {MAX_IDX_BYTES} accepted"),
        ));
    }
    let header = 4 + 4 * ndims as u64;
    if !gz && file_len != header + total {
        return Err(idx_err(
            path,
            format!(
                "header {dims:?} promises {total} bytes of data, the file holds {}",
                file_len.saturating_sub(header)
            ),
        ));
    }
    // Plain files were checked against their size, so the capacity is real;
    // gzip output is only trusted as it arrives.
    let mut data = Vec::with_capacity(if gz { 0 } else { total as usize });
    reader.take(total + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() as u64 != total {
        let what = if (data.len() as u64) < total { "ends after" } else { "holds more than" };
        return Err(idx_err(
            path,
            format!("data {what} {} of the {total} bytes {dims:?} promises", data.len().min(total as usize)),
        ));
    }
    Ok((dims, data))
}

fn idx_err(path: &Path, reason: String) -> DataError {
    DataError::Idx { path: path.to_owned(), reason }
}

/// `train-images-idx3-ubyte[.gz]`, also the `train-images.idx3-ubyte` spelling.
fn is_images_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    let n = n.trim_end_matches(".gz");
    n.ends_with("idx3-ubyte") && n.contains("images")
}

/// The label file that goes with image file `name`, among `names` in `dir`.
fn labels_for(dir: &Path, name: &str, names: &[String]) -> Option<PathBuf> {
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    let base = stem.replacen("images", "labels", 1).replacen("idx3", "idx1", 1);
    [base.clone(), format!("{base}.gz")].into_iter().find(|c| names.contains(c)).map(|c| dir.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A hand-made IDX file: magic, big-endian dims, payload.
    fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(payload);
        b
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("gzip");
        enc.finish().expect("gzip")
    }

    /// Three 2x2 images: black, grey 51, white; labels 2, 0, 1.
    fn write_tiny(dir: &Path, gz: bool, prefix: &str) {
        let pixels = [[0u8; 4], [51; 4], [255; 4]].concat();
        let (img, lab) = (idx_bytes(&[3, 2, 2], &pixels), idx_bytes(&[3], &[2, 0, 1]));
        let (img, lab, ext) = if gz { (gzip(&img), gzip(&lab), ".gz") } else { (img, lab, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).expect("write");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).expect("write");
    }

    fn opts(resolution: usize, channels: usize) -> LoadOptions {
        LoadOptions { resolution, channels, background: [0; 3] }
    }

    #[test]
    fn tiny_idx_round_trips_plain_and_gzipped() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            write_tiny(dir.path(), gz, "train");
            let splits = find(dir.path()).expect("find").expect("idx");
            let data = load_pairs(dir.path(), &splits, &opts(2, 1)).expect("load");
            assert_eq!(data.labels, [2, 0, 1], "gz={gz}");
            assert_eq!(data.classes, ["0", "1", "2"]);
            let grey = 51.0 / 127.5 - 1.0;
            assert_eq!(data.images, [[-1.0; 4], [grey; 4], [1.0; 4]].concat(), "gz={gz}");
        }
    }

    #[test]
    fn train_split_is_preferred() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny(dir.path(), true, "train");
        write_tiny(dir.path(), false, "t10k");
        let splits = find(dir.path()).expect("find").expect("idx");
        assert_eq!(splits.len(), 1);
        assert!(splits[0].images.ends_with("train-images-idx3-ubyte.gz"));
        assert!(splits[0].labels.as_ref().is_some_and(|l| l.ends_with("train-labels-idx1-ubyte.gz")));
    }

    #[test]
    fn all_splits_load_without_a_train_split() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny(dir.path(), true, "a");
        write_tiny(dir.path(), false, "b");
        let splits = find(dir.path()).expect("find").expect("idx");
        let data = load_pairs(dir.path(), &splits, &opts(4, 3)).expect("load");
        assert_eq!(data.len(), 6);
        assert_eq!(data.images.len(), 6 * 3 * 16);
    }

    #[test]
    fn missing_labels_mean_unlabelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny(dir.path(), false, "train");
        std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte")).expect("rm");
        let path = dir.path().join("train-images-idx3-ubyte");
        let data = load_file(&path, &opts(2, 1)).expect("load");
        assert_eq!(data.labels, [0, 0, 0]);
        assert!(data.classes.is_empty());
    }

    #[test]
    fn bad_headers_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: [(&str, Vec<u8>, &str); 5] = [
            ("magic", vec![1, 2, 8, 3, 0, 0, 0, 0], "magic"),
            (
                "float",
                idx_bytes(&[1, 1, 1], &[0])
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 2 { 0x0d } else { b })
                    .collect(),
                "element type",
            ),
            ("dims", idx_bytes(&[1, 1], &[0]), "dimensions"),
            ("short", idx_bytes(&[10, 28, 28], &[0; 100]), "file holds 100"),
            ("huge", idx_bytes(&[u32::MAX, 65535, 65535], &[0; 16]), "more than"),
        ];
        for (name, bytes, expect) in cases {
            let path = dir.path().join(format!("{name}-images-idx3-ubyte"));
            std::fs::write(&path, bytes).expect("write");
            let err = read_idx(&path, 3).expect_err(name).to_string();
            assert!(err.contains(expect) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn gzipped_lies_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Claims 100,000 28x28 images (78 MB, under the cap) but holds 10 bytes.
        let path = dir.path().join("short-images-idx3-ubyte.gz");
        std::fs::write(&path, gzip(&idx_bytes(&[100_000, 28, 28], &[7; 10]))).expect("write");
        let err = read_idx(&path, 3).expect_err("short").to_string();
        assert!(err.contains("ends after 10 of the 78400000 bytes"), "{err}");
        // More data than promised.
        let path = dir.path().join("long-images-idx3-ubyte.gz");
        std::fs::write(&path, gzip(&idx_bytes(&[1, 2, 2], &[7; 5]))).expect("write");
        assert!(read_idx(&path, 3).expect_err("long").to_string().contains("holds more than"));
        // Not gzip at all.
        let path = dir.path().join("fake-images-idx3-ubyte.gz");
        std::fs::write(&path, idx_bytes(&[1, 1, 1], &[0])).expect("write");
        assert!(read_idx(&path, 3).expect_err("fake").to_string().contains("reading failed"));
    }

    #[test]
    fn label_count_must_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny(dir.path(), false, "train");
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_bytes(&[2], &[0, 1])).expect("write");
        let splits = find(dir.path()).expect("find").expect("idx");
        let err = load_pairs(dir.path(), &splits, &opts(2, 1)).expect_err("mismatch").to_string();
        assert!(err.contains("2 labels for 3 images"), "{err}");
    }

    #[test]
    fn other_spellings_pair_up() {
        let names: Vec<String> = ["train-images.idx3-ubyte", "train-labels.idx1-ubyte"].map(String::from).into();
        assert!(is_images_name(&names[0]));
        assert_eq!(labels_for(Path::new("d"), &names[0], &names), Some(Path::new("d").join(&names[1])));
    }
}
