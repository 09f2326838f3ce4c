//! Headless GUI tests of exporting from the explorer: egui_kittest drives the
//! real `ExplorerApp` (export dialog, bookmark loading and saving) and the
//! results are checked on disk against `ganscope interpolate --keyframes`.
//!
//! The model is a fresh, untrained generator written by the test (its
//! frames are noise, but deterministic noise, which is all byte equality
//! needs), or `GANSCOPE_TEST_MODEL=PATH`.
//!
//! Run: `cargo test --release --test gui_export` (Mesa's Vulkan driver, as
//! for `tests/gui_explorer.rs`).

#![cfg(feature = "gui")]

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use ganscope::app::ExplorerApp;
use ganscope::app::export_job::Outcome;
use ganscope::export::keyframes::ExportSettings;
use ganscope::export::{Bookmark, Filter, frames};
use ganscope::gan::params::FreshParams;
use ganscope::gan::{Generator, ModelConfig, Provenance, model_file};
use ganscope::latent::{self, Ease, Mode, Prior};
use rand::SeedableRng;

mod common;
use common::{open_app, wait};

const BIN: &str = env!("CARGO_BIN_EXE_ganscope");

/// The model under test: `GANSCOPE_TEST_MODEL`, or a small untrained
/// generator saved by the first test that needs it.
fn model_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var("GANSCOPE_TEST_MODEL").ok().filter(|s| !s.is_empty()) {
            return p;
        }
        let cfg = ModelConfig { z_dim: 16, g_width: 8, d_width: 8, ..ModelConfig::default() };
        let device = candle_core::Device::Cpu;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut params = FreshParams::new(&mut rng, &device);
        Generator::new(&cfg, &mut params).expect("build a generator");
        let tensors: Vec<_> = params.vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().clone())).collect();
        // Same seed, same bytes: runs may share the file (it is written atomically).
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gui-export-model.safetensors");
        model_file::save(&path, &cfg, &Provenance::default(), &tensors).expect("save the test model");
        path.display().to_string()
    })
}

/// Opens the export dialog with the side panel's button and types `out` as the target.
fn open_export(h: &mut Harness<'_, ExplorerApp>, out: &Path) {
    h.get_by_label("Export video\u{2026}").click();
    h.run_ok();
    assert!(h.state().export_dialog().is_open());
    h.get_by_label("Save to").set_text_value_accesskit(&out.display().to_string());
    h.run_ok();
    assert_eq!(h.state().export_dialog().form().out_path(), out, "the typed target is taken");
}

/// A bookmark for the test model with everything non-default: an anchor
/// whose latent no seed gives, easing, a loop, side by side, a size that is
/// not a multiple of the model's, smooth filtering.
fn bookmark(frames: usize, size: u32) -> Bookmark {
    let m = ganscope::cli::load_model(Some(model_path()), &candle_core::Device::Cpu).expect("load the model");
    let dim = m.config.z_dim;
    let mut b = Bookmark::from_seeds(&m.hash, dim, &[3, 7, 11], Mode::Slerp);
    b.anchors[1].seed = None;
    b.anchors[1].z = latent::slerp(&latent::from_seed(5, dim, Prior::Sphere), &b.anchors[1].z, 0.37);
    b.anchors[2].pos = Some([0.8, 0.2]);
    b.ease = Ease::EaseInOut;
    b.looped = true;
    b.model = Some(model_path().to_string());
    b.view.probe = Some([0.3, 0.6]);
    b.export = Some(ExportSettings { frames, fps: 25.0, size: Some(size), filter: Filter::Smooth, side_by_side: true });
    b
}

/// Names and bytes of the files in `dir`, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    out.sort();
    out
}

/// `ganscope interpolate --keyframes BOOKMARK --out OUT`, which must succeed.
fn cli_export(bookmark: &Path, out: &Path) {
    let o = Command::new(BIN).arg("interpolate").arg("--keyframes").arg(bookmark).arg("--out").arg(out).output();
    let o = o.expect("run ganscope interpolate");
    assert!(o.status.success(), "CLI export failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Clicks Export and waits for the export to end.
fn export_and_wait(h: &mut Harness<'_, ExplorerApp>) -> Outcome {
    h.get_by_label("Export").click();
    h.run_ok();
    wait(h, "the export ends", |app| !app.export_dialog().running());
    h.state().export_dialog().outcome().cloned().expect("an outcome")
}

#[test]
fn gui_export_of_a_bookmark_matches_the_cli_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2 * frames::BATCH + 3;
    let b = bookmark(n, 40);
    let saved = dir.path().join("bookmark.json");
    b.save(&saved).unwrap();

    let mut h = open_app(model_path().to_string());
    h.state_mut().load_bookmark(&saved);
    h.run_ok();
    assert_eq!(h.state().last_error(), None, "same model, no warning");
    let anchors = h.state().anchors();
    assert_eq!(anchors.len(), 3);
    assert!(anchors[0].z.is_none() && anchors[1].z.is_some(), "seeded anchors stay seeds, the exact one is kept");
    assert_eq!(anchors[2].pos, egui::pos2(0.8, 0.2));
    assert_eq!(h.state().probe(), egui::pos2(0.3, 0.6));

    let gui_out = dir.path().join("gui");
    open_export(&mut h, &gui_out);
    let outcome = export_and_wait(&mut h);
    let Outcome::Written(summary) = outcome else { panic!("the export failed: {outcome:?}") };
    assert_eq!(summary.frames, n);
    assert_eq!(summary.dimensions, (2 * 40 + frames::DIVIDER, 40));
    assert!(h.query_by_label_contains("Wrote").is_some(), "the result is on screen");

    let cli_out = dir.path().join("cli");
    cli_export(&saved, &cli_out);
    let (gui, cli) = (files(&gui_out), files(&cli_out));
    assert_eq!(gui.len(), n);
    assert!(gui == cli, "the app's frames differ from the CLI's");

    // The app's own bookmark of that scene holds the same latents, bit for
    // bit, and renders the same frames from the command line.
    let resaved = dir.path().join("resaved.json");
    h.state_mut().save_bookmark(&resaved);
    assert_eq!(h.state().last_error(), None);
    let back = Bookmark::load(&resaved).unwrap();
    let bits =
        |b: &Bookmark| b.anchors.iter().map(|a| a.z.iter().map(|v| v.to_bits()).collect()).collect::<Vec<Vec<_>>>();
    assert_eq!(bits(&back), bits(&b));
    assert_eq!((back.mode, back.ease, back.looped, &back.export), (b.mode, b.ease, b.looped, &b.export));
    let cli_again = dir.path().join("cli-again");
    cli_export(&resaved, &cli_again);
    assert!(files(&cli_again) == gui, "the resaved bookmark renders the same frames");
}

#[test]
fn cancelling_mid_export_leaves_nothing_at_the_target() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that it cannot finish between two frames of the test.
    let saved = dir.path().join("long.json");
    bookmark(frames::MAX_FRAMES, 256).save(&saved).unwrap();
    let mut h = open_app(model_path().to_string());
    h.state_mut().load_bookmark(&saved);
    h.run_ok();
    let out = dir.path().join("long.gif");
    open_export(&mut h, &out);
    h.get_by_label("Export").click();
    h.run_ok();
    wait(&mut h, "the first frames are encoded", |app| app.export_dialog().progress().is_some_and(|p| p.done > 0));
    let done = h.state().export_dialog().progress().map(|p| p.done);
    assert!(done < Some(frames::MAX_FRAMES), "still running when cancelled");
    h.get_by_label("Cancel").click();
    h.run_ok();
    wait(&mut h, "the export stops", |app| !app.export_dialog().running());
    assert_eq!(h.state().export_dialog().outcome(), Some(&Outcome::Cancelled));
    assert!(h.query_by_label_contains("nothing was written").is_some(), "the cancel is on screen");
    assert!(!out.exists(), "nothing at the target");
    let names: Vec<String> = files(dir.path()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["long.json"], "no staging file is left behind");
}

#[test]
fn an_unwritable_target_is_an_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = open_app(model_path().to_string());
    let out = dir.path().join("missing/sub/out.mp4");
    open_export(&mut h, &out);
    h.get_by_label("Export").click();
    h.run_ok();
    assert!(!h.state().export_dialog().running(), "no export was started");
    let Some(Outcome::Failed(message)) = h.state().export_dialog().outcome().cloned() else {
        panic!("no error: {:?}", h.state().export_dialog().outcome())
    };
    assert!(message.contains(&out.display().to_string()) && message.contains("does not exist"), "{message}");
    assert!(h.query_by_label_contains("does not exist").is_some(), "the error is on screen");
    assert!(files(dir.path()).is_empty(), "nothing was written");
}

#[test]
fn a_bookmark_for_another_model_warns_and_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = bookmark(10, 32);
    b.model_hash = "0123456789abcdef".into();
    b.anchors.truncate(2);
    let saved = dir.path().join("other.json");
    b.save(&saved).unwrap();
    let mut h = open_app(model_path().to_string());
    h.state_mut().load_bookmark(&saved);
    h.run_ok();
    let warning = h.state().last_error().unwrap_or_default().to_string();
    assert!(warning.contains("other.json") && warning.contains("0123456789abcdef"), "{warning}");
    assert_eq!(h.state().anchors().len(), 2, "the anchors are loaded anyway");
    assert_eq!(h.state().export_dialog().form().settings(), b.export.unwrap());
}
