//! jenga-models: model definitions written once against the `Backend` op vocabulary, and
//! weight loading (safetensors via mmap, single or sharded, or seeded random weights) through
//! a scoped [`VarBuilder`]. One folder per family (`wan/`), text encoders in `text/`, latent
//! codecs in `vae/`, shared building blocks in `nn/`.

pub mod bundle;
pub mod denoiser;
pub mod error;
pub mod hunyuan;
pub mod image;
pub mod layout;
pub mod nn;
pub mod text;
pub mod vae;
pub mod wan;
pub mod weights;

pub use bundle::{config_for_class, Caption, Family, ModelBundle, SampleDefaults};
pub use denoiser::{Conditioning, Denoiser};
pub use error::{ModelError, Result};
pub use image::{ClipVision, ClipVisionConfig};
pub use nn::{KeyMap, VarBuilder};
pub use text::{
    wan_clean, TextEncoder, TextStates, TinySlots, TinyText, TinyTextEncoder, Tokenizer,
    Umt5Config, Umt5Encoder, Umt5Keys, Umt5Text, Umt5Tokenizer,
};
pub use vae::{Frames, Identity, LatentPreview, Vae};
pub use wan::{Geometry, WanConfig, WanKeys, WanModel};
pub use weights::{
    export_bf16, export_f32, open_weights, parse_dtype, PthWeights, RandomWeights, RawTensor,
    SafetensorsWeights, TensorData, TensorInfo, WeightSource,
};
