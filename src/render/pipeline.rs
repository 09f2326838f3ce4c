//! The display pipeline: the WGSL shader, its bind-group layout and the two
//! samplers (nearest and smooth). Created once per wgpu device and kept in
//! egui-wgpu's callback resources.

use egui_wgpu::wgpu;

/// The shader source, compiled into the binary.
pub const DISPLAY_WGSL: &str = include_str!("../../shaders/display.wgsl");

/// Per-view uniforms; mirrors `struct View` in `display.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ViewUniform {
    /// Grid columns.
    pub cols: u32,
    /// Grid rows.
    pub rows: u32,
    /// First texture layer shown.
    pub first: u32,
    /// Number of layers shown.
    pub count: u32,
    /// Gap between cells, in normalized device units (x, y).
    pub gap: [f32; 2],
    /// 1 for grey images (replicated), 3 for RGB.
    pub channels: u32,
    /// 1 when the framebuffer encodes sRGB itself.
    pub srgb_target: u32,
}

/// GPU objects shared by every displayed batch.
pub struct DisplayPipeline {
    /// The render pipeline.
    pub pipeline: wgpu::RenderPipeline,
    /// Layout of a view's bind group: uniforms, texture array, sampler.
    pub layout: wgpu::BindGroupLayout,
    /// Nearest-neighbour sampler (crisp pixels).
    pub nearest: wgpu::Sampler,
    /// Bilinear sampler (smooth).
    pub smooth: wgpu::Sampler,
    /// Whether the target format is an sRGB one.
    pub srgb_target: bool,
}

impl DisplayPipeline {
    /// Builds the pipeline for egui's render pass (no depth, no MSAA, the
    /// given colour format).
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("ganscope display"),
            source: wgpu::ShaderSource::Wgsl(DISPLAY_WGSL.into()),
        });
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ganscope display bind group layout"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<ViewUniform>() as u64),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Float { filterable: true },
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                        multisampled: false,
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 2,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("ganscope display pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("ganscope display pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target_format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = |filter: wgpu::FilterMode, label: &str| {
            device.create_sampler(&wgpu::SamplerDescriptor {
                label: Some(label),
                address_mode_u: wgpu::AddressMode::ClampToEdge,
                address_mode_v: wgpu::AddressMode::ClampToEdge,
                address_mode_w: wgpu::AddressMode::ClampToEdge,
                mag_filter: filter,
                min_filter: filter,
                ..Default::default()
            })
        };
        Self {
            pipeline,
            layout,
            nearest: sampler(wgpu::FilterMode::Nearest, "ganscope nearest"),
            smooth: sampler(wgpu::FilterMode::Linear, "ganscope smooth"),
            srgb_target: target_format.is_srgb(),
        }
    }
}
