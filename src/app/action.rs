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
    /// Clear the error line.
    DismissError,
}
