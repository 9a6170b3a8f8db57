//! Writes the tokenizer we build from a GGUF as Hugging Face `tokenizer.json`
//! (plus the chat template), so another engine tokenizes exactly as we do.
//!
//!   cargo run --release --example export_tokenizer -- model.gguf out_dir/

use std::path::PathBuf;

use mlx_serving::model::{load_gguf, WeightFormat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let gguf = PathBuf::from(args.next().ok_or("usage: export_tokenizer <model.gguf> <out_dir>")?);
    let out = PathBuf::from(args.next().ok_or("usage: export_tokenizer <model.gguf> <out_dir>")?);
    let model = load_gguf(&gguf, WeightFormat::Quantized)?;
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("tokenizer.json"), model.tokenizer.to_json()?)?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": model.tokenizer.bos_text(),
        "eos_token": model.tokenizer.eos_text(),
        "chat_template": model.template_source,
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
    });
    std::fs::write(out.join("tokenizer_config.json"), serde_json::to_string_pretty(&config)?)?;
    println!("wrote {}", out.display());
    Ok(())
}
