//! llama.cpp's tokenizer cases: vocab-only GGUFs (`ggml-vocab-*.gguf`, from
//! the llama-cpp-python sdist, fetched by `scripts/setup.sh --tokenizer-data`)
//! with texts (`.inp`) and the token ids Hugging Face's tokenizer gives them
//! (`.out`). Every vocab we can load must tokenize every case exactly; vocabs
//! whose tokenizer kind we do not support yet are listed as skipped, and are
//! picked up by themselves once `Tokenizer::from_spec` accepts them.

use std::path::Path;

use crate::{error::ErrorCode, model::load::tokenizer_from_gguf, tokenizer::llama_cpp_data};

/// The cases of a vocab, split as llama.cpp's `test-tokenizer-0` splits them:
/// inputs separated by a marker line, one line of space-separated ids per input.
fn cases(inp: &str, out: &str) -> Vec<(String, Vec<u32>)> {
    const SEPARATOR: &str = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut rest = inp;
    while !rest.is_empty() {
        match rest.find(SEPARATOR) {
            Some(at) => {
                inputs.push(rest[..at].to_string());
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => {
                inputs.push(rest.to_string());
                rest = "";
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|line| line.split_whitespace().map(|t| t.parse().expect("token id")).collect())
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "inputs and outputs differ in number");
    inputs.into_iter().zip(outputs).collect()
}

#[test]
fn cases_split_as_llama_cpp_splits_them() {
    let inp = "a\n__ggml_vocab_test__\n\n\n__ggml_vocab_test__\n b \n__ggml_vocab_test__\n";
    let got = cases(inp, " 1 2\n\n 3\n");
    assert_eq!(got, vec![("a".into(), vec![1, 2]), ("\n".into(), vec![]), (" b ".into(), vec![3])]);
}

#[test]
fn vocab_only_ggufs_tokenize_as_llama_cpp_expects() {
    let Some(dir) = llama_cpp_data() else { return };
    let mut vocabs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    vocabs.sort();
    assert!(vocabs.len() >= 17, "expected llama.cpp's vocab files in {}", dir.display());
    let (mut report, mut failures, mut tested) = (Vec::new(), Vec::new(), 0);
    for path in &vocabs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let inp = Path::new(&format!("{}.inp", path.display())).to_path_buf();
        let cases = match inp.exists() {
            true => cases(&std::fs::read_to_string(&inp).unwrap(), &std::fs::read_to_string(format!("{}.out", path.display())).unwrap()),
            false => Vec::new(),
        };
        let (spec, mut tokenizer) = match tokenizer_from_gguf(path) {
            Ok(t) => t,
            // A tokenizer kind we lack is a skip; a pre-tokenizer flavour we lack is a failure.
            Err(e) if e.code == ErrorCode::ModelLoadFailed && e.message.contains("not supported") && !e.message.contains("pre-tokenizer") => {
                report.push(format!("{name}: SKIPPED ({} cases): {}", cases.len(), e.message.rsplit(": ").next().unwrap_or_default()));
                continue;
            }
            Err(e) => {
                failures.push(format!("{name}: does not load: {e}"));
                continue;
            }
        };
        if cases.is_empty() {
            report.push(format!("{name} ({}/{}): loads; no test cases shipped", spec.model, spec.pre));
            continue;
        }
        // As llama.cpp's test tokenizes: no BOS, control tokens in the text are plain text.
        tokenizer.set_add_bos(false);
        tokenizer.set_parse_special(false);
        tested += 1;
        let mut passed = 0;
        for (text, want) in &cases {
            let got = tokenizer.encode(text).unwrap();
            if got == *want {
                passed += 1;
            } else {
                failures.push(format!("{name} ({}/{}): {text:?}\n    want {want:?}\n    got  {got:?}", spec.model, spec.pre));
            }
        }
        report.push(format!("{name} ({}/{}): {passed}/{} cases pass", spec.model, spec.pre, cases.len()));
    }
    crate::tokenizer::say(&format!("llama.cpp vocab cases:\n  {}", report.join("\n  ")));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    // The 10 byte-level BPE vocabs with cases; more once other tokenizer kinds load.
    assert!(tested >= 10, "only {tested} vocabs could be tested");
}
