//! The paint callback: `prepare` uploads the batch if its key changed and
//! writes the view's uniforms; `paint` draws one quad per image.

use eframe::egui;
use egui_wgpu::{CallbackResources, CallbackTrait, ScreenDescriptor, wgpu};

use super::ImageSource;
use super::pipeline::ViewUniform;
use super::texture_cache::TextureCache;

/// One draw of a batch into the callback's rect. Carries plain data only;
/// the GPU objects live in the [`TextureCache`].
pub struct DisplayCallback {
    /// Display slot (one texture per slot).
    pub slot: &'static str,
    /// What to show.
    pub source: ImageSource,
    /// Layout and colour handling (`srgb_target` is filled in `prepare`).
    pub uniform: ViewUniform,
    /// Bilinear instead of nearest filtering.
    pub smooth: bool,
}

impl CallbackTrait for DisplayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(cache) = resources.get_mut::<TextureCache>() {
            let uniform = ViewUniform { srgb_target: u32::from(cache.pipeline.srgb_target), ..self.uniform };
            cache.update(device, queue, self.slot, &self.source, uniform);
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(cache) = resources.get::<TextureCache>() else {
            return;
        };
        let Some(entry) = cache.get(self.slot) else {
            return;
        };
        pass.set_pipeline(&cache.pipeline.pipeline);
        pass.set_bind_group(0, if self.smooth { &entry.smooth } else { &entry.nearest }, &[]);
        pass.draw(0..6, 0..self.uniform.count);
    }
}
