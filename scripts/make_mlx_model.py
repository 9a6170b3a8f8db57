"""Makes model directories in the Hugging Face / MLX layout from our GGUF
models, for __test__/model-dirs.spec.ts (there are no such models offline):

  models/<name>-bf16/      bf16 weights under HF names and conventions (llama
                           q/k rows as trained, Gemma norms without the +1),
                           config.json, generation_config.json, tokenizer.json,
                           tokenizer_config.json: examples/export_hf.rs, our
                           own dequantization of every GGUF block type.
  models/<name>-mlx-4bit/  that directory quantized by mlx-lm itself
                           (`mlx_lm convert -q --q-bits 4 --q-group-size 64`).

    python3 scripts/make_mlx_model.py [--gemma3] [--python PATH]

--python is a Python with mlx-lm (default: bench/.venv/bin/python, which is
created with mlx-lm[cpu]==0.32.2 when missing, as bench/run.mjs does).
Idempotent: a directory that has its config.json is kept.

(bench/convert_gguf.py is a different conversion: it keeps the GGUF's own
quantization and llama.cpp's q/k layout, for a like-for-like speed benchmark.)
"""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SOURCES = {
    "SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma-3-270m": "gemma-3-270m-q4_k_m.gguf",
}


def run(*cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), file=sys.stderr)
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))


def mlx_python(path: str | None) -> Path:
    if path:
        return Path(path)
    venv = ROOT / "bench" / ".venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", venv)
        run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "mlx-lm[cpu]==0.32.2", "mlx[cpu]==0.32.2")
    return python


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gemma3", action="store_true", help="also convert Gemma 3 270M (scripts/setup.sh --gemma3 fetches it)")
    ap.add_argument("--python", help="a Python with mlx-lm")
    args = ap.parse_args()
    names = ["SmolLM2-135M-Instruct"] + (["gemma-3-270m"] if args.gemma3 else [])
    todo = [n for n in names if not (MODELS / f"{n}-bf16" / "config.json").exists() or not (MODELS / f"{n}-mlx-4bit" / "config.json").exists()]
    if not todo:
        print("model directories are up to date", file=sys.stderr)
        return
    host = host_triple()
    run("cargo", "build", "--release", "--quiet", "--target", host, "--example", "export_hf", cwd=ROOT)
    export = ROOT / "target" / host / "release" / "examples" / "export_hf"
    python = mlx_python(args.python)
    for name in todo:
        gguf, bf16, q4 = MODELS / SOURCES[name], MODELS / f"{name}-bf16", MODELS / f"{name}-mlx-4bit"
        if not gguf.exists():
            sys.exit(f"{gguf} is missing (scripts/setup.sh fetches it)")
        if not (bf16 / "config.json").exists():
            run(export, gguf, bf16)
        if not (q4 / "config.json").exists():
            shutil.rmtree(q4, ignore_errors=True)  # mlx-lm refuses an existing directory
            run(python, "-m", "mlx_lm", "convert", "--hf-path", bf16, "--mlx-path", q4, "-q", "--q-bits", "4", "--q-group-size", "64")


if __name__ == "__main__":
    main()
