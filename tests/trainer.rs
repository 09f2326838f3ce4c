//! The trainer: each trick changes what it does, resume is exact, a short
//! real run learns, and the health monitor fires on planted failures.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use ganscope::data::{self, Dataset, LoadOptions};
use ganscope::gan::config::{NormKind, Upsample};
use ganscope::gan::{Pass, model_file};
use ganscope::train::config::LossKind;
use ganscope::train::health::AlarmKind;
use ganscope::train::trainer::StepStats;
use ganscope::train::{Session, TrainConfig, Trainer};

fn digits() -> Arc<Dataset> {
    static DATA: std::sync::OnceLock<Arc<Dataset>> = std::sync::OnceLock::new();
    DATA.get_or_init(|| {
        let opts = LoadOptions { resolution: 28, channels: 1, background: [0, 0, 0] };
        Arc::new(data::load("builtin:digits", &opts).expect("builtin digits"))
    })
    .clone()
}

/// A tiny 28x28 grey model that steps in milliseconds.
fn tiny() -> TrainConfig {
    let mut c = TrainConfig { batch_size: 8, steps: 1000, log_every: 1, ..TrainConfig::default() };
    c.model.resolution = 28;
    c.model.channels = 1;
    c.model.g_width = 8;
    c.model.d_width = 8;
    c.model.z_dim = 16;
    c
}

fn weights(t: &Trainer) -> Vec<f32> {
    t.sampling_tensors().iter().flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

#[test]
fn instance_noise_decays_to_zero_on_schedule() {
    let cfg = TrainConfig { instance_noise: 0.2, instance_noise_steps: 100, ..tiny() };
    let t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    assert_eq!(t.noise_at(0), 0.2);
    assert!((t.noise_at(50) - 0.1).abs() < 1e-6);
    assert_eq!(t.noise_at(100), 0.0);
    assert_eq!(t.noise_at(5000), 0.0);
}

#[test]
fn replayed_fakes_reach_d_and_d_steps_per_g_counts() {
    let cfg = TrainConfig { replay_size: 64, replay_fraction: 0.5, d_steps_per_g: 3, ..tiny() };
    let mut t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    let first = t.step().unwrap();
    // The buffer fills during the first D step, so later D steps replay.
    assert_eq!(first.replayed, 4, "half of a batch of 8 replayed in the last D step");
    let no_replay = TrainConfig { replay_size: 0, ..tiny() };
    let mut u = Trainer::new(no_replay, digits(), &Device::Cpu).unwrap();
    assert_eq!(u.step().unwrap().replayed, 0);
    // Three real batches were drawn for one G step.
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Session::create(
        TrainConfig { d_steps_per_g: 3, steps: 2, ..tiny() },
        digits(),
        &Device::Cpu,
        &tmp.path().join("run"),
    )
    .unwrap();
    s.advance().unwrap();
    s.advance().unwrap();
    let dir = s.dir().to_path_buf();
    let meta = std::fs::read(dir.join("checkpoint.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&meta[..4096.min(meta.len())]).to_string();
    assert!(text.contains(r#"\"batches_drawn\":6"#), "2 G steps x 3 D steps: {}", &text[..text.len().min(400)]);
}

#[test]
fn label_flips_reach_the_step() {
    let cfg = TrainConfig { label_flip: 0.5, ..tiny() };
    let mut t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    let flips: usize = (0..4).map(|_| t.step().unwrap().flips).sum();
    // 4 steps x 16 targets at p = 0.5: 32 expected; [12, 52] is over 5 sigma.
    assert!((12..=52).contains(&flips), "{flips}");
    let mut u = Trainer::new(TrainConfig { label_flip: 0.0, ..tiny() }, digits(), &Device::Cpu).unwrap();
    assert_eq!(u.step().unwrap().flips, 0);
}

#[test]
fn dropout_stays_on_at_sampling_when_asked() {
    let mut cfg = tiny();
    cfg.model.g_dropout = 0.5;
    cfg.model.g_dropout_layers = 2;
    let t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.safetensors");
    t.export_model(&path).unwrap();
    let model = model_file::load(&path, &Device::Cpu).unwrap();
    let z = ganscope::latent::from_seed(1, 16, ganscope::latent::Prior::Sphere);
    let off1 = model.generate(&z, None, None).unwrap();
    let off2 = model.generate(&z, None, None).unwrap();
    assert_eq!(off1, off2, "without dropout sampling is deterministic");
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let on1 = model.generate(&z, None, Some(&mut rng)).unwrap();
    let on2 = model.generate(&z, None, Some(&mut rng)).unwrap();
    assert_ne!(on1, off1, "dropout on changes the image");
    assert_ne!(on1, on2, "fresh masks each time");
}

#[test]
fn conditional_ac_gan_head_learns_the_labels() {
    let cfg = TrainConfig { conditional: true, batch_size: 32, steps: 60, lr_d: 1e-3, ..tiny() };
    let mut t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    assert_eq!(t.model_config().num_classes, 10);
    let acc =
        |t: &mut Trainer, n: usize| (0..n).map(|_| t.step().unwrap().class_accuracy.unwrap()).sum::<f32>() / n as f32;
    let before = acc(&mut t, 5);
    for _ in 0..40 {
        t.step().unwrap();
    }
    let after = acc(&mut t, 10);
    assert!(after > before + 0.2 && after > 0.4, "class accuracy on reals {before} -> {after}");
}

#[test]
fn every_loss_and_architecture_choice_trains_finitely() {
    let mut variants = Vec::new();
    for loss in [LossKind::Nonsaturating, LossKind::Minimax, LossKind::Hinge, LossKind::Wasserstein] {
        variants.push(TrainConfig { loss, ..tiny() });
    }
    for up in [Upsample::PixelShuffle, Upsample::NearestConv] {
        let mut c = tiny();
        c.model.upsample = up;
        c.model.downsample = ganscope::gan::config::Downsample::AvgPool;
        variants.push(c);
    }
    for norm in [NormKind::Instance, NormKind::Pixel, NormKind::None] {
        let mut c = tiny();
        c.model.g_norm = norm;
        c.model.d_norm = norm;
        c.model.spectral_norm = true;
        c.model.minibatch_stddev = true;
        c.model.g_layer_noise = 0.1;
        variants.push(c);
    }
    for cfg in variants {
        let what = format!("{:?} {:?} {:?}", cfg.loss, cfg.model.upsample, cfg.model.g_norm);
        let mut t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
        for _ in 0..3 {
            let s = t.step().unwrap();
            assert!(
                s.d_loss.is_finite() && s.g_loss.is_finite() && s.d_grad_norm > 0.0 && s.g_grad_norm > 0.0,
                "{what}: {s:?}"
            );
        }
    }
}

#[test]
fn resume_is_exact() {
    assert_resume_is_exact(TrainConfig {
        steps: 6,
        checkpoint_every: 3,
        replay_size: 16,
        replay_fraction: 0.25,
        ..tiny()
    });
}

#[test]
fn resume_is_exact_with_the_vae_gan_encoder() {
    assert_resume_is_exact(TrainConfig { steps: 6, checkpoint_every: 3, vae_gan: true, ..tiny() });
}

#[test]
fn vae_gan_hybrid_trains_the_encoder_to_reconstruct() {
    let plain = Trainer::new(tiny(), digits(), &Device::Cpu).unwrap().step().unwrap();
    assert_eq!((plain.recon_loss, plain.kl), (None, None), "the hybrid is off by default");
    let cfg = TrainConfig { vae_gan: true, batch_size: 16, kl_weight: 0.01, ..tiny() };
    let mut t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    let recon: Vec<f32> = (0..120)
        .map(|_| {
            let s = t.step().unwrap();
            assert!(s.kl.is_some_and(f32::is_finite));
            s.recon_loss.unwrap()
        })
        .collect();
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&recon[..10]), mean(&recon[110..]));
    assert!(last < 0.75 * first, "reconstruction error {first} -> {last}");
}

fn assert_resume_is_exact(cfg: TrainConfig) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("straight"), dir.path().join("resumed"));
    let mut s = Session::create(cfg.clone(), digits(), &Device::Cpu, &a).unwrap();
    while !s.advance().unwrap().finished {}
    let straight = weights(&s.trainer);

    let mut half = Session::create(TrainConfig { steps: 3, ..cfg.clone() }, digits(), &Device::Cpu, &b).unwrap();
    while !half.advance().unwrap().finished {}
    drop(half);
    let mut rest = Session::resume(cfg, digits(), &Device::Cpu, &b).unwrap();
    assert_eq!(rest.trainer.step_count(), 3);
    while !rest.advance().unwrap().finished {}
    assert_eq!(weights(&rest.trainer), straight, "N steps == N/2 + resume + N/2");
}

#[test]
fn alarms_fire_on_a_huge_learning_rate_and_a_crippled_g() {
    let mut huge = TrainConfig { lr_d: 1.0, lr_g: 1.0, steps: 80, ..tiny() };
    huge.health.window = 20;
    let mut t = Trainer::new(huge, digits(), &Device::Cpu).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..80 {
        match t.step() {
            Ok(s) => kinds.extend(s.alarms.iter().map(|a| a.kind)),
            Err(_) => break,
        }
        if kinds.contains(&AlarmKind::NonFinite) {
            break;
        }
    }
    assert!(!kinds.is_empty(), "a learning rate of 1.0 raises an alarm");

    // A crippled G: it cannot learn (lr tiny), D learns fast and wins.
    let mut crippled = TrainConfig {
        lr_g: 1e-9,
        lr_d: 2e-3,
        instance_noise: 0.0,
        real_label: [1.0, 1.0],
        fake_label: [0.0, 0.0],
        label_flip: 0.0,
        batch_size: 16,
        ..tiny()
    };
    crippled.health.window = 20;
    let mut t = Trainer::new(crippled, digits(), &Device::Cpu).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..150 {
        kinds.extend(t.step().unwrap().alarms.iter().map(|a| a.kind));
    }
    assert!(kinds.contains(&AlarmKind::DLossZero), "D wins against a frozen G: {kinds:?}");
}

/// Distance between the mean sample and the mean real digit, and the same
/// for the fraction of dark pixels: both fall as G learns the data.
fn gap_to_data(t: &Trainer, data: &Dataset) -> f32 {
    let g = t.sampling_generator().unwrap();
    let n = 64;
    let z: Vec<f32> = (0..n as u64)
        .flat_map(|s| ganscope::latent::from_seed(1000 + s, t.model_config().z_dim, ganscope::latent::Prior::Sphere))
        .collect();
    let z = Tensor::from_vec(z, (n, t.model_config().z_dim), &Device::Cpu).unwrap();
    let fake: Vec<f32> = g.forward(&z, None, &mut Pass::eval()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let len = 28 * 28;
    let mean = |imgs: &[f32], count: usize| -> Vec<f32> {
        let mut m = vec![0f32; len];
        for img in imgs.chunks_exact(len).take(count) {
            m.iter_mut().zip(img).for_each(|(a, b)| *a += b / count as f32);
        }
        m
    };
    let (mf, mr) = (mean(&fake, n), mean(&data.images, 2000));
    (mf.iter().zip(&mr).map(|(a, b)| (a - b).powi(2)).sum::<f32>() / len as f32).sqrt()
}

#[test]
fn a_short_real_run_on_digits_learns_and_stays_quiet() {
    let cfg = TrainConfig { batch_size: 32, steps: 300, log_every: 10, ..tiny() };
    let data = digits();
    let mut t = Trainer::new(cfg, data.clone(), &Device::Cpu).unwrap();
    let before = gap_to_data(&t, &data);
    let mut alarms = Vec::new();
    for _ in 0..300 {
        let s = t.step().unwrap();
        assert!(s.d_loss.is_finite() && s.g_loss.is_finite());
        alarms.extend(s.alarms);
    }
    let after = gap_to_data(&t, &data);
    assert!(after < 0.5 * before, "mean-image RMS gap to the data {before} -> {after}");
    assert!(alarms.is_empty(), "default recipe raised {alarms:?}");
}

#[test]
fn d_never_sees_a_mixed_real_fake_batchnorm_batch() {
    let mut cfg = tiny();
    cfg.model.d_norm = NormKind::Batch;
    let t = Trainer::new(cfg, digits(), &Device::Cpu).unwrap();
    let dev = Device::Cpu;
    let real = Tensor::rand(-1f32, 1f32, (8, 1, 28, 28), &dev).unwrap();
    let fake_a = Tensor::rand(-1f32, 1f32, (8, 1, 28, 28), &dev).unwrap();
    let fake_b = (Tensor::rand(-1f32, 1f32, (8, 1, 28, 28), &dev).unwrap() * 0.1).unwrap();
    let (ra, fa) = t.judge(&real, None, &fake_a, None).unwrap();
    let (rb, fb) = t.judge(&real, None, &fake_b, None).unwrap();
    let v = |t: &Tensor| t.to_vec1::<f32>().unwrap();
    assert_eq!(v(&ra.logits), v(&rb.logits), "the reals' verdict does not depend on the fakes");
    assert_ne!(v(&fa.logits), v(&fb.logits));
}

#[test]
fn roll_back_returns_to_the_last_healthy_checkpoint_and_the_record_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let cfg = TrainConfig { checkpoint_every: 4, sample_every: 100, ..tiny() };
    let mut s = Session::create(cfg, digits(), &Device::Cpu, &dir).unwrap();
    for _ in 0..4 {
        s.advance().unwrap();
    }
    let at_4 = weights(&s.trainer);
    for _ in 0..3 {
        s.advance().unwrap();
    }
    s.set_option("lr_d", "0.0001").unwrap();
    assert_eq!(s.roll_back().unwrap(), 4, "back to the checkpoint of step 4");
    assert_eq!(weights(&s.trainer), at_4);
    assert_eq!(s.trainer.config().lr_d, 0.0001, "the settings stay");
    s.advance().unwrap();
    let record = ganscope::train::history::read(&dir).unwrap();
    let steps: Vec<u64> = record.curves.points.iter().map(|p| p.step).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5], "steps 5..7 before the rollback are dropped");
    assert_eq!(record.curves.settings.len(), 1);
}

/// The trainer's frozen G (which makes the D step's fakes) is a view of G's
/// variables: after they change, it computes what a copy of the new weights
/// does, for every upsampling kind (a nearest-conv layer once kept its
/// first folded kernel for good).
#[test]
fn frozen_views_follow_their_variables() {
    use ganscope::gan::Generator;
    use ganscope::gan::params::{FreshParams, LoadedParams};
    use rand::SeedableRng;
    let device = Device::Cpu;
    for up in [Upsample::ConvTranspose, Upsample::PixelShuffle, Upsample::NearestConv] {
        let mut model = tiny().model;
        model.upsample = up;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut p = FreshParams::new(&mut rng, &device);
        Generator::new(&model, &mut p).unwrap();
        let vars = p.vars;
        let views = vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().detach())).collect();
        let frozen = Generator::new(&model, &mut LoadedParams::views(views, &device)).unwrap();
        let z = Tensor::randn(0f32, 1.0, (1, model.z_dim), &device).unwrap();
        let sample = |g: &Generator| g.forward(&z, None, &mut Pass::eval()).unwrap().flatten_all().unwrap();
        let before = sample(&frozen);
        for (_, v, _) in &vars {
            v.set(&(v.as_tensor() * 1.5).unwrap()).unwrap();
        }
        let copies = vars.iter().map(|(n, v, _)| (n.clone(), v.as_tensor().copy().unwrap())).collect();
        let fresh = Generator::new(&model, &mut LoadedParams::new(copies, &device)).unwrap();
        let (after, want) = (sample(&frozen), sample(&fresh));
        let diff = |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff(&before, &want) > 1e-3, "{up:?}: scaling the weights changed nothing");
        assert!(diff(&after, &want) < 1e-5, "{up:?}: the view kept its old weights");
    }
}

/// Everything a run holds after `steps` G steps of `cfg` on a pool of
/// `threads`: each step's stats and every tensor of its checkpoint (G, D
/// with BatchNorm's running statistics, optimizer moments, replay buffer).
fn trained_on(threads: usize, cfg: &TrainConfig, steps: usize) -> (Vec<StepStats>, Vec<(String, Vec<f32>)>) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    let mut t = Trainer::new(cfg.clone(), digits(), &Device::Cpu).unwrap();
    let stats = (0..steps).map(|_| pool.install(|| t.step()).unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    t.save_checkpoint(dir.path()).unwrap();
    let saved = candle_core::safetensors::load(dir.path().join("checkpoint.safetensors"), &Device::Cpu).unwrap();
    let mut tensors: Vec<_> = saved
        .into_iter()
        .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (stats, tensors)
}

/// A run on two threads trains as one on one thread does: the ops share
/// out their work by thread count, and only their rounding may differ.
#[test]
fn two_threads_train_as_one_does() {
    let mut cfg =
        TrainConfig { replay_size: 16, replay_fraction: 0.5, instance_noise: 0.1, d_steps_per_g: 2, ..tiny() };
    // Adam moves a parameter whose gradient BatchNorm cancels (the bias
    // before it) by about the learning rate per step, whatever rounding noise
    // that gradient holds: tiny rates keep such moves below the tolerance.
    (cfg.lr_g, cfg.lr_d) = (1e-6, 1e-6);
    cfg.model.d_norm = NormKind::Batch;
    cfg.model.g_dropout = 0.3;
    let (one, one_tensors) = trained_on(1, &cfg, 3);
    let (two, two_tensors) = trained_on(2, &cfg, 3);
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()));
    for (a, b) in one.iter().zip(&two) {
        let pairs = [(a.d_loss, b.d_loss), (a.g_loss, b.g_loss), (a.d_real, b.d_real), (a.d_fake, b.d_fake)];
        assert!(pairs.iter().all(|&(x, y)| close(x, y)), "step {}: {a:?} vs {b:?}", a.step);
        assert_eq!((a.replayed, a.flips), (b.replayed, b.flips));
    }
    assert_eq!(one_tensors.len(), two_tensors.len());
    for ((name, a), (_, b)) in one_tensors.iter().zip(&two_tensors) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{name} differs by {worst}");
    }
    assert!(one_tensors.iter().any(|(name, _)| name.contains("running_mean")), "D's BatchNorm statistics are compared");
}
