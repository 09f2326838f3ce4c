//! Writing what the generator makes: grid PNGs, GIFs, frame folders.

pub mod gif;
pub mod grid;
