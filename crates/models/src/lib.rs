//! jenga-models: model definitions written once against the `Backend` op vocabulary, and
//! weight loading (safetensors via mmap, single or sharded, or seeded random weights).

pub mod bundle;
pub mod denoiser;
pub mod error;
pub mod text;
pub mod wan;
pub mod weights;

pub use bundle::{Caption, ModelBundle, SampleDefaults};
pub use denoiser::{Conditioning, Denoiser};
pub use error::{ModelError, Result};
pub use text::{TinySlots, TinyTextEncoder, Tokenizer};
pub use wan::{Geometry, WanConfig, WanModel};
pub use weights::{export_bf16, export_f32, RandomWeights, SafetensorsWeights, WeightSource};
