"""mlx-lm as the reference for a model directory (used by
__test__/model-dirs.spec.ts): reads JSON from stdin

    {"model": dir, "cases": [{"prompt": [ids], "ours": [ids]}]}

and writes, per case, mlx-lm's own greedy continuation of the prompt's token
ids (as many tokens as `ours`, temperature 0) and, teacher-forced on our
tokens, at each step mlx-lm's argmax and how many nats below it our token is
in mlx-lm's distribution (mlx-lm running in f32, see below):

    {"cases": [{"greedy": [ids], "argmax": [ids], "gap": [nats]}]}
"""

import json
import sys

import mlx.core as mx
from mlx.utils import tree_map
from mlx_lm import load
from mlx_lm.generate import generate_step


def main() -> None:
    request = json.load(sys.stdin)
    model, _ = load(request["model"])
    # The directory's bf16 parameters (norms, quantization scales and biases)
    # widened exactly to f32, so mlx-lm computes in f32 as we do (on CPU, bf16
    # arithmetic is also many times slower).
    model.update(tree_map(lambda p: p.astype(mx.float32) if p.dtype == mx.bfloat16 else p, model.parameters()))
    out = []
    for case in request["cases"]:
        prompt, ours = case["prompt"], case["ours"]
        greedy = []
        for token, _ in generate_step(mx.array(prompt), model, max_tokens=len(ours)):
            greedy.append(int(token))
        logits = model(mx.array([prompt + ours[:-1]]))[0, len(prompt) - 1 :].astype(mx.float32)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        argmax = mx.argmax(logprobs, axis=-1)
        picked = mx.take_along_axis(logprobs, mx.array(ours)[:, None], axis=-1)[:, 0]
        gap = mx.max(logprobs, axis=-1) - picked
        out.append({"greedy": greedy, "argmax": argmax.tolist(), "gap": [round(float(g), 4) for g in gap.tolist()]})
    json.dump({"cases": out}, sys.stdout)


if __name__ == "__main__":
    main()
