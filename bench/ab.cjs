// Ours alone, quickly: tokens/s of one stream decoding 128 tokens and of 8
// streams decoding 64 each, best of two, and the first token of a 4096-token
// prompt (ms, median of three after one untimed), as one JSON line. For A/B runs of a
// setting read once per process (MLX_SERVING_CUDA_QMV, MLX_SERVING_DTYPE, ...):
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
  const e = await Engine.create({ prefixCacheMb: 0 }) // cold prompts: no prefix reuse
  await e.loadModel({ id: 'm', path: model })
  const gen = async (prompt, maxTokens) => { const t = performance.now(); const r = await e.generate({ model: 'm', prompt, maxTokens }).collect(); return [r.usage.completionTokens, performance.now() - t] }
  await gen('1, 2, 3,', 16)
  const out = {}
  for (let rep = 0; rep < 2; rep++) {
    const [n, ms] = await gen('1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', 128)
    out.single = Math.max(out.single ?? 0, (n / ms) * 1000)
    const t = performance.now()
    const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => gen(`Sequence ${i + 1}: `, 64)))
    out.eight = Math.max(out.eight ?? 0, (rs.reduce((a, r) => a + r[0], 0) / (performance.now() - t)) * 1000)
  }
  const long = e.detokenize('m', e.tokenize('m', require('fs').readFileSync(require('path').join(__dirname, 'prompt.md'), 'utf8')).slice(0, 4096))
  const ttft = []
  for (let rep = 0; rep < 4; rep++) {
    const t = performance.now()
    await e.generate({ model: 'm', prompt: long, maxTokens: 1 }).collect()
    if (rep > 0) ttft.push(performance.now() - t)
  }
  out.ttft4096 = ttft.sort((a, b) => a - b)[1]
  console.log(JSON.stringify({ model: model.split('/').pop(), qmv: process.env.MLX_SERVING_CUDA_QMV ?? 'default', single: +out.single.toFixed(1), eight: +out.eight.toFixed(1), ttft4096: +out.ttft4096.toFixed(1) }))
  await e.shutdown()
})()
