//! Headless GUI tests of the latent explorer: egui_kittest drives the real
//! `ExplorerApp` and renders its frames with wgpu (Mesa's lavapipe here),
//! paint callbacks included, so the pixels read back are the ones a user
//! would see. The app's worker runs the embedded default model on the CPU;
//! tests step frames until the app reports no outstanding request.
//!
//! Run: `cargo test --release --test gui_explorer` (needs Mesa's Vulkan
//! driver: `apt-get install mesa-vulkan-drivers libvulkan1`). Vulkan is
//! pinned unless `WGPU_BACKEND` says otherwise, as in CI.
//! The timings: `cargo test --release --test gui_explorer -- --ignored --nocapture`.
//! `GANSCOPE_TEST_MODEL=PATH` runs them on another model than the embedded one.

#![cfg(feature = "gui")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Pos2, Rect, pos2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use ganscope::app::{ExplorerApp, View};
use ganscope::worker::{Command, Event, Generate, Target};
use image::RgbaImage;

mod common;
use common::{Dropped, builder};

/// Longest wait for the worker (model load + first images on a slow CPU).
const WAIT: Duration = Duration::from_secs(120);

/// The model under test: the embedded default, or `GANSCOPE_TEST_MODEL`.
fn model_spec() -> Option<String> {
    std::env::var("GANSCOPE_TEST_MODEL").ok().filter(|s| !s.is_empty())
}

/// The app on the default model, with wgpu.
fn explorer() -> Harness<'static, ExplorerApp> {
    let mut h = builder().build_eframe(|cc| {
        ExplorerApp::new(&cc.egui_ctx, cc.wgpu_render_state.as_ref(), model_spec()).expect("app starts")
    });
    settle(&mut h);
    assert!(h.state().model().is_some(), "the default model loaded: {:?}", h.state().last_error());
    h
}

/// Steps frames until the app has no outstanding load or request, then
/// lets the layout settle.
fn settle(h: &mut Harness<'_, ExplorerApp>) {
    let start = Instant::now();
    loop {
        h.step();
        if h.state().is_idle() {
            break;
        }
        assert!(start.elapsed() < WAIT, "the worker did not answer within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    h.run_ok();
}

/// Drags with the primary button from `from` to `to` (screen points).
fn drag(h: &mut Harness<'_, ExplorerApp>, from: Pos2, to: Pos2) {
    h.hover_at(from);
    h.drag_at(from);
    for k in 1..=4 {
        h.hover_at(from + (to - from) * (k as f32 / 4.0));
    }
    h.drop_at(to);
    h.step();
}

/// Screen point of a canvas position.
fn canvas_point(h: &Harness<'_, ExplorerApp>, p: Pos2) -> Pos2 {
    h.state().canvas_point(p).expect("the canvas was drawn")
}

/// The pixels of `rect` (points = pixels at scale 1), inset by 3 px to skip borders.
fn crop(image: &RgbaImage, rect: Rect) -> Vec<[u8; 3]> {
    let r = rect.shrink(3.0);
    let mut out = Vec::new();
    for y in r.top().ceil() as u32..r.bottom().floor() as u32 {
        for x in r.left().ceil() as u32..r.right().floor() as u32 {
            let p = image.get_pixel(x, y).0;
            out.push([p[0], p[1], p[2]]);
        }
    }
    out
}

/// Standard deviation of the pixel values over all channels.
fn spread(px: &[[u8; 3]]) -> f64 {
    let vals: Vec<f64> = px.iter().flatten().map(|v| *v as f64).collect();
    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
    (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64).sqrt()
}

/// Mean absolute difference of two equally sized crops.
fn mean_diff(a: &[[u8; 3]], b: &[[u8; 3]]) -> f64 {
    assert_eq!(a.len(), b.len());
    let total: f64 = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum();
    total / (a.len() * 3) as f64
}

/// The slerp and lerp images on screen.
fn probe_pixels(h: &mut Harness<'_, ExplorerApp>) -> [Vec<[u8; 3]>; 2] {
    let [s, l] = h.state().layout().probe.expect("probe images drawn");
    let image = h.render().expect("render");
    [crop(&image, s), crop(&image, l)]
}

/// The worker's float images under the probe: slerp, lerp.
fn probe_floats(h: &Harness<'_, ExplorerApp>) -> (Vec<f32>, Vec<f32>) {
    let img = h.state().images(Target::Probe).expect("probe images received");
    let n = img.pixels.len() / 2;
    (img.pixels[..n].to_vec(), img.pixels[n..].to_vec())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn explorer_renders_an_image() {
    let mut h = explorer();
    let background = h.ctx.style_of(h.ctx.theme()).visuals.panel_fill;
    let [slerp, lerp] = probe_pixels(&mut h);
    assert!(slerp.len() > 10_000, "the image is large: {} px", slerp.len());
    for px in [&slerp, &lerp] {
        let s = spread(px);
        assert!(s > 8.0, "image region is not uniform (std {s:.1})");
        let bg = [background.r(), background.g(), background.b()];
        let on_bg = px.iter().filter(|p| **p == bg).count();
        assert!(on_bg < px.len() / 2, "image region is mostly background");
    }
    // The strip is drawn too.
    let strip = h.state().layout().strip.expect("strip drawn");
    let image = h.render().expect("render");
    assert!(spread(&crop(&image, strip)) > 8.0);
}

#[test]
fn dragging_the_probe_changes_the_slerp_image() {
    let mut h = explorer();
    let [before, _] = probe_pixels(&mut h);
    let id_before = h.state().images(Target::Probe).map(|i| i.request_id);
    let from = canvas_point(&h, h.state().probe());
    let to = canvas_point(&h, pos2(0.25, 0.3));
    drag(&mut h, from, to);
    settle(&mut h);
    let p = h.state().probe();
    assert!((p.x - 0.25).abs() < 0.01 && (p.y - 0.3).abs() < 0.01, "probe followed the drag: {p:?}");
    assert_ne!(h.state().images(Target::Probe).map(|i| i.request_id), id_before);
    let [after, _] = probe_pixels(&mut h);
    let d = mean_diff(&before, &after);
    assert!(d > 2.0, "the slerp image changed on screen (mean diff {d:.2})");
    let t = format!("t = {:.2}", (p.x - 0.1) / 0.8);
    assert!(h.query_all_by_label_contains(&t).next().is_some(), "{t} is shown");
}

#[test]
fn slerp_and_lerp_differ_mid_path_and_agree_at_anchors() {
    let mut h = explorer();
    // Default: two anchors, probe half-way.
    let (s, l) = probe_floats(&h);
    let mid = max_abs_diff(&s, &l);
    assert!(mid > 0.02, "slerp and lerp differ at t = 0.5 (max diff {mid})");
    let [ps, pl] = probe_pixels(&mut h);
    let differing = ps.iter().zip(&pl).filter(|(a, b)| a.iter().zip(b.iter()).any(|(x, y)| x.abs_diff(*y) > 2)).count();
    assert!(differing * 100 > ps.len(), "and on screen ({differing} of {} pixels differ)", ps.len());

    // Drag the probe past each anchor: t clamps to 0 and then 1.
    for (x, end) in [(0.0, "A"), (1.0, "B")] {
        let from = canvas_point(&h, h.state().probe());
        let to = canvas_point(&h, pos2(x, 0.95));
        drag(&mut h, from, to);
        settle(&mut h);
        let (s, l) = probe_floats(&h);
        let at = max_abs_diff(&s, &l);
        assert!(at < 1e-4, "slerp and lerp agree at anchor {end} (max diff {at})");
        let [ps, pl] = probe_pixels(&mut h);
        let d = mean_diff(&ps, &pl);
        assert!(d < 0.5, "and on screen at anchor {end} (mean diff {d:.2})");
    }
}

#[test]
fn dropping_a_bad_model_file_shows_an_error_and_keeps_the_model() {
    let mut h = explorer();
    let hash = h.state().model().map(|m| m.hash.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.safetensors");
    std::fs::write(&path, b"this is not a safetensors file, just garbage bytes").expect("write");
    h.input_mut().dropped_files.push(Arc::new(Dropped(path)));
    settle(&mut h);
    let error = h.state().last_error().expect("an error is shown").to_string();
    assert!(error.contains("broken.safetensors"), "the error names the file: {error}");
    assert_eq!(h.state().model().map(|m| m.hash.clone()), hash, "the model stays");
    assert!(h.query_by_label_contains("broken.safetensors").is_some(), "the error is on screen");
    // The explorer still works on the old model.
    let (s, l) = probe_floats(&h);
    assert!(max_abs_diff(&s, &l) > 0.02);
}

#[test]
fn clicking_a_grid_sample_adds_an_anchor() {
    let mut h = explorer();
    h.get_by_label("Grid").click();
    settle(&mut h);
    assert_eq!(h.state().view(), View::Grid);
    let grid = h.state().images(Target::Grid).expect("grid images");
    assert_eq!(grid.count, 64);
    let rect = h.state().layout().grid.expect("grid drawn");
    let image = h.render().expect("render");
    assert!(spread(&crop(&image, rect)) > 8.0, "grid shows images");
    // Cell (row 2, col 3) is seed 19 on the first page of base 0.
    let cell = rect.width() / 8.0;
    let at = rect.min + egui::vec2(3.5 * cell, 2.5 * cell);
    h.hover_at(at);
    h.step();
    h.drag_at(at);
    h.drop_at(at);
    settle(&mut h);
    assert_eq!(h.state().view(), View::Explore);
    let anchors = h.state().anchors();
    assert_eq!(anchors.len(), 3);
    assert_eq!(anchors[2].seed, 19);
    assert_eq!(h.state().probe(), anchors[2].pos, "the probe sits on the new anchor");
}

#[test]
fn without_wgpu_the_app_shows_a_notice() {
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .build_eframe(|cc| ExplorerApp::new(&cc.egui_ctx, None, model_spec()).expect("app starts"));
    settle(&mut h);
    assert!(h.state().model().is_some());
    assert!(h.state().images(Target::Probe).is_some(), "images are still generated");
    assert!(h.state().layout().probe.is_some(), "the layout holds (a notice replaces the images)");
}

/// Timings for BENCHMARKS.md: probe move to images received, and grid refresh.
#[test]
#[ignore = "prints timings; run with --ignored --nocapture"]
fn measure_latency() {
    let worker = ganscope::worker::spawn(Box::new(|| {})).expect("worker");
    worker.send(Command::LoadModel(model_spec()));
    let Some(Event::ModelLoaded(info)) = worker.recv_timeout(WAIT) else { panic!("model did not load") };
    let dim = info.z_dim;
    let a = ganscope::latent::from_seed(1, dim, ganscope::latent::Prior::Sphere);
    let b = ganscope::latent::from_seed(2, dim, ganscope::latent::Prior::Sphere);
    let mut id = 0;
    let mut time = |target: Target, latents: Vec<f32>, count: usize| {
        id += 1;
        let start = Instant::now();
        worker.send(Command::Generate(Generate {
            request_id: id,
            target,
            latents,
            count,
            class: None,
            dropout_seed: None,
        }));
        match worker.recv_timeout(WAIT) {
            Some(Event::Images(img)) => (start.elapsed(), img.generate_time),
            other => panic!("unexpected {other:?}"),
        }
    };
    let stats = |name: &str, mut v: Vec<(Duration, Duration)>| {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = v[v.len() / 2];
        let p90 = v[v.len() * 9 / 10];
        let gen_median = {
            let mut g: Vec<Duration> = v.iter().map(|x| x.1).collect();
            g.sort();
            g[g.len() / 2]
        };
        println!(
            "{name}: round trip median {:.2} ms, p90 {:.2} ms; generator median {:.2} ms ({} runs)",
            ms(median.0),
            ms(p90.0),
            ms(gen_median),
            v.len()
        );
    };
    println!(
        "model {} ({}x{}x{}, z {dim}) on {}",
        info.name, info.resolution, info.resolution, info.channels, info.device
    );
    for _ in 0..5 {
        time(Target::Probe, [a.clone(), b.clone()].concat(), 2);
    }
    let one: Vec<_> =
        (0..100).map(|k| time(Target::Probe, ganscope::latent::slerp(&a, &b, k as f32 / 100.0), 1)).collect();
    stats("probe, 1 image", one);
    let two: Vec<_> = (0..100)
        .map(|k| {
            let t = k as f32 / 100.0;
            time(Target::Probe, [ganscope::latent::slerp(&a, &b, t), ganscope::latent::lerp(&a, &b, t)].concat(), 2)
        })
        .collect();
    stats("probe, slerp + lerp (what a probe move sends)", two);
    let grid: Vec<f32> =
        (0..64).flat_map(|s| ganscope::latent::from_seed(s, dim, ganscope::latent::Prior::Sphere)).collect();
    let grids: Vec<_> = (0..20).map(|_| time(Target::Grid, grid.clone(), 64)).collect();
    stats("grid, 64 images", grids);

    // Through the GUI: a drag event to the frame that shows the new probe
    // images (lavapipe renders on the CPU, so this includes software rendering).
    let mut h = explorer();
    let mut frames = Vec::new();
    let mut received = Vec::new();
    for k in 0..20 {
        let id = h.state().images(Target::Probe).map(|i| i.request_id);
        let x = if k % 2 == 0 { 0.3 } else { 0.7 };
        let from = canvas_point(&h, h.state().probe());
        let to = canvas_point(&h, pos2(x, 0.5));
        let start = Instant::now();
        h.hover_at(from);
        h.drag_at(from);
        h.hover_at(to);
        loop {
            h.step();
            if h.state().images(Target::Probe).map(|i| i.request_id) != id {
                break;
            }
        }
        received.push(start.elapsed());
        let _ = h.render();
        frames.push(start.elapsed());
        h.drop_at(to);
        settle(&mut h);
    }
    frames.sort();
    received.sort();
    println!(
        "GUI: drag event -> new probe images in the app: median {:.1} ms (egui frames, no rendering)",
        received[received.len() / 2].as_secs_f64() * 1e3
    );
    println!(
        "GUI: drag event -> frame rendered: median {:.1} ms (lavapipe software rendering, 1280x800)",
        frames[frames.len() / 2].as_secs_f64() * 1e3
    );
}

/// Writes what the harness renders of both views to `target/gui-shots/`,
/// to look at without a display.
#[test]
#[ignore = "writes PNGs for a human to look at"]
fn render_views_to_png() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/gui-shots");
    std::fs::create_dir_all(&dir).expect("create target/gui-shots");
    let mut h = explorer();
    h.render().expect("render").save(dir.join("explore.png")).expect("save");
    h.get_by_label("Add anchor").click();
    settle(&mut h);
    let from = canvas_point(&h, h.state().probe());
    let to = canvas_point(&h, pos2(0.45, 0.35));
    drag(&mut h, from, to);
    settle(&mut h);
    h.render().expect("render").save(dir.join("explore-3-anchors.png")).expect("save");
    h.get_by_label("Grid").click();
    settle(&mut h);
    h.render().expect("render").save(dir.join("grid.png")).expect("save");
    let bad = dir.join("broken.safetensors");
    std::fs::write(&bad, b"garbage").expect("write");
    h.input_mut().dropped_files.push(Arc::new(Dropped(bad)));
    settle(&mut h);
    h.render().expect("render").save(dir.join("error.png")).expect("save");
    println!("wrote {}", dir.display());
}
