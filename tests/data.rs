//! The `data` module through its public API: built-in datasets, image
//! folders, IDX files, and the errors users see.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use ganscope::data::{self, DataError, LoadOptions};
use image::{Rgb, RgbImage};

/// Counts the bytes each thread asks the allocator for, so a test can prove
/// that a lying IDX header does not make us allocate what it claims.
struct CountingAlloc;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocated() -> usize {
    ALLOCATED.with(Cell::get)
}

fn opts(resolution: usize, channels: usize) -> LoadOptions {
    LoadOptions { resolution, channels, background: [255, 255, 255] }
}

fn in_range(values: &[f32]) -> bool {
    values.iter().all(|v| (-1.0..=1.0).contains(v))
}

#[test]
fn builtin_digits_load_with_ten_classes() {
    let start = Instant::now();
    let d = data::load("builtin:digits", &opts(28, 1)).expect("digits");
    let took = start.elapsed();
    eprintln!("builtin:digits at 28: {took:?}");
    assert_eq!(d.len(), 10_000);
    assert_eq!(d.name, "builtin:digits");
    assert_eq!(d.classes, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(d.class_counts(), [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
    assert_eq!(d.images.len(), 10_000 * 28 * 28);
    assert!(in_range(&d.images));
    // White digits on black: mostly -1, some strokes near 1.
    let img = d.image(0);
    assert!(img.iter().filter(|&&v| v == -1.0).count() > 28 * 28 / 2);
    assert!(img.iter().any(|&v| v > 0.9));
    // Generous bound: this is a correctness test, not a benchmark.
    assert!(took.as_secs_f32() < 10.0, "{took:?}");

    let start = Instant::now();
    let d32 = data::load("builtin:digits", &opts(32, 1)).expect("digits 32");
    eprintln!("builtin:digits at 32 (resized): {:?}", start.elapsed());
    assert_eq!(d32.images.len(), 10_000 * 32 * 32);
    assert!(in_range(&d32.images));
    assert_eq!(d32.labels, d.labels);
}

#[test]
fn builtin_emoji_loads_as_rgb_at_64_and_32() {
    for res in [64, 32] {
        let start = Instant::now();
        let e = data::load("builtin:emoji", &opts(res, 3)).expect("emoji");
        eprintln!("builtin:emoji at {res}: {:?}", start.elapsed());
        assert_eq!(e.len(), 1079);
        assert_eq!((e.channels, e.resolution), (3, res));
        assert_eq!(e.classes, ["smileys", "people"]);
        assert_eq!(e.class_counts(), [338, 741]);
        assert_eq!(e.images.len(), 1079 * 3 * res * res);
        assert!(in_range(&e.images));
        // The corner of the first emoji is transparent: the white background shows.
        assert!(e.image(0)[0] > 0.99);
    }
    let grey = data::load("builtin:emoji", &opts(64, 1)).expect("grey emoji");
    assert_eq!(grey.images.len(), 1079 * 64 * 64);
}

#[test]
fn builtin_listing_matches_loading() {
    for info in data::builtins() {
        let d = data::load(&format!("builtin:{}", info.name), &opts(info.native_resolution, info.channels))
            .expect("builtin");
        assert_eq!(d.len(), info.count, "{}", info.name);
        assert_eq!(d.classes, info.classes, "{}", info.name);
        assert!(!info.license.is_empty() && !info.description.is_empty());
    }
}

#[test]
fn folder_with_two_class_subfolders() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (class, colour, n) in [("apples", [200, 0, 0], 4), ("limes", [0, 200, 0], 3)] {
        std::fs::create_dir(dir.path().join(class)).expect("mkdir");
        for i in 0..n {
            RgbImage::from_pixel(40, 30, Rgb(colour)).save(dir.path().join(format!("{class}/{i}.png"))).expect("png");
        }
    }
    std::fs::write(dir.path().join("limes/broken.png"), b"\x89PNG garbage").expect("write");
    let spec = dir.path().to_str().expect("utf-8 path");
    let d = data::load(spec, &opts(32, 3)).expect("folder");
    assert_eq!(d.classes, ["apples", "limes"]);
    assert_eq!(d.labels, [0, 0, 0, 0, 1, 1, 1]);
    assert_eq!((d.skipped_count, d.skipped.len()), (1, 1));
    assert!(d.skipped[0].ends_with("limes/broken.png"));
    let (mut batch, mut labels) = (Vec::new(), Vec::new());
    d.gather(&[6, 0], &mut batch, &mut labels);
    assert_eq!(labels, [1, 0]);
    assert_eq!(batch.len(), 2 * 3 * 32 * 32);
    let g = 200.0 / 127.5 - 1.0;
    // Image 6 (a lime): its green plane is 200 everywhere.
    assert!(batch[1024..2048].iter().all(|&v| (v - g).abs() < 1e-6));
}

#[test]
fn empty_and_missing_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.jpg"), b"nope").expect("write");
    let spec = dir.path().to_str().expect("utf-8 path");
    match data::load(spec, &opts(28, 1)) {
        Err(DataError::Empty { spec: s, skipped }) => {
            assert_eq!((s.as_str(), skipped), (spec, 1));
        }
        other => panic!("expected Empty, got {other:?}"),
    }
    let missing = dir.path().join("nope");
    let err = data::load(missing.to_str().expect("utf-8"), &opts(28, 1)).expect_err("missing");
    assert!(matches!(err, DataError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
}

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

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write");
}

#[test]
fn idx_folder_round_trips_plain_and_gzipped() {
    // Two 3x3 images: a bright centre pixel, then its negative.
    let a = [0, 0, 0, 0, 255, 0, 0, 0, 0];
    let b = a.map(|v| 255 - v);
    let pixels = [a, b].concat();
    for gz in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (img, lab) = (idx_bytes(&[2, 3, 3], &pixels), idx_bytes(&[2], &[1, 0]));
        if gz {
            write(dir.path(), "train-images-idx3-ubyte.gz", &gzip(&img));
            write(dir.path(), "train-labels-idx1-ubyte.gz", &gzip(&lab));
        } else {
            write(dir.path(), "train-images-idx3-ubyte", &img);
            write(dir.path(), "train-labels-idx1-ubyte", &lab);
        }
        let d = data::load(dir.path().to_str().expect("utf-8"), &opts(3, 1)).expect("idx");
        let expected: Vec<f32> = pixels.iter().map(|&v| if v == 0 { -1.0 } else { 1.0 }).collect();
        assert_eq!(d.images, expected, "gz={gz}");
        assert_eq!((d.labels.as_slice(), d.classes.len()), ([1, 0].as_slice(), 2));
        // The image file on its own works too.
        let file = dir.path().join(if gz { "train-images-idx3-ubyte.gz" } else { "train-images-idx3-ubyte" });
        let d = data::load(file.to_str().expect("utf-8"), &opts(3, 1)).expect("idx file");
        assert_eq!(d.labels, [1, 0]);
        for spec in [dir.path(), file.as_path()] {
            assert_eq!(data::native_channels(spec.to_str().expect("utf-8")).expect("idx"), 1, "IDX is grey");
        }
    }
}

/// A new run trains at the dataset's own channel count: built-ins say
/// theirs, and an image folder is grey only when its images are.
#[test]
fn native_channels_follow_the_images() {
    assert_eq!(data::native_channels("builtin:digits").expect("digits"), 1);
    assert_eq!(data::native_channels("builtin:emoji").expect("emoji"), 3);
    let err = data::native_channels("builtin:nope").expect_err("unknown").to_string();
    assert!(err.contains("builtin:nope") && err.contains("digits"), "{err}");

    let grey = tempfile::tempdir().expect("tempdir");
    for i in 0..3 {
        image::GrayImage::from_pixel(8, 8, image::Luma([40 * i]))
            .save(grey.path().join(format!("{i}.png")))
            .expect("png");
    }
    assert_eq!(data::native_channels(grey.path().to_str().expect("utf-8")).expect("grey"), 1);
    // One colour image among grey ones makes the folder RGB.
    RgbImage::from_pixel(8, 8, Rgb([200, 10, 10])).save(grey.path().join("1b.png")).expect("png");
    assert_eq!(data::native_channels(grey.path().to_str().expect("utf-8")).expect("mixed"), 3);
    assert!(data::native_channels("/no/such/folder").is_err());
}

#[test]
fn absurd_idx_headers_fail_without_allocating() {
    let dir = tempfile::tempdir().expect("tempdir");
    // u32::MAX images of 65535x65535: refused from the header alone.
    write(dir.path(), "huge-images-idx3-ubyte", &idx_bytes(&[u32::MAX, 65535, 65535], &[0; 64]));
    // Plain file: 1,000,000 images of 28x28 (784 MB, under the cap) in 64 bytes.
    write(dir.path(), "liar-images-idx3-ubyte", &idx_bytes(&[1_000_000, 28, 28], &[0; 64]));
    // Gzipped, so the size cannot be checked up front.
    write(dir.path(), "gzliar-images-idx3-ubyte.gz", &gzip(&idx_bytes(&[1_000_000, 28, 28], &[0; 64])));
    for name in ["huge-images-idx3-ubyte", "liar-images-idx3-ubyte", "gzliar-images-idx3-ubyte.gz"] {
        let path = dir.path().join(name);
        let before = allocated();
        let err = data::load(path.to_str().expect("utf-8"), &opts(28, 1)).expect_err(name);
        let used = allocated() - before;
        assert!(matches!(err, DataError::Idx { .. }), "{name}: {err}");
        assert!(err.to_string().contains(name), "{err}");
        assert!(used < 4 << 20, "{name}: allocated {used} bytes");
    }
}

/// The real thing, when Debian's `dataset-fashion-mnist` is installed.
#[test]
fn fashion_mnist_when_installed() {
    let dir = "/usr/share/datasets/fashion-mnist";
    if !Path::new(dir).is_dir() {
        eprintln!("{dir} not installed; skipped");
        return;
    }
    let start = Instant::now();
    let d = data::load(dir, &opts(28, 1)).expect("fashion-mnist");
    eprintln!("fashion-mnist train split at 28: {:?}", start.elapsed());
    assert_eq!(d.len(), 60_000);
    assert_eq!(d.classes.len(), 10);
    assert_eq!(d.classes[9], "Ankle boot");
    assert_eq!(d.class_counts(), [6000; 10]);
    assert!(in_range(&d.images));
}
