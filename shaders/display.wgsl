// Display of generated tensors.
//
// The images of one batch live in the layers of a 2D-array texture
// (Rgba16Float), holding the generator's raw output in [-1, 1]. One draw
// call shows `count` consecutive layers, starting at `first`, as a grid of
// `cols` x `rows` cells filling the paint-callback viewport, with `gap`
// (in normalized device units) between cells. Each cell is two triangles,
// one instance per image.
//
// Colour: v in [-1, 1] -> (v + 1) / 2, the sRGB-encoded value the training
// images had. Grey models store their one channel in R and it is
// replicated here. When the target framebuffer is an *Srgb format the GPU
// encodes on write, so the shader decodes to linear first.

struct View {
    cols: u32,
    rows: u32,
    first: u32,
    count: u32,
    gap: vec2<f32>,
    channels: u32,
    srgb_target: u32,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var images: texture_2d_array<f32>;
@group(0) @binding(2) var image_sampler: sampler;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
    @location(1) @interpolate(flat) layer: u32,
};

@vertex
fn vs_main(@builtin(vertex_index) vertex: u32, @builtin(instance_index) instance: u32) -> VertexOut {
    // Corners of the two triangles of a quad, in [0, 1]^2 (y down).
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let corner = corners[vertex];
    let cols = max(view.cols, 1u);
    let rows = max(view.rows, 1u);
    let col = f32(instance % cols);
    let row = f32(instance / cols);
    let cell = vec2<f32>(
        (2.0 - view.gap.x * f32(cols - 1u)) / f32(cols),
        (2.0 - view.gap.y * f32(rows - 1u)) / f32(rows),
    );
    let left = -1.0 + col * (cell.x + view.gap.x);
    let top = 1.0 - row * (cell.y + view.gap.y);
    var out: VertexOut;
    out.position = vec4<f32>(left + corner.x * cell.x, top - corner.y * cell.y, 0.0, 1.0);
    out.uv = corner;
    out.layer = view.first + instance;
    return out;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let low = c / 12.92;
    let high = pow((c + vec3<f32>(0.055)) / 1.055, vec3<f32>(2.4));
    return select(high, low, c <= vec3<f32>(0.04045));
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let v = textureSample(images, image_sampler, in.uv, in.layer);
    var rgb = v.rgb;
    if (view.channels == 1u) {
        rgb = vec3<f32>(v.r);
    }
    rgb = clamp((rgb + vec3<f32>(1.0)) * 0.5, vec3<f32>(0.0), vec3<f32>(1.0));
    if (view.srgb_target == 1u) {
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb, 1.0);
}
