//! Interpolation export: MP4, GIF and PNG folders through the binary and
//! the library; seamless loops; cancel and kill leave nothing at the target;
//! bookmarks render to the same bytes from the CLI and the library.
//!
//! Tests use the embedded default model when it loads, and otherwise a tiny
//! model trained for two steps (the default may be a placeholder while it
//! is being trained).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ganscope::export::keyframes::ExportSettings;
use ganscope::export::{self, Bookmark, ExportError, Filter, FrameSpec, frames};
use ganscope::gan::Model;
use ganscope::latent::{self, Ease, Mode, Prior};

const BIN: &str = env!("CARGO_BIN_EXE_ganscope");

/// `--model` arguments for the CLI and a spec for the library: none when the
/// default model loads, else a tiny model trained once per test run.
fn model_spec() -> Option<&'static str> {
    static SPEC: OnceLock<Option<String>> = OnceLock::new();
    SPEC.get_or_init(|| {
        if ganscope::cli::load_model(None, &candle_core::Device::Cpu).is_ok() {
            return None;
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("export-tiny-model-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(BIN)
            .args(["train", "--data", "builtin:digits", "--out"])
            .arg(&dir)
            .args(["--steps", "2", "--device", "cpu"])
            .args(["--set", "model.resolution=28", "--set", "model.channels=1", "--set", "model.g_width=8"])
            .args(["--set", "model.d_width=8", "--set", "model.z_dim=16"])
            .output()
            .expect("run ganscope train");
        assert!(out.status.success(), "training the tiny model failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(dir.display().to_string())
    })
    .as_deref()
}

fn model() -> Model {
    ganscope::cli::load_model(model_spec(), &candle_core::Device::Cpu).expect("load model")
}

/// Runs `ganscope interpolate` with the test model and `args`.
fn interpolate(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("interpolate");
    if let Some(m) = model_spec() {
        cmd.args(["--model", m]);
    }
    cmd.args(args).output().expect("run ganscope interpolate")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "ganscope failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Names in a folder, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn ffprobe_available() -> bool {
    Command::new("ffprobe").arg("-version").output().is_ok_and(|o| o.status.success())
}

/// `ffprobe` stream fields of the first video stream, decoding every frame.
fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,width,height,r_frame_rate,avg_frame_rate,nb_read_frames,nb_frames,pix_fmt")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    v["streams"][0].clone()
}

#[test]
fn mp4_decodes_with_expected_frames_size_and_fps() {
    let dir = tempfile::tempdir().unwrap();
    for (fps, frames, size) in [("30", 45, 64), ("24", 30, 100)] {
        let out = dir.path().join(format!("path-{fps}.mp4"));
        let n = frames.to_string();
        let px = size.to_string();
        ok(interpolate(&["--seeds", "1,2,3", "--frames", &n, "--fps", fps, "--size", &px, "--out", s(&out)]));
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 starts with ftyp");
        if !ffprobe_available() {
            eprintln!("note: ffprobe not found; checked only that {} is an MP4", out.display());
            continue;
        }
        let st = probe(&out);
        assert_eq!(st["codec_name"], "h264", "{st}");
        assert_eq!(st["pix_fmt"], "yuv420p", "{st}");
        assert_eq!(st["width"], size, "{st}");
        assert_eq!(st["height"], size, "{st}");
        assert_eq!(st["nb_read_frames"], n.as_str(), "every frame decodes: {st}");
        assert_eq!(st["nb_frames"], n.as_str(), "{st}");
        assert_eq!(st["r_frame_rate"], format!("{fps}/1"), "{st}");
        assert_eq!(st["avg_frame_rate"], format!("{fps}/1"), "{st}");
    }
    // Side by side: two panes and a 2px divider, still even.
    let out = dir.path().join("both.mp4");
    ok(interpolate(&["--seeds", "4,5", "--frames", "8", "--size", "64", "--side-by-side", "--out", s(&out)]));
    if ffprobe_available() {
        let st = probe(&out);
        assert_eq!((st["width"].as_u64(), st["height"].as_u64()), (Some(130), Some(64)), "{st}");
    }
    // An odd size cannot be H.264 4:2:0: refused before any work.
    let odd = dir.path().join("odd.mp4");
    let o = interpolate(&["--seeds", "1,2", "--size", "65", "--out", s(&odd)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("even"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!odd.exists());
}

#[test]
fn gif_has_expected_frames_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("loop.gif");
    ok(interpolate(&["--seeds", "7,8,9", "--frames", "20", "--fps", "30", "--loop", "--size", "56", "--out", s(&out)]));
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!((dec.width(), dec.height()), (56, 56));
    let (mut frames, mut centis) = (0, 0u32);
    while let Some(f) = dec.read_next_frame().unwrap() {
        frames += 1;
        centis += f.delay as u32;
        assert!((3..=4).contains(&f.delay), "30 fps alternates 3 and 4 cs, got {}", f.delay);
    }
    assert_eq!(frames, 20);
    assert_eq!(centis, 67, "20 frames at 30 fps last 0.67 s");
    assert_eq!(dec.repeat(), gif::Repeat::Infinite, "the GIF loops forever");
    // The `image` crate reads it too.
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (56, 56));
}

fn read_latents(path: &Path) -> Vec<Vec<f32>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    serde_json::from_value(v["latents"].clone()).unwrap()
}

fn angle(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
    (d / (n(a) * n(b))).clamp(-1.0, 1.0).acos()
}

fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn looped_path_is_seamless() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, step) in [("slerp", angle as fn(&[f32], &[f32]) -> f64), ("lerp", distance)] {
        // Two keyframes: the loop A -> B -> A has two equal segments, so
        // every step, the wrap-around one included, is the same.
        let lat = dir.path().join(format!("{mode}.json"));
        let out = dir.path().join(format!("{mode}.gif"));
        ok(interpolate(&[
            "--seeds",
            "11,12",
            "--frames",
            "24",
            "--loop",
            "--mode",
            mode,
            "--size",
            "28",
            "--out",
            s(&out),
            "--latents-out",
            s(&lat),
        ]));
        let z = read_latents(&lat);
        assert_eq!(z.len(), 24);
        let steps: Vec<f64> = (0..z.len()).map(|i| step(&z[i], &z[(i + 1) % z.len()])).collect();
        let wrap = steps[23];
        assert!(wrap > 0.0, "the last frame is not a copy of the first");
        for (i, st) in steps.iter().enumerate() {
            assert!((st - wrap).abs() < 1e-4 * wrap.max(1.0), "{mode}: step {i} is {st}, wrap-around {wrap}");
        }
    }
    // Three keyframes: segments differ in length, and the wrap-around step
    // equals the steps of the last segment (C -> A).
    let lat = dir.path().join("three.json");
    let out = dir.path().join("three");
    ok(interpolate(&[
        "--seeds",
        "1,2,3",
        "--frames",
        "30",
        "--loop",
        "--size",
        "28",
        "--out",
        s(&out),
        "--latents-out",
        s(&lat),
    ]));
    let z = read_latents(&lat);
    let wrap = angle(&z[29], &z[0]);
    for i in 20..29 {
        assert!((angle(&z[i], &z[i + 1]) - wrap).abs() < 1e-4, "step {i} vs wrap-around {wrap}");
    }
    assert_eq!(listing(&out).len(), 30);
}

/// Exports `frames` frames to `out` through the library, raising the cancel
/// flag after the first batch.
fn cancelled_export(m: &Model, out: &Path) -> Result<export::Summary, ExportError> {
    let dim = m.config.z_dim;
    let spec = FrameSpec {
        keys: (0..3).map(|s| latent::from_seed(s, dim, Prior::Sphere)).collect(),
        frames: 10 * frames::BATCH,
        mode: Mode::Slerp,
        ease: Ease::Linear,
        looped: true,
        side_by_side: false,
        size: 64,
        filter: Filter::Nearest,
        class: None,
    };
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let r = export::export(m, &spec, 30.0, out, &cancel, |p| {
        seen.push(p.done);
        if p.done >= frames::BATCH {
            cancel.store(true, Ordering::Relaxed);
        }
    });
    assert_eq!(seen[..2], [0, frames::BATCH], "progress starts at 0 and counts batches");
    r
}

#[test]
fn cancelling_mid_export_leaves_no_file() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    for name in ["video.mp4", "anim.gif", "pngs"] {
        let out = dir.path().join(name);
        let r = cancelled_export(&m, &out);
        assert!(matches!(r, Err(ExportError::Cancelled)), "{name}: {r:?}");
        assert!(!out.exists(), "{name} exists after cancel");
        assert_eq!(listing(dir.path()), Vec::<String>::new(), "temporary files are removed");
    }
    // A cancelled export over an earlier one keeps the earlier one intact.
    let out = dir.path().join("kept.gif");
    std::fs::write(&out, b"earlier export").unwrap();
    assert!(matches!(cancelled_export(&m, &out), Err(ExportError::Cancelled)));
    assert_eq!(std::fs::read(&out).unwrap(), b"earlier export");
}

#[test]
fn killed_export_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("long.mp4");
    let mut cmd = Command::new(BIN);
    cmd.arg("interpolate");
    if let Some(m) = model_spec() {
        cmd.args(["--model", m]);
    }
    let mut child = cmd
        .args(["--seeds", "1,2", "--frames", "100000", "--size", "512", "--out", s(&out)])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the staged file exists, so the kill lands mid-export.
    let start = Instant::now();
    while !listing(dir.path()).iter().any(|n| n.starts_with(".long.mp4.tmp-")) {
        assert!(start.elapsed() < Duration::from_secs(60), "no staged file appeared");
        assert!(child.try_wait().unwrap().is_none(), "the export ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed export left a file at the target path");
}

#[test]
fn unwritable_target_is_a_clear_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let cases = [
        (dir.path().join("missing/sub/out.mp4"), "does not exist"),
        (file.join("out.gif"), "not a folder"),
        (dir.path().join("out.avi"), "unknown output type"),
    ];
    for (target, msg) in cases {
        // A model path that does not exist: the target must be refused first.
        let out = Command::new(BIN)
            .args(["interpolate", "--model", "/nonexistent/model.safetensors", "--seeds", "1,2", "--out"])
            .arg(&target)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(msg) && err.contains(s(&target)), "{}: {err}", target.display());
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // A folder holding other files is not replaced.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"keep").unwrap();
    let o = interpolate(&["--seeds", "1,2", "--frames", "4", "--out", s(&busy)]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("notes.txt"));
    assert_eq!(listing(&busy), ["notes.txt"]);
    assert_eq!(listing(dir.path()), ["busy", "plain-file"], "nothing else was written");
}

#[test]
fn png_folder_replaces_an_earlier_export_whole() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    ok(interpolate(&["--seeds", "1,2", "--frames", "6", "--size", "28", "--out", s(&out)]));
    assert_eq!(listing(&out).len(), 6);
    ok(interpolate(&["--seeds", "1,2", "--frames", "3", "--size", "28", "--out", s(&out)]));
    assert_eq!(listing(&out), ["frame_00000.png", "frame_00001.png", "frame_00002.png"], "no stale frames");
    assert_eq!(listing(dir.path()), ["frames"]);
}

/// All files of a PNG folder, by name.
fn pngs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    listing(dir).into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap())).collect()
}

#[test]
fn bookmark_renders_identically_from_cli_and_library() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let dim = m.config.z_dim;
    let mut b = Bookmark::from_seeds(&m.hash, dim, &[21, 22, 23], Mode::Slerp);
    // A dragged anchor: a latent no seed gives.
    b.anchors[1].seed = None;
    b.anchors[1].z = latent::slerp(&latent::from_seed(5, dim, Prior::Sphere), &b.anchors[1].z, 0.37);
    b.anchors[0].pos = Some([0.1, 0.5]);
    b.ease = Ease::EaseInOut;
    b.looped = true;
    b.model = model_spec().map(str::to_string);
    b.view.probe = Some([0.4, 0.6]);
    b.export = Some(ExportSettings {
        frames: 2 * frames::BATCH + 3,
        fps: 25.0,
        size: Some(58),
        filter: Filter::Smooth,
        side_by_side: true,
    });
    let path = dir.path().join("bookmark.json");
    b.save(&path).unwrap();
    assert_eq!(Bookmark::load(&path).unwrap(), b, "a bookmark reads back exactly");

    let cli_out = dir.path().join("cli");
    let o =
        ok(Command::new(BIN).args(["interpolate", "--keyframes", s(&path), "--out", s(&cli_out)]).output().unwrap());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("warning"), "same model, no warning");

    let loaded = Bookmark::load(&path).unwrap();
    let spec = loaded.frame_spec(dim, m.config.resolution as u32).unwrap();
    let lib_out = dir.path().join("lib");
    let cancel = AtomicBool::new(false);
    let summary = export::export(&m, &spec, 25.0, &lib_out, &cancel, |_| {}).unwrap();
    assert_eq!(summary.frames, 2 * frames::BATCH + 3);
    assert_eq!(summary.dimensions, (2 * 58 + frames::DIVIDER, 58));

    let (a, b) = (pngs(&cli_out), pngs(&lib_out));
    assert_eq!(a.len(), 2 * frames::BATCH + 3);
    assert!(a == b, "CLI and library frames differ");
    // Side by side: the divider sits between the panes, labels top-left.
    let img = image::load_from_memory(&a[0].1).unwrap().to_rgb8();
    assert_eq!(img.get_pixel(58, 30).0, [96, 96, 104]);
    assert_eq!(img.get_pixel(59, 30).0, [96, 96, 104]);
    let lit = |x0: u32| {
        (x0..x0 + 30).flat_map(|x| (0..12).map(move |y| (x, y))).any(|(x, y)| img.get_pixel(x, y).0 == [240; 3])
    };
    assert!(lit(0) && lit(60), "both panes are labelled");
}

#[test]
fn bookmark_latents_round_trip_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let seeds: Vec<u64> = (0..256).collect();
    let mut b = Bookmark::from_seeds("0123456789abcdef", 512, &seeds, Mode::Lerp);
    // Awkward values too: subnormals, extremes, values near rounding edges.
    b.anchors[0].z = (0..512u32)
        .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0x7f7f_ffff) * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    b.anchors[1].z[..4].copy_from_slice(&[f32::MIN_POSITIVE, f32::MAX, 1e-45, -0.0]);
    let path = dir.path().join("b.json");
    b.save(&path).unwrap();
    let back = Bookmark::load(&path).unwrap();
    for (x, y) in b.anchors.iter().zip(&back.anchors) {
        let bits = |z: &[f32]| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x.z), bits(&y.z));
    }
    // Hand-written bookmarks may give seeds only; bad ones name the problem.
    let hand = dir.path().join("hand.json");
    std::fs::write(&hand, r#"{"version":1,"model_hash":"x","anchors":[{"seed":1},{"seed":2}]}"#).unwrap();
    let h = Bookmark::load(&hand).unwrap();
    assert_eq!(h.latents(16).unwrap()[1], latent::from_seed(2, 16, Prior::Sphere));
    std::fs::write(&hand, r#"{"version":1,"model_hash":"x","anchors":[{"seed":1}]}"#).unwrap();
    let e = Bookmark::load(&hand).unwrap_err().to_string();
    assert!(e.contains("hand.json") && e.contains("two anchors"), "{e}");
    assert!(h.latents(16).is_ok() && back.latents(16).is_err(), "a 512-d bookmark does not fit a 16-d model");
}

#[test]
fn explicit_flags_override_the_bookmark() {
    let m = model();
    let dir = tempfile::tempdir().unwrap();
    let b = Bookmark::from_seeds("not-this-model", m.config.z_dim, &[1, 2], Mode::Slerp);
    let path = dir.path().join("b.json");
    b.save(&path).unwrap();
    let lat = dir.path().join("lat.json");
    let out = dir.path().join("o.gif");
    let o = ok(interpolate(&[
        "--keyframes",
        s(&path),
        "--frames",
        "5",
        "--mode",
        "lerp",
        "--size",
        "28",
        "--out",
        s(&out),
        "--latents-out",
        s(&lat),
    ]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"), "a model hash mismatch is reported");
    let z = read_latents(&lat);
    assert_eq!(z.len(), 5);
    assert_eq!(z[2], latent::lerp(&b.anchors[0].z, &b.anchors[1].z, 0.5));
    let both = interpolate(&["--keyframes", s(&path), "--seeds", "1,2", "--out", s(&out)]);
    assert!(!both.status.success(), "--seeds and --keyframes conflict");
}

/// Frames per second for a 10-second, 512x512, 30 fps loop, from latents to
/// the finished file. Prints, does not assert. Ignored by default (it takes
/// a while and other tests running beside it would skew it): run with
/// `cargo test --release --test export -- --ignored --nocapture measure`,
/// optionally with `GANSCOPE_MEASURE_MODEL=MODEL`.
#[test]
#[ignore]
fn measure_ten_second_512_loop() {
    let m = match std::env::var("GANSCOPE_MEASURE_MODEL") {
        Ok(p) => ganscope::cli::load_model(Some(&p), &candle_core::Device::Cpu).expect("GANSCOPE_MEASURE_MODEL"),
        Err(_) => model(),
    };
    let dir = tempfile::tempdir().unwrap();
    let dim = m.config.z_dim;
    let spec = FrameSpec {
        keys: (0..4).map(|s| latent::from_seed(s, dim, Prior::Sphere)).collect(),
        frames: 300,
        mode: Mode::Slerp,
        ease: Ease::Linear,
        looped: true,
        side_by_side: false,
        size: 512,
        filter: Filter::Nearest,
        class: None,
    };
    let c = &m.config;
    eprintln!(
        "model {} ({}x{}x{}, g_width {}, z_dim {}), {} rayon threads",
        m.hash,
        c.channels,
        c.resolution,
        c.resolution,
        c.g_width,
        c.z_dim,
        rayon::current_num_threads()
    );
    for name in ["loop.mp4", "loop.gif"] {
        let out: PathBuf = dir.path().join(name);
        let t = Instant::now();
        let sum = export::export(&m, &spec, 30.0, &out, &AtomicBool::new(false), |_| {}).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&out).unwrap().len();
        eprintln!(
            "measure: {name}: 300 frames 512x512 in {secs:.2} s = {:.1} frames/s ({:.1}x real time), {} KiB",
            300.0 / secs,
            10.0 / secs,
            bytes / 1024
        );
        assert_eq!(sum.frames, 300);
    }
}
