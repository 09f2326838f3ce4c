//! Helpers shared by the GUI tests: a kittest harness on the real app,
//! waiting on its background threads, and files dropped on the window.
//!
//! Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::{Harness, HarnessBuilder};
use egui_wgpu::wgpu;
use ganscope::app::ExplorerApp;

/// Longest wait for a model load, a training thread or an export.
pub const WAIT: Duration = Duration::from_secs(180);

/// A 1280x800 harness whose wgpu instance uses Vulkan unless `WGPU_BACKEND` is set.
pub fn builder() -> HarnessBuilder<ExplorerApp> {
    let mut setup = egui_kittest::wgpu::default_wgpu_setup();
    if std::env::var_os("WGPU_BACKEND").is_none()
        && let egui_wgpu::WgpuSetup::CreateNew(create) = &mut setup
    {
        create.instance_descriptor.backends = wgpu::Backends::VULKAN;
    }
    Harness::builder().with_size(egui::vec2(1280.0, 800.0)).wgpu_setup(setup)
}

/// The app on `model_spec`, with wgpu, once its first load is answered.
pub fn open_app(model_spec: String) -> Harness<'static, ExplorerApp> {
    let mut h = builder().build_eframe(move |cc| {
        ExplorerApp::new(&cc.egui_ctx, cc.wgpu_render_state.as_ref(), Some(model_spec)).expect("app starts")
    });
    wait(&mut h, "the model loads", |a| a.is_idle());
    assert!(h.state().model().is_some(), "the model loaded: {:?}", h.state().last_error());
    h
}

/// Steps frames until `done` holds, then one more.
pub fn wait(h: &mut Harness<'_, ExplorerApp>, what: &str, done: impl Fn(&ExplorerApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed() < WAIT, "timed out waiting until {what}; error: {:?}", h.state().last_error());
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    h.step();
}

/// A file "dropped" on the window.
#[derive(Debug)]
pub struct Dropped(pub PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}
