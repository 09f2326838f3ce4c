//! Bookmarks in the app: what is on screen (anchors with their exact
//! latents, probe, display filter, class) and the export settings, as an
//! [`export::Bookmark`], and back. The app's export renders exactly the
//! bookmark [`capture`] makes, which is what `ganscope interpolate
//! --keyframes` renders from the saved file.

use std::path::Path;

use eframe::egui::{Pos2, pos2};

use super::Settings;
use super::explore::ExploreState;
use super::export_form::ExportForm;
use super::probe::Anchor;
use super::theme;
use crate::export::keyframes::{self, Keyframe, View};
use crate::export::{self, Bookmark};
use crate::latent::{self, Prior};
use crate::worker::ModelInfo;

/// The parts of the app a bookmark reads and restores.
pub struct Scene<'a> {
    /// Anchors and probe.
    pub explore: &'a mut ExploreState,
    /// Display filter and class.
    pub settings: &'a mut Settings,
    /// The model on screen.
    pub model: Option<&'a ModelInfo>,
}

/// The bookmark of the scene and `form`; `None` until a model is loaded.
/// `model_spec` says how to reopen the model, where it can be reopened.
pub fn capture(scene: &mut Scene<'_>, form: &ExportForm, model_spec: Option<String>) -> Option<Bookmark> {
    let model = scene.model?;
    let dim = model.z_dim;
    let latents = scene.explore.latents(dim).to_vec();
    let anchors = scene
        .explore
        .anchors
        .iter()
        .zip(latents)
        .map(|(a, z)| Keyframe {
            // A seed is written only when the latent is the seed's.
            seed: (!a.exact(dim)).then_some(a.seed),
            z,
            pos: Some([a.pos.x, a.pos.y]),
        })
        .collect();
    let probe = scene.explore.probe;
    Some(Bookmark {
        version: keyframes::VERSION,
        model_hash: model.hash.clone(),
        model: model_spec,
        mode: form.mode,
        ease: form.ease,
        looped: form.looped,
        class: model.conditional().then_some(scene.settings.class),
        anchors,
        view: View { probe: Some([probe.x, probe.y]), smooth: scene.settings.smooth, extra: Default::default() },
        export: Some(form.settings()),
    })
}

/// Where anchor `i` of `n` without a saved position goes: around a ring, in path order.
fn ring_spot(i: usize, n: usize) -> Pos2 {
    let angle = std::f32::consts::TAU * i as f32 / n.max(1) as f32 + std::f32::consts::PI;
    pos2(0.5 + 0.4 * angle.cos(), 0.5 + 0.4 * angle.sin())
}

/// A saved canvas position, if it is one.
fn canvas_pos(p: Option<[f32; 2]>) -> Option<Pos2> {
    p.filter(|p| p.iter().all(|v| v.is_finite())).map(|[x, y]| pos2(x.clamp(0.0, 1.0), y.clamp(0.0, 1.0)))
}

/// Puts the bookmark read from `path` on screen and into `form`. Returns
/// warnings (another model's bookmark loads anyway); an error changes nothing.
pub fn restore(b: &Bookmark, path: &Path, scene: &mut Scene<'_>, form: &mut ExportForm) -> Result<Vec<String>, String> {
    let file = path.display();
    if b.anchors.len() > theme::MAX_ANCHORS {
        return Err(format!(
            "{file}: {} anchors; the explorer holds at most {} (render it with `ganscope interpolate --keyframes`)",
            b.anchors.len(),
            theme::MAX_ANCHORS
        ));
    }
    let mut warnings = Vec::new();
    let dim = scene.model.map(|m| m.z_dim);
    if let Some(m) = scene.model
        && m.hash != b.model_hash
    {
        warnings.push(format!(
            "{file} was saved with model {}, this is model {}: loaded anyway, images will differ",
            b.model_hash, m.hash
        ));
    }
    let n = b.anchors.len();
    let mut anchors = Vec::with_capacity(n);
    for (i, k) in b.anchors.iter().enumerate() {
        let letter = theme::anchor_letter(i);
        let mut z = (!k.z.is_empty()).then(|| k.z.clone());
        // A latent its seed gives needs no exact copy: the anchor stays a plain seed.
        if let (Some(s), Some(v)) = (k.seed, &z)
            && *v == latent::from_seed(s, v.len(), Prior::Sphere)
        {
            z = None;
        }
        if let (Some(d), Some(v)) = (dim, &z)
            && v.len() != d
        {
            if k.seed.is_none() {
                return Err(format!("{file}: anchor {letter} has a {}-d latent, the model's is {d}-d", v.len()));
            }
            warnings
                .push(format!("{file}: anchor {letter}'s latent is {}-d, the model's {d}-d: using its seed", v.len()));
            z = None;
        }
        anchors.push(Anchor {
            // Shown as "exact z" when the seed is a stand-in.
            seed: k.seed.unwrap_or(0),
            pos: canvas_pos(k.pos).unwrap_or_else(|| ring_spot(i, n)),
            z: z.map(Into::into),
        });
    }
    let probe = canvas_pos(b.view.probe).unwrap_or(pos2(0.5, 0.5));
    scene.explore.restore(anchors, probe);
    scene.settings.smooth = b.view.smooth;
    if let (Some(c), Some(m)) = (b.class, scene.model)
        && (c as usize) < m.classes.len()
    {
        scene.settings.class = c;
    }
    form.set_from(b);
    Ok(warnings)
}

/// Saves the scene's bookmark to `path`.
pub fn save(scene: &mut Scene<'_>, form: &ExportForm, model_spec: Option<String>, path: &Path) -> Result<(), String> {
    let b = capture(scene, form, model_spec).ok_or_else(|| format!("{}: no model is loaded yet", path.display()))?;
    b.save(path).map_err(|e| e.to_string())
}

/// Loads the bookmark at `path` onto the screen; see [`restore`].
pub fn load(scene: &mut Scene<'_>, form: &mut ExportForm, path: &Path) -> Result<Vec<String>, String> {
    let b = Bookmark::load(path).map_err(|e: export::ExportError| e.to_string())?;
    restore(&b, path, scene, form)
}
