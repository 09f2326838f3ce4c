// The CUDA kernels of src/ops (built to PTX by build.rs, loaded by
// src/ops/cuda.rs). One thread per output value, grid-stride loops, and
// 32-bit index arithmetic: the callers check that every tensor has fewer
// than 2^31 values, and 64-bit division made the patch kernels 4x slower.

// The patch matrix of a convolution and its adjoint, for src/ops/unfold.rs.
// An image batch x is (N, C, H, W); its patch matrix cols is
// (C*K*K, N*Ho*Wo), row (c, kh, kw), column (n, oh, ow). Unfold gathers one
// input value (or a zero of the padding) per patch entry; fold gathers the
// patch entries that land on one pixel, so no two threads write the same
// value and no atomics are needed.

// One grid row (blockIdx.y, striding) per input channel, a thread per
// patch column: it works out its column's pixel once and writes the
// channel's K*K patch rows there. (A thread per patch entry, which did the
// three divisions for every entry, took 4.6x as long on an H200.)
extern "C" __global__ void ganscope_unfold_f32(
    const float *x, float *cols, unsigned n, unsigned c, unsigned h, unsigned w,
    unsigned k, unsigned s, unsigned p, unsigned ho, unsigned wo) {
  const unsigned ncols = n * ho * wo, plane = ho * wo;
  for (unsigned ci = blockIdx.y; ci < c; ci += gridDim.y) {
    for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < ncols; j += blockDim.x * gridDim.x) {
      const unsigned b = j / plane, oh = j % plane / wo, ow = j % wo;
      const float *src = x + (b * c + ci) * h * w;
      float *dst = cols + ci * k * k * ncols + j;
      for (unsigned kh = 0; kh < k; ++kh) {
        // Unsigned wrap-around makes a row above or left of the image fail the bounds test.
        const unsigned ih = oh * s + kh - p;
        for (unsigned kw = 0; kw < k; ++kw) {
          const unsigned iw = ow * s + kw - p;
          dst[(kh * k + kw) * ncols] = (ih < h && iw < w) ? src[ih * w + iw] : 0.0f;
        }
      }
    }
  }
}

// One grid row per (n, c) plane of y, threads along its pixels; each visits
// only the taps whose stride lines up with its pixel, and starts from
// bias[c] unless bias is null.
extern "C" __global__ void ganscope_fold_f32(
    const float *cols, const float *bias, float *y, unsigned n, unsigned c, unsigned h, unsigned w,
    unsigned k, unsigned s, unsigned p, unsigned hi, unsigned wi) {
  const unsigned planes = n * c;
  for (unsigned plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const unsigned b = plane / c, ci = plane % c;
    for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < h * w; i += blockDim.x * gridDim.x) {
      const int yp = i / w + p, xp = i % w + p;
      float acc = bias ? bias[ci] : 0.0f;
      // kh = yp % s + j*s lands on patch row dh = yp / s - j.
      for (int kh = yp % s, dh = yp / s; kh < (int)k && dh >= 0; kh += s, --dh) {
        if (dh >= (int)hi) continue;
        for (int kw = xp % s, dw = xp / s; kw < (int)k && dw >= 0; kw += s, --dw) {
          if (dw >= (int)wi) continue;
          const unsigned row = (ci * k + kh) * k + kw;
          acc += cols[((row * n + b) * hi + dh) * wi + dw];
        }
      }
      y[plane * h * w + i] = acc;
    }
  }
}

// y (B, A, P) = x (A, B, P) with the first two axes swapped, plus bias[a]
// unless bias is null: a convolution's GEMM product (O, N, H*W) into image
// planes, and back. One grid row per output plane (b, a).
extern "C" __global__ void ganscope_swap_f32(
    const float *x, const float *bias, float *y, unsigned a, unsigned b, unsigned p) {
  for (unsigned plane = blockIdx.y; plane < a * b; plane += gridDim.y) {
    const unsigned i = plane % a, j = plane / a;
    const float add = bias ? bias[i] : 0.0f;
    for (unsigned q = blockIdx.x * blockDim.x + threadIdx.x; q < p; q += blockDim.x * gridDim.x) {
      y[plane * p + q] = x[(i * b + j) * p + q] + add;
    }
  }
}

// Pixel shuffle, for src/ops/shuffle.rs: up, x (N, 4C, H, W) into y (N, C,
// 2H, 2W) with y[n, c, 2h + i, 2w + j] = x[n, 4c + 2i + j, h, w]; down, the
// inverse. h and w are the small planes' sizes; one thread per output value.
extern "C" __global__ void ganscope_shuffle_f32(
    const float *x, float *y, unsigned total, unsigned h, unsigned w, unsigned up) {
  const unsigned hw = h * w;
  for (unsigned o = blockIdx.x * blockDim.x + threadIdx.x; o < total; o += blockDim.x * gridDim.x) {
    unsigned src;
    if (up) {
      const unsigned nc = o / (4 * hw), r = o % (4 * hw), row = r / (2 * w), col = r % (2 * w);
      src = ((4 * nc + 2 * (row % 2) + col % 2) * h + row / 2) * w + col / 2;
    } else {
      const unsigned q = o / hw, p = o % hw, nc = q / 4;
      src = (nc * 2 * h + 2 * (p / w) + q % 4 / 2) * 2 * w + 2 * (p % w) + q % 2;
    }
    y[o] = x[src];
  }
}

// Training-mode BatchNorm over x (N, C, H*W) and the LeakyReLU after it
// (slope 1: none), for src/ops/batch_norm.rs. Both kernels take the op's
// three arguments, its per-channel vectors, the output, then the sizes (M =
// N*H*W values per channel); the backward redoes the activation's mask
// from x.

// z = bn(x) = (x - mean) * gamma / sqrt(var + eps) + beta.
__device__ float bn_value(float x, float gamma, float beta, float mean, float var, float eps) {
  return (x - mean) * (gamma * rsqrtf(var + eps)) + beta;
}

// y = leaky(z)
extern "C" __global__ void ganscope_bn_apply_f32(
    const float *x, const float *gamma, const float *beta, const float *mean, const float *var,
    float *y, unsigned total, unsigned c, unsigned hw, float eps, float slope) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
    const unsigned ci = (i / hw) % c;
    const float z = bn_value(x[i], gamma[ci], beta[ci], mean[ci], var[ci], eps);
    y[i] = z > 0.0f ? z : z * slope;
  }
}

// dx = gamma * inv * (g - sum(g) / M - xhat * sum(g * xhat) / M), with g =
// dy masked by the activation, inv = 1 / sqrt(var + eps) and xhat = (x -
// mean) * inv; sum(g * xhat) is dgamma and sum(g) dbeta.
extern "C" __global__ void ganscope_bn_grad_f32(
    const float *x, const float *dy, const float *gamma, const float *beta, const float *mean,
    const float *var, const float *dgamma, const float *dbeta, float *dx, unsigned total, unsigned c,
    unsigned hw, float eps, float slope, float m) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += blockDim.x * gridDim.x) {
    const unsigned ci = (i / hw) % c;
    const float inv = rsqrtf(var[ci] + eps);
    const float xhat = (x[i] - mean[ci]) * inv;
    const float g = bn_value(x[i], gamma[ci], beta[ci], mean[ci], var[ci], eps) > 0.0f ? dy[i] : dy[i] * slope;
    dx[i] = gamma[ci] * inv * (g - dbeta[ci] / m - xhat * dgamma[ci] / m);
  }
}

// Per-channel reductions over x (N, C, P), for BatchNorm's statistics and
// parameter gradients and the convolutions' bias gradients (candle's took
// two reductions, and BatchNorm's several elementwise kernels besides).
// One block per channel (striding over channels), its threads along the
// channel's N*P values, summed in registers, then across the block. Each
// writes `rows` x C values; the arguments after x's companions are the
// output, then n, c, p.

// The sum of v over the block, in every thread; blockDim.x a multiple of
// 32, at most 1024, and every thread of the block calls it.
__device__ float block_sum(float v) {
  __shared__ float warps[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // readers of a previous call are done with warps
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x % 32 < blockDim.x / 32 ? warps[threadIdx.x % 32] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Index of value j (of N*P) of channel ch.
__device__ unsigned at(unsigned j, unsigned ch, unsigned c, unsigned p) {
  return (j / p * c + ch) * p + j % p;
}

// sums[ch * parts + part] = the sum of part blockIdx.y of channel ch's
// values (every gridDim.y-th run of blockDim.x of them): with one part the
// channel's sum; with more, partial sums that a second launch adds up.
extern "C" __global__ void ganscope_channel_sums_f32(
    const float *x, float *sums, unsigned n, unsigned c, unsigned p) {
  const unsigned stride = blockDim.x * gridDim.y;
  for (unsigned ch = blockIdx.x; ch < c; ch += gridDim.x) {
    float s = 0.0f;
    for (unsigned j = blockIdx.y * blockDim.x + threadIdx.x; j < n * p; j += stride) s += x[at(j, ch, c, p)];
    s = block_sum(s);
    if (threadIdx.x == 0) sums[ch * gridDim.y + blockIdx.y] = s;
  }
}

// parts[blockIdx.y] = the sum of squares of the block's share of x's n
// values (every gridDim.y-th run of blockDim.x): the trainer's gradient
// norm, whose parts ganscope_channel_sums_f32 then adds up.
extern "C" __global__ void ganscope_square_sums_f32(const float *x, float *parts, unsigned n) {
  float s = 0.0f;
  for (unsigned i = blockIdx.y * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.y) s += x[i] * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) parts[blockIdx.y] = s;
}

// stats = [mean; biased variance], the variance from a second pass over the
// centred values, so that a large mean does not cancel it away.
extern "C" __global__ void ganscope_channel_stats_f32(
    const float *x, float *stats, unsigned n, unsigned c, unsigned p) {
  const float m = (float)(n * p);
  for (unsigned ch = blockIdx.x; ch < c; ch += gridDim.x) {
    float s = 0.0f;
    for (unsigned j = threadIdx.x; j < n * p; j += blockDim.x) s += x[at(j, ch, c, p)];
    const float mean = block_sum(s) / m;
    float q = 0.0f;
    for (unsigned j = threadIdx.x; j < n * p; j += blockDim.x) {
      const float d = x[at(j, ch, c, p)] - mean;
      q += d * d;
    }
    q = block_sum(q);
    if (threadIdx.x == 0) {
      stats[ch] = mean;
      stats[c + ch] = q / m;
    }
  }
}

// BatchNorm's parameter gradients, sums = [dgamma; dbeta] = [sum(g * xhat);
// sum(g)], g = dy masked by the activation (as in ganscope_bn_grad_f32).
extern "C" __global__ void ganscope_bn_param_grads_f32(
    const float *x, const float *dy, const float *gamma, const float *beta, const float *mean,
    const float *var, float *sums, unsigned n, unsigned c, unsigned p, float eps, float slope) {
  for (unsigned ch = blockIdx.x; ch < c; ch += gridDim.x) {
    const float inv = rsqrtf(var[ch] + eps);
    float sg = 0.0f, sgx = 0.0f;
    for (unsigned j = threadIdx.x; j < n * p; j += blockDim.x) {
      const unsigned i = at(j, ch, c, p);
      const float g = bn_value(x[i], gamma[ch], beta[ch], mean[ch], var[ch], eps) > 0.0f ? dy[i] : dy[i] * slope;
      sg += g;
      sgx += g * (x[i] - mean[ch]);
    }
    sg = block_sum(sg);
    sgx = block_sum(sgx);
    if (threadIdx.x == 0) {
      sums[ch] = sgx * inv;
      sums[c + ch] = sg;
    }
  }
}

// Adam's update in place, for src/ops/adam.rs: the moments, then the
// parameter (the same arithmetic, in the same order, as the CPU ops).

// m = decay * m + (1 - decay) * g, with g squared for the second moment.
extern "C" __global__ void ganscope_adam_moment_f32(
    float *m, const float *g, unsigned n, float decay, float rest, unsigned square) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    const float gi = square ? g[i] * g[i] : g[i];
    m[i] = m[i] * decay + gi * rest;
  }
}

// p -= lr * (m / c1) / (sqrt(v / c2) + eps)
extern "C" __global__ void ganscope_adam_apply_f32(
    float *p, const float *m, const float *v, unsigned n, float lr, float c1, float c2, float eps) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    p[i] -= (m[i] / c1) / (sqrtf(v[i] / c2) + eps) * lr;
  }
}

// LeakyReLU and its gradient, for src/ops/activation.rs (the gradient at 0
// is `slope`, as on the CPU and in PyTorch).

extern "C" __global__ void ganscope_leaky_f32(const float *x, float *y, unsigned n, float slope) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = x[i] > 0.0f ? x[i] : x[i] * slope;  // NaN stays NaN, as on the CPU
  }
}

extern "C" __global__ void ganscope_leaky_grad_f32(
    const float *x, const float *dy, float *dx, unsigned n, float slope) {
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    dx[i] = x[i] > 0.0f ? dy[i] : dy[i] * slope;
  }
}
