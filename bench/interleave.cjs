// A long prompt beside a running stream: its first token (ms) while one stream
// decodes, the tokens that stream got meanwhile, and the same prompt's first
// token alone, three rounds (each round's prompts end differently, so nothing
// is reused), one JSON line a round. MLX_SERVING_LOG=mlx_serving=debug shows
// each chunk's size and cost on stderr.
//
//   node bench/interleave.cjs [MODEL] [PROMPT_TOKENS]
const path = require('path')
const { Engine } = require('../lib/index.js')
;(async () => {
  const model = process.argv[2] || path.join(__dirname, '..', 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
  const words = Math.round(Number(process.argv[3] || 2000) / 10) // about ten tokens a sentence
  const e = await Engine.create({ prefixCacheMb: 0 })
  await e.loadModel({ id: 'm', path: model })
  const generated = () => e.stats().models[0].tokensGenerated
  const long = (tag) => ({ model: 'm', prompt: 'The quick brown fox jumps over the lazy dog. '.repeat(words) + tag, maxTokens: 1 })
  for (let round = 0; round < 3; round++) {
    const running = e.generate({ model: 'm', prompt: '1, 2, 3, 4, 5, 6, 7, 8, 9, 10,', maxTokens: 400 }).collect()
    while (generated() === 0 || e.stats().models[0].activeRequests !== 1) await new Promise((r) => setImmediate(r))
    const before = generated()
    let t = performance.now()
    const beside = await e.generate(long(`Summary ${round}:`)).collect()
    const besideMs = performance.now() - t
    const during = generated() - before - 1
    await running
    t = performance.now()
    await e.generate(long(`Alone ${round}:`)).collect()
    const aloneMs = performance.now() - t
    console.log(JSON.stringify({ round, promptTokens: beside.usage.promptTokens, besideMs: Math.round(besideMs), runningStreamTokens: during, aloneMs: Math.round(aloneMs) }))
  }
  await e.shutdown()
})()
