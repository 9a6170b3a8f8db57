"""Reference embeddings for __test__/embeddings-fidelity.spec.ts, made by
sentence-transformers (with transformers and PyTorch on the CPU, f32) from
the same model directories the engine loads.

    python scripts/embedding_reference.py MODEL_DIR OUT.json [--prompts query,document] [--truncate 256]

For every sentence of __test__/fixtures/embedding-sentences.json it records
the token ids sentence-transformers feeds the model (truncated to the
model's max_seq_length) and the sentence's embedding; with --prompts, the
embeddings of the first PROMPTED sentences under each named prompt; with
--truncate, the embeddings cut to that many dimensions and normalized again
(`truncate_dim` with `normalize_embeddings`). Run by `scripts/setup.sh
--embeddings` in its own virtual environment (.data/embeddings/venv).
"""

import argparse
import json
import sys
from pathlib import Path

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "__test__" / "fixtures" / "embedding-sentences.json"
PROMPTED = 40


def token_ids(model: SentenceTransformer, text: str) -> list[int]:
    features = model.preprocess([text]) if hasattr(model, "preprocess") else model.tokenize([text])
    return features["input_ids"][0].tolist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--prompts", default="")
    ap.add_argument("--truncate", type=int)
    args = ap.parse_args()

    torch.set_num_threads(2)
    sentences = json.loads(SENTENCES.read_text())["sentences"]
    model = SentenceTransformer(args.model, device="cpu")
    model.eval()
    encode = lambda texts, **kw: model.encode(texts, batch_size=16, convert_to_numpy=True, **kw).astype("float32").tolist()
    out = {
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "maxSeqLength": model.max_seq_length,
        "tokenIds": [token_ids(model, s) for s in sentences],
        "embeddings": encode(sentences),
        "prompted": {},
    }
    for name in filter(None, args.prompts.split(",")):
        out["prompted"][name] = encode(sentences[:PROMPTED], prompt_name=name)
    if args.truncate:
        out["truncated"] = {
            "dimensions": args.truncate,
            "embeddings": encode(sentences[:PROMPTED], truncate_dim=args.truncate, normalize_embeddings=True),
        }
    Path(args.out).write_text(json.dumps(out))
    print(f"{args.out}: {len(sentences)} sentences", file=sys.stderr)


if __name__ == "__main__":
    main()
