//! Export targets: which format a path asks for, whether it can be written
//! (checked before any work), and staging: everything is written to a hidden
//! temporary file or folder next to the target and renamed into place only
//! when complete, so a cancelled, failed or killed export never leaves a
//! half-written file at the target path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ExportError;

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// H.264 in an MP4 container (`.mp4`).
    Mp4,
    /// A looping GIF (`.gif`).
    Gif,
    /// A folder of `frame_00000.png`, `frame_00001.png`, ...
    PngFolder,
}

impl Format {
    /// The format a target path asks for: `.mp4`, `.gif`, or (no extension,
    /// or an existing folder whatever its name) a PNG folder.
    pub fn from_path(path: &Path) -> Result<Format, ExportError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("mp4") => Ok(Format::Mp4),
            Some("gif") => Ok(Format::Gif),
            None => Ok(Format::PngFolder),
            Some(_) if path.is_dir() => Ok(Format::PngFolder),
            Some(e) => Err(ExportError::target(path, format!("unknown output type .{e} (use .mp4, .gif or a folder)"))),
        }
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Mp4 => "MP4",
            Format::Gif => "GIF",
            Format::PngFolder => "PNG folder",
        }
    }
}

/// File name of frame `index` in a PNG folder.
pub fn frame_name(index: usize) -> String {
    format!("frame_{index:05}.png")
}

/// Whether `name` is one of our frame files (`frame_` + digits + `.png`).
fn is_frame_name(name: &str) -> bool {
    name.strip_prefix("frame_")
        .and_then(|s| s.strip_suffix(".png"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The folder a target lives in (`.` for a bare file name).
fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Checks that a file can be created in `path`'s folder by creating and
/// removing a probe file there. Permissions bits alone do not tell (root,
/// ACLs, read-only mounts).
pub fn check_folder_writable(path: &Path) -> Result<(), ExportError> {
    let dir = parent(path);
    match std::fs::metadata(dir) {
        Err(_) => return Err(ExportError::target(path, format!("folder {} does not exist", dir.display()))),
        Ok(m) if !m.is_dir() => return Err(ExportError::target(path, format!("{} is not a folder", dir.display()))),
        Ok(_) => {}
    }
    let probe = temp_path(path);
    File::create(&probe)
        .map_err(|e| ExportError::target(path, format!("cannot write in folder {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Checks a target before any work: its format, that its folder is
/// writable, and for a PNG folder that an existing folder holds nothing but
/// frames of an earlier export (which are replaced as a whole at the end).
pub fn check_target(path: &Path) -> Result<Format, ExportError> {
    let format = Format::from_path(path)?;
    check_folder_writable(path)?;
    match format {
        Format::PngFolder if path.exists() => {
            if !path.is_dir() {
                return Err(ExportError::target(path, "exists and is not a folder"));
            }
            let entries = std::fs::read_dir(path).map_err(|e| ExportError::io(path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| ExportError::io(path, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_frame_name(&name) {
                    return Err(ExportError::target(
                        path,
                        format!("folder holds `{name}`, not only frame_*.png files: choose an empty or new folder"),
                    ));
                }
            }
        }
        Format::Mp4 | Format::Gif if path.is_dir() => {
            return Err(ExportError::target(path, "is a folder"));
        }
        _ => {}
    }
    Ok(format)
}

/// A unique hidden name next to `target`.
fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent(target).join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// A file or folder being written next to its target. Dropping it without
/// [`Staged::commit`] removes it.
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    folder: bool,
    committed: bool,
}

impl Staged {
    /// Creates the temporary file for `target`.
    pub fn file(target: &Path) -> Result<(Staged, File), ExportError> {
        let tmp = temp_path(target);
        let f = File::create(&tmp).map_err(|e| ExportError::target(target, format!("cannot create a file: {e}")))?;
        Ok((Staged { tmp, target: target.to_path_buf(), folder: false, committed: false }, f))
    }

    /// Creates the temporary folder for `target`.
    pub fn folder(target: &Path) -> Result<Staged, ExportError> {
        let tmp = temp_path(target);
        std::fs::create_dir(&tmp).map_err(|e| ExportError::target(target, format!("cannot create a folder: {e}")))?;
        Ok(Staged { tmp, target: target.to_path_buf(), folder: true, committed: false })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the finished file or folder to the target path. An earlier PNG
    /// folder there (frames only, see [`check_target`]) is replaced.
    pub fn commit(mut self) -> Result<(), ExportError> {
        let io = |e| ExportError::io(&self.target, e);
        if self.folder && self.target.is_dir() {
            // rename(2) replaces only an empty folder: move the old one
            // aside, put the new one in place, then delete the old one.
            let old = temp_path(&self.target);
            std::fs::rename(&self.target, &old).map_err(io)?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
                let _ = std::fs::rename(&old, &self.target);
                return Err(io(e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.tmp, &self.target).map_err(io)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = if self.folder { std::fs::remove_dir_all(&self.tmp) } else { std::fs::remove_file(&self.tmp) };
        }
    }
}
