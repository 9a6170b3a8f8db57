// Ours alone, quickly: tokens/s of one stream decoding 128 tokens and of 8
// streams (AB_STREAMS=8,32,...: each count) decoding 64 each, best of two, and
// the first token of a 4096-token prompt (AB_PROMPT_TOKENS; ms, median of three
// after one untimed), as one JSON line with the MLX_SERVING_* switches set. For A/B runs
// of a setting read once per process (MLX_SERVING_CUDA_QMM, MLX_SERVING_DTYPE, ...):
//
//   for q in 0 1 0 1; do MLX_SERVING_CUDA_QMV=$q node bench/ab.cjs model.gguf; done
//
// bench/gpu.mjs is the full comparison (every engine, first tokens, 1-64 streams).
const { Engine } = require('../lib/index.js')
;(async () => {
  const model = process.argv[2]
  if (!model) {
    console.error('usage: node bench/ab.cjs MODEL')
    process.exit(2)
  }
  const streams = (process.env.AB_STREAMS ?? '8').split(',').map(Number)
  // Cold prompts (no prefix reuse); every stream in one batch.
  const e = await Engine.create({ prefixCacheMb: 0, maxBatchSize: Math.max(8, ...streams) })
  await e.loadModel({ id: 'm', path: model })
  const gen = async (prompt, maxTokens) => { const t = performance.now(); const r = await e.generate({ model: 'm', prompt, maxTokens }).collect(); return [r.usage.completionTokens, performance.now() - t] }
  await gen('1, 2, 3,', 16)
  const out = {}
  for (let rep = 0; rep < 2; rep++) {
    const [n, ms] = await gen('1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', 128)
    out.single = Math.max(out.single ?? 0, (n / ms) * 1000)
    for (const n of streams) {
      const t = performance.now()
      const rs = await Promise.all(Array.from({ length: n }, (_, i) => gen(`Sequence ${i + 1}: `, 64)))
      out[n] = Math.max(out[n] ?? 0, (rs.reduce((a, r) => a + r[0], 0) / (performance.now() - t)) * 1000)
    }
  }
  const promptTokens = Number(process.env.AB_PROMPT_TOKENS ?? 4096)
  const long = e.detokenize('m', e.tokenize('m', require('fs').readFileSync(require('path').join(__dirname, 'prompt.md'), 'utf8')).slice(0, promptTokens))
  const ttft = []
  for (let rep = 0; rep < 4; rep++) {
    const t = performance.now()
    await e.generate({ model: 'm', prompt: long, maxTokens: 1 }).collect()
    if (rep > 0) ttft.push(performance.now() - t)
  }
  out.ttft = ttft.sort((a, b) => a - b)[1]
  const switches = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MLX_SERVING_')))
  const rates = Object.fromEntries(streams.map((n) => [`streams${n}`, +out[n].toFixed(1)]))
  console.log(JSON.stringify({ model: model.split('/').pop(), switches, single: +out.single.toFixed(1), ...rates, [`ttft${promptTokens}`]: +out.ttft.toFixed(1) }))
  await e.shutdown()
})()
