//! A folder of image files (PNG, JPEG, WebP, GIF, BMP), searched recursively.
//!
//! Labels follow the torchvision `ImageFolder` convention: when two or more
//! immediate sub-folders hold images, each becomes a class (sorted by name)
//! and loose files in the root are left out, since they belong to no class.
//! With fewer, everything is one unlabelled set. Files are sorted, so the same
//! folder always loads in the same order; unreadable files are skipped and
//! counted, not fatal, because one bad JPEG should not stop a 50,000-image run.

use std::path::{Path, PathBuf};

use super::{DataError, Dataset, LoadOptions, SKIPPED_NAMES_KEPT, par_convert, prepare, push_chw};

/// File name endings we try to decode (compared lower-case).
const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "webp", "gif", "bmp"];

/// Loads every image under `root`.
pub(super) fn load(root: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let mut files = Vec::new();
    collect(root, &mut files)?;
    files.sort();

    let (classes, labelled) = classify(root, &files);
    if !classes.is_empty() {
        let loose = labelled.iter().filter(|(_, l)| l.is_none()).count();
        if loose > 0 {
            tracing::warn!(
                "{}: {loose} images directly in the folder are left out: they are in no class sub-folder",
                root.display()
            );
        }
    }
    let jobs: Vec<(PathBuf, u32)> = labelled
        .into_iter()
        .filter_map(|(path, label)| match (classes.is_empty(), label) {
            (true, _) => Some((path, 0)),
            (false, Some(l)) => Some((path, l)),
            (false, None) => None,
        })
        .collect();

    let (images, kept) = par_convert(&jobs, opts.image_len(), |(path, _), out| match decode(path) {
        Ok(img) => {
            push_chw(&prepare(img, opts), out);
            true
        }
        Err(e) => {
            tracing::debug!("skipping {}: {e}", path.display());
            false
        }
    });

    let mut data = Dataset {
        name: root.display().to_string(),
        images,
        classes,
        channels: opts.channels,
        resolution: opts.resolution,
        ..Default::default()
    };
    for ((path, label), ok) in jobs.into_iter().zip(kept) {
        if ok {
            data.labels.push(label);
        } else {
            data.skipped_count += 1;
            if data.skipped.len() < SKIPPED_NAMES_KEPT {
                data.skipped.push(path);
            }
        }
    }
    if data.skipped_count > 0 {
        tracing::warn!(
            "{}: skipped {} unreadable files, e.g. {}",
            root.display(),
            data.skipped_count,
            data.skipped.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(data)
}

/// Files whose headers [`native_channels`] reads.
const CHANNEL_PEEK: usize = 16;

/// 1 when the first image files under `root` (in load order) are all grey,
/// else 3: read from the headers only, so a large folder answers at once.
pub(super) fn native_channels(root: &Path) -> Result<usize, DataError> {
    let mut files = Vec::new();
    collect(root, &mut files)?;
    files.sort();
    let colour = |p: &PathBuf| -> image::ImageResult<bool> {
        use image::ImageDecoder;
        Ok(open(p)?.into_decoder()?.color_type().has_color())
    };
    let seen: Vec<bool> = files.iter().take(CHANNEL_PEEK).filter_map(|p| colour(p).ok()).collect();
    Ok(if !seen.is_empty() && seen.iter().all(|c| !c) { 1 } else { 3 })
}

/// Opens one file, guessing the format from its bytes (extensions lie).
fn open(path: &Path) -> image::ImageResult<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    Ok(image::ImageReader::open(path)?.with_guessed_format()?)
}

/// Decodes one file; GIFs give their first frame.
fn decode(path: &Path) -> image::ImageResult<image::DynamicImage> {
    open(path)?.decode()
}

/// True for names with one of our image extensions.
fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Gathers image files under `dir`. Hidden entries (".git", ".DS_Store") are
/// ignored; symlinked files are followed but symlinked folders are not, so a
/// link loop cannot make this run forever.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: dir.to_owned(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| DataError::Io { path: path.clone(), source })?;
        if kind.is_dir() {
            collect(&path, files)?;
        } else if is_image_name(&path) && (kind.is_file() || path.is_file()) {
            files.push(path);
        }
    }
    Ok(())
}

/// Splits sorted files into classes by their first folder below `root`.
/// Returns the class names and each file with its label (`None` for files
/// directly in `root`); no classes when fewer than two sub-folders hold images.
fn classify(root: &Path, files: &[PathBuf]) -> (Vec<String>, Vec<(PathBuf, Option<u32>)>) {
    let first_folder = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(root).ok()?;
        let mut parts = rel.components();
        let first = parts.next()?;
        // A file directly in root has a single component.
        parts.next()?;
        Some(first.as_os_str().to_string_lossy().into_owned())
    };
    let mut classes: Vec<String> = files.iter().filter_map(|p| first_folder(p)).collect();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return (Vec::new(), files.iter().map(|p| (p.clone(), None)).collect());
    }
    let labelled = files
        .iter()
        .map(|p| {
            let label =
                first_folder(p).and_then(|c| classes.binary_search(&c).ok()).and_then(|i| u32::try_from(i).ok());
            (p.clone(), label)
        })
        .collect();
    (classes, labelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage, Rgba, RgbaImage};

    fn opts(resolution: usize, channels: usize) -> LoadOptions {
        LoadOptions { resolution, channels, background: [0, 0, 0] }
    }

    fn write_png(path: &Path, colour: [u8; 3], w: u32, h: u32) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        RgbImage::from_pixel(w, h, Rgb(colour)).save(path).expect("write png");
    }

    #[test]
    fn class_subfolders_become_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..3 {
            write_png(&dir.path().join(format!("cats/{i}.png")), [255, 0, 0], 20, 10);
        }
        for i in 0..2 {
            write_png(&dir.path().join(format!("dogs/deeper/{i}.PNG")), [0, 0, 255], 8, 8);
        }
        // Not images, or hidden: ignored, not counted as skipped.
        std::fs::write(dir.path().join("cats/notes.txt"), "hi").expect("write");
        write_png(&dir.path().join(".hidden/x.png"), [0, 255, 0], 8, 8);
        // Loose in the root while classes exist: left out.
        write_png(&dir.path().join("loose.png"), [0, 255, 0], 8, 8);

        let data = load(dir.path(), &opts(16, 3)).expect("load");
        assert_eq!(data.classes, ["cats", "dogs"]);
        assert_eq!(data.labels, [0, 0, 0, 1, 1]);
        assert_eq!(data.len(), 5);
        assert_eq!(data.skipped_count, 0);
        assert_eq!(data.images.len(), 5 * 3 * 16 * 16);
        // Cats are red: R plane at 1, B plane at -1; dogs the other way round.
        let cat = data.image(0);
        assert!(cat[..256].iter().all(|&v| v > 0.99) && cat[512..].iter().all(|&v| v < -0.99));
        let dog = data.image(4);
        assert!(dog[..256].iter().all(|&v| v < -0.99) && dog[512..].iter().all(|&v| v > 0.99));
    }

    #[test]
    fn one_subfolder_means_unlabelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(&dir.path().join("a/1.png"), [10, 10, 10], 4, 4);
        write_png(&dir.path().join("2.png"), [10, 10, 10], 4, 4);
        let data = load(dir.path(), &opts(4, 1)).expect("load");
        assert!(data.classes.is_empty());
        assert_eq!(data.labels, [0, 0]);
        assert_eq!(data.class_counts(), [2]);
    }

    #[test]
    fn corrupt_files_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_png(&dir.path().join("good.png"), [1, 2, 3], 4, 4);
        for i in 0..7 {
            std::fs::write(dir.path().join(format!("bad{i}.jpg")), b"not a jpeg").expect("write");
        }
        // A real PNG cut short.
        let mut bytes = Vec::new();
        RgbImage::new(32, 32).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("encode");
        std::fs::write(dir.path().join("truncated.png"), &bytes[..bytes.len() / 2]).expect("write");

        let data = load(dir.path(), &opts(8, 3)).expect("load");
        assert_eq!(data.len(), 1);
        assert_eq!(data.skipped_count, 8);
        assert_eq!(data.skipped.len(), SKIPPED_NAMES_KEPT);
        assert!(data.skipped[0].ends_with("bad0.jpg"), "{:?}", data.skipped);
    }

    #[test]
    fn transparent_images_sit_on_the_background() {
        let dir = tempfile::tempdir().expect("tempdir");
        RgbaImage::from_pixel(6, 6, Rgba([255, 255, 255, 0])).save(dir.path().join("clear.png")).expect("write");
        let o = LoadOptions { resolution: 6, channels: 3, background: [0, 255, 0] };
        let data = load(dir.path(), &o).expect("load");
        let img = data.image(0);
        assert!(img[..36].iter().all(|&v| v == -1.0));
        assert!(img[36..72].iter().all(|&v| v == 1.0));
    }

    #[test]
    fn formats_decode_by_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = RgbImage::from_pixel(12, 12, Rgb([200, 100, 50]));
        img.save(dir.path().join("a.bmp")).expect("bmp");
        img.save(dir.path().join("b.gif")).expect("gif");
        img.save(dir.path().join("c.jpg")).expect("jpeg");
        // A PNG wearing a .webp name still decodes.
        img.save_with_format(dir.path().join("d.webp"), image::ImageFormat::Png).expect("png");
        let data = load(dir.path(), &opts(12, 3)).expect("load");
        assert_eq!((data.len(), data.skipped_count), (4, 0));
    }

    #[test]
    fn loading_is_deterministic() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..40u8 {
            write_png(&dir.path().join(format!("{i:02}.png")), [i * 6, 0, 0], 9, 7);
        }
        let a = load(dir.path(), &opts(5, 3)).expect("load");
        let b = load(dir.path(), &opts(5, 3)).expect("load");
        assert_eq!(a.images, b.images);
        // Sorted by name: the red channel rises image by image.
        assert!((1..40).all(|i| a.image(i)[0] > a.image(i - 1)[0]));
    }

    #[test]
    fn empty_folder_gives_no_images() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = load(dir.path(), &opts(8, 1)).expect("load");
        assert!(data.is_empty());
    }
}
