//! The commands views return instead of reaching into the app: collected
//! during layout and applied afterwards, in one place.

use crate::worker::Target;

/// Which main view is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Canvas, slerp/lerp images, |z| plot and frame strips.
    #[default]
    Explore,
    /// The 8x8 sample grid.
    Grid,
    /// The training panel.
    Train,
}

/// Something a view asks the app to do.
#[must_use]
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Show the open-model dialog (off the UI thread).
    OpenDialog,
    /// Load a model from this spec or path; the current one stays on failure.
    OpenModel(String),
    /// Switch the main view.
    ShowView(View),
    /// Add an anchor with this seed and put the probe on it.
    AddAnchor(u64),
    /// The inputs of a target changed: generate it again.
    Regenerate(Target),
    /// Every target must be generated again (class or dropout changed).
    RegenerateAll,
    /// Show the export dialog.
    ShowExport,
    /// Ask where to save a bookmark (anchors, view, export settings).
    SaveBookmark,
    /// Ask for a bookmark to load.
    LoadBookmark,
    /// Clear the error line.
    DismissError,
    /// Show an error on the error line.
    ShowError(String),
    /// Sample this model file from memory (the live generator of a run).
    UseLiveModel {
        /// Names the model.
        source: String,
        /// The `.safetensors` bytes.
        bytes: std::sync::Arc<[u8]>,
    },
}
