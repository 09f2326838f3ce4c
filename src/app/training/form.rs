//! The config form: every [`TrainConfig`] option, grouped by the GANHACKS
//! tip it implements, each with its doc comment as the tooltip.
//!
//! The form is generic over the config's TOML form: a widget is picked by
//! the value's type, and every edit goes through [`TrainConfig::set`], the
//! same validated path as `ganscope train --set`, so the form cannot build a
//! config the CLI would refuse.

use eframe::egui;
use egui::RichText;

use crate::train::TrainConfig;

/// A group of options: title, why the tips matter, the dotted keys.
type Group = (&'static str, &'static str, &'static [&'static str]);

/// The groups, in the order of a training recipe.
pub const GROUPS: &[Group] = &[
    (
        "Normalization (tips 1, 3)",
        "Images are scaled to [-1, 1] to match G's tanh; latents come from the sphere, where a Gaussian's mass lives.",
        &["prior", "background"],
    ),
    (
        "Losses (tips 2, 12)",
        "The nonsaturating loss keeps G's gradients alive early; class labels (AC-GAN) make D's job richer.",
        &["loss", "gp_weight", "conditional", "aux_weight"],
    ),
    (
        "Labels (tip 6)",
        "Soft and occasionally flipped targets keep D from becoming overconfident.",
        &["real_label", "fake_label", "label_flip"],
    ),
    (
        "Noise (tips 13, 17)",
        "Noise on D's inputs blurs the two distributions so they overlap early on; dropout in G adds randomness.",
        &["instance_noise", "instance_noise_steps", "model.g_layer_noise", "model.g_dropout", "model.g_dropout_layers"],
    ),
    (
        "Norms (tip 4)",
        "BatchNorm sees all-real and all-fake batches separately; other norms avoid batch statistics.",
        &["model.g_norm", "model.d_norm", "model.spectral_norm"],
    ),
    (
        "Architecture (tips 5, 7, 15, 16)",
        "DCGAN with LeakyReLU, no max-pooling; minibatch stddev against mode collapse; class embeddings.",
        &[
            "model.resolution",
            "model.channels",
            "model.z_dim",
            "model.g_width",
            "model.d_width",
            "model.upsample",
            "model.downsample",
            "model.d_leaky_slope",
            "model.g_leaky_slope",
            "model.minibatch_stddev",
            "model.class_embed_dim",
            "vae_gan",
            "recon_weight",
            "kl_weight",
        ],
    ),
    (
        "Optimizer (tips 8, 9, 14)",
        "Adam at 2e-4 with beta1 0.5; fixed D steps per G step (never balanced on loss thresholds, tip 11); replay of old fakes.",
        &[
            "lr_g",
            "lr_d",
            "beta1",
            "beta2",
            "d_optimizer",
            "d_steps_per_g",
            "replay_size",
            "replay_fraction",
            "ema_decay",
        ],
    ),
    (
        "Schedule",
        "Length, batch, seed, and how often the run logs, samples and checkpoints.",
        &["steps", "batch_size", "seed", "log_every", "sample_every", "checkpoint_every", "grid_size"],
    ),
    (
        "Health monitor (tip 10)",
        "The thresholds of the alarms that watch for failing training.",
        &[
            "health.window",
            "health.d_loss_floor",
            "health.grad_norm_limit",
            "health.grad_norm_steps",
            "health.d_loss_std_limit",
            "health.diversity_floor",
            "health.grace_steps",
        ],
    ),
];

/// The values offered for options with a fixed set.
const CHOICES: &[(&str, &[&str])] = &[
    ("prior", &["sphere", "gaussian"]),
    ("loss", &["nonsaturating", "minimax", "hinge", "wasserstein"]),
    ("d_optimizer", &["adam", "sgd"]),
    ("model.g_norm", NORMS),
    ("model.d_norm", NORMS),
    ("model.upsample", &["conv_transpose", "pixel_shuffle", "nearest_conv"]),
    ("model.downsample", &["strided_conv", "avg_pool"]),
    ("model.resolution", &["28", "32", "64"]),
    ("model.channels", &["1", "3"]),
];
const NORMS: &[&str] = &["batch", "instance", "pixel", "none"];

/// The value of dotted `key` in a config's TOML table.
fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    match key.split_once('.') {
        Some((section, k)) => table.get(section)?.as_table()?.get(k),
        None => table.get(key),
    }
}

/// A value as text for [`TrainConfig::set`] and for display.
fn text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Shows the form. `editable(key)` says whether a key may change now. The
/// edits are applied to `cfg`; a refused one comes back as the error.
pub fn show(ui: &mut egui::Ui, cfg: &mut TrainConfig, editable: &dyn Fn(&str) -> bool) -> Option<String> {
    let table = toml::Table::try_from(&*cfg).unwrap_or_default();
    let mut edit: Option<(&str, String)> = None;
    for (title, why, keys) in GROUPS {
        egui::CollapsingHeader::new(RichText::new(*title).strong()).default_open(false).show(ui, |ui| {
            ui.label(RichText::new(*why).weak().small());
            egui::Grid::new(title).num_columns(2).striped(true).show(ui, |ui| {
                for key in *keys {
                    let Some(value) = lookup(&table, key) else { continue };
                    let doc = TrainConfig::doc(key).unwrap_or("");
                    let when = if TrainConfig::steerable(key) {
                        "Can change mid-run (recorded in metrics.jsonl)."
                    } else {
                        "Fixed once the run starts."
                    };
                    let label = ui.label(*key).on_hover_text(format!("{doc}\n\n{when}"));
                    ui.add_enabled_ui(editable(key), |ui| {
                        if let Some(v) = widget(ui, key, value, label.id) {
                            edit = Some((key, v));
                        }
                    })
                    .response
                    .on_hover_text(format!("{doc}\n\n{when}"));
                    ui.end_row();
                }
            });
        });
    }
    let (key, value) = edit?;
    cfg.set(key, &value).err()
}

/// The widget for one value; returns the new value as TOML text when edited.
fn widget(ui: &mut egui::Ui, key: &str, value: &toml::Value, label: egui::Id) -> Option<String> {
    if let Some((_, choices)) = CHOICES.iter().find(|(k, _)| *k == key) {
        let current = text(value);
        let mut picked = current.clone();
        egui::ComboBox::from_id_salt(key)
            .selected_text(&current)
            .show_ui(ui, |ui| {
                for c in *choices {
                    ui.selectable_value(&mut picked, c.to_string(), *c);
                }
            })
            .response
            .labelled_by(label);
        return (picked != current).then_some(picked);
    }
    match value {
        toml::Value::Boolean(b) => {
            let mut b = *b;
            ui.checkbox(&mut b, "").labelled_by(label).changed().then(|| b.to_string())
        }
        toml::Value::Integer(i) => {
            let mut i = *i;
            let step = speed(i as f64);
            let drag = egui::DragValue::new(&mut i).range(0..=i64::MAX).speed(step);
            ui.add(drag).labelled_by(label).changed().then(|| i.to_string())
        }
        toml::Value::Float(f) => float(ui, *f, label).map(|f| f.to_string()),
        toml::Value::Array(items) => {
            let mut changed = false;
            let mut out: Vec<String> = Vec::new();
            if key == "background" {
                let mut rgb = [0u8; 3];
                for (c, v) in rgb.iter_mut().zip(items) {
                    *c = v.as_integer().unwrap_or(0).clamp(0, 255) as u8;
                }
                changed = ui.color_edit_button_srgb(&mut rgb).labelled_by(label).changed();
                out = rgb.iter().map(u8::to_string).collect();
            } else {
                ui.horizontal(|ui| {
                    for v in items {
                        let f = v.as_float().or_else(|| v.as_integer().map(|i| i as f64)).unwrap_or(0.0);
                        let next = float(ui, f, label);
                        changed |= next.is_some();
                        out.push(next.unwrap_or(f).to_string());
                    }
                });
            }
            changed.then(|| format!("[{}]", out.join(", ")))
        }
        other => {
            ui.label(text(other));
            None
        }
    }
}

/// The steerable options whose value differs between the run's config and
/// the form's, as (key, TOML value) for [`TrainConfig::set`].
pub fn steerable_changes(run: &TrainConfig, form: &TrainConfig) -> Vec<(String, String)> {
    let (a, b) = (toml::Table::try_from(run).unwrap_or_default(), toml::Table::try_from(form).unwrap_or_default());
    GROUPS
        .iter()
        .flat_map(|(_, _, keys)| keys.iter())
        .filter(|k| TrainConfig::steerable(k))
        .filter_map(|k| {
            let new = lookup(&b, k)?;
            (lookup(&a, k) != Some(new)).then(|| (k.to_string(), new.to_string()))
        })
        .collect()
}

/// A drag step that suits the value's size (learning rates and step counts alike).
fn speed(v: f64) -> f64 {
    (v.abs() * 0.01).max(1e-4)
}

fn float(ui: &mut egui::Ui, mut f: f64, label: egui::Id) -> Option<f64> {
    let step = speed(f);
    ui.add(egui::DragValue::new(&mut f).speed(step).max_decimals(6)).labelled_by(label).changed().then_some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Options the form leaves out, and why.
    const NOT_IN_FORM: &[(&str, &str)] = &[
        ("data", "chosen in the Dataset section"),
        ("model.num_classes", "set from the dataset's classes when `conditional` is on"),
    ];

    fn keys(cfg: &TrainConfig) -> Vec<String> {
        let table = toml::Table::try_from(cfg).unwrap();
        let mut out = Vec::new();
        for (k, v) in &table {
            match v {
                toml::Value::Table(sub) => out.extend(sub.keys().map(|s| format!("{k}.{s}"))),
                _ => out.push(k.clone()),
            }
        }
        out
    }

    #[test]
    fn every_option_is_in_one_group_with_a_doc() {
        let cfg = TrainConfig::default();
        for key in keys(&cfg) {
            let groups = GROUPS.iter().filter(|(_, _, ks)| ks.contains(&key.as_str())).count();
            let left_out = NOT_IN_FORM.iter().any(|(k, _)| *k == key);
            assert_eq!(groups + left_out as usize, 1, "`{key}` must be in exactly one group or left out");
            assert!(TrainConfig::doc(&key).is_some_and(|d| !d.is_empty()), "`{key}` has a doc comment");
        }
    }

    #[test]
    fn every_choice_is_accepted_and_every_text_option_has_choices() {
        let cfg = TrainConfig::default();
        let table = toml::Table::try_from(&cfg).unwrap();
        for (key, choices) in CHOICES {
            for c in *choices {
                let mut probe = cfg.clone();
                assert!(probe.set(key, c).is_ok(), "{key} = {c}");
            }
        }
        for key in keys(&cfg) {
            let is_text = matches!(lookup(&table, &key), Some(toml::Value::String(_)));
            if is_text && key != "data" {
                assert!(CHOICES.iter().any(|(k, _)| *k == key), "`{key}` needs its choices listed");
            }
        }
    }
}
