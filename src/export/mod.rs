//! Writing what the generator makes: grid PNGs; interpolation videos as
//! MP4 (H.264), looping GIFs or PNG folders through one frame pipeline with
//! progress and cancel; bookmarks of keyframes that reproduce exactly.

mod error;
pub mod frames;
pub mod gif;
pub mod grid;
pub mod keyframes;
pub mod label;
pub mod mp4;
mod sink;
pub mod target;

pub use error::ExportError;
pub use frames::{Filter, FrameSpec, Progress, Summary, export};
pub use keyframes::Bookmark;
pub use target::Format;
