//! One GPU texture per display slot (e.g. "probe", "strip", "grid"),
//! re-uploaded only when the slot's content key changes, plus the slot's
//! uniform buffer and its two bind groups (nearest, smooth).

use std::collections::HashMap;

use egui_wgpu::wgpu;

use super::ImageSource;
use super::convert::nchw_to_rgba_f16;
use super::pipeline::{DisplayPipeline, ViewUniform};

/// GPU state of one slot.
pub struct SlotEntry {
    /// Content key of what the texture holds.
    pub key: u64,
    /// Texture size: width, height, layers.
    size: (u32, u32, u32),
    texture: wgpu::Texture,
    uniforms: wgpu::Buffer,
    /// Bind group with the nearest sampler.
    pub nearest: wgpu::BindGroup,
    /// Bind group with the smooth sampler.
    pub smooth: wgpu::BindGroup,
}

/// The display pipeline and every slot's texture.
pub struct TextureCache {
    /// Shared pipeline objects.
    pub pipeline: DisplayPipeline,
    slots: HashMap<&'static str, SlotEntry>,
    /// Number of texture uploads so far (for tests and diagnostics).
    pub uploads: u64,
}

impl TextureCache {
    /// An empty cache around a pipeline.
    pub fn new(pipeline: DisplayPipeline) -> Self {
        Self { pipeline, slots: HashMap::new(), uploads: 0 }
    }

    /// The slot's entry, if it has been filled.
    pub fn get(&self, slot: &str) -> Option<&SlotEntry> {
        self.slots.get(slot)
    }

    /// Makes `slot` hold `source` (uploading only when its key changed or
    /// the slot is new) and writes the view's uniforms.
    pub fn update(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        slot: &'static str,
        source: &ImageSource,
        uniform: ViewUniform,
    ) {
        let size = (source.width as u32, source.height as u32, source.count.max(1) as u32);
        let fresh = match self.slots.get(slot) {
            Some(e) => e.size != size,
            None => true,
        };
        if fresh {
            let entry = self.create(device, slot, size, source.key);
            self.slots.insert(slot, entry);
        }
        let Some(entry) = self.slots.get_mut(slot) else {
            return;
        };
        if fresh || entry.key != source.key {
            let bytes = nchw_to_rgba_f16(&source.pixels, source.count, source.channels, source.height, source.width);
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &entry.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &bytes,
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some(size.0 * 8),
                    rows_per_image: Some(size.1),
                },
                wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: size.2 },
            );
            entry.key = source.key;
            self.uploads += 1;
        }
        queue.write_buffer(&entry.uniforms, 0, bytemuck::bytes_of(&uniform));
    }

    /// A new texture, uniform buffer and bind groups for a slot.
    fn create(&self, device: &wgpu::Device, slot: &str, size: (u32, u32, u32), key: u64) -> SlotEntry {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some(slot),
            size: wgpu::Extent3d { width: size.0, height: size.1, depth_or_array_layers: size.2 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba16Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(slot),
            size: std::mem::size_of::<ViewUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = |sampler: &wgpu::Sampler| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(slot),
                layout: &self.pipeline.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: uniforms.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&view) },
                    wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::Sampler(sampler) },
                ],
            })
        };
        let nearest = bind(&self.pipeline.nearest);
        let smooth = bind(&self.pipeline.smooth);
        SlotEntry { key, size, texture, uniforms, nearest, smooth }
    }
}
