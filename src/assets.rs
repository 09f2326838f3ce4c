//! Models built into the binary, so `ganscope` runs from any folder, offline.

/// A shipped model.
pub struct BuiltinModel {
    /// Name used as `--model builtin:NAME`.
    pub name: &'static str,
    /// The model file's bytes.
    pub bytes: &'static [u8],
}

/// The shipped models; the first is the default.
pub const MODELS: [BuiltinModel; 2] = [
    BuiltinModel { name: "emoji", bytes: include_bytes!("../assets/models/emoji.safetensors") },
    BuiltinModel { name: "digits", bytes: include_bytes!("../assets/models/digits.safetensors") },
];

/// The model the app opens on.
pub fn default_model() -> &'static BuiltinModel {
    &MODELS[0]
}

/// A shipped model by name.
pub fn model(name: &str) -> Option<&'static BuiltinModel> {
    MODELS.iter().find(|m| m.name == name)
}
