// Streams an answer from the default model and prints tokens/s.
//   npm run demo -- "your prompt"
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { Engine } = require('../lib/index.js')
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const prompt = process.argv.slice(2).join(' ') || 'Explain in two sentences why the sky is blue.'
const modelPath = process.env.MLX_SERVING_MODEL ?? path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')

const engine = await Engine.create()
const info = await engine.loadModel({ id: 'default', path: modelPath })
process.stderr.write(`model: ${path.basename(info.path)} (${info.architecture}, ${(info.parameters / 1e6).toFixed(0)}M params, ${info.weightFormat} weights, loaded in ${info.loadMs.toFixed(0)} ms)\n\n`)
for await (const chunk of engine.generate({ model: 'default', messages: [{ role: 'user', content: prompt }], maxTokens: 256 })) {
  if (!chunk.done) {
    process.stdout.write(chunk.text)
    continue
  }
  const { usage, timings, finishReason } = chunk
  process.stdout.write('\n')
  process.stderr.write(
    `\n${usage.completionTokens} tokens, ${timings.tokensPerSecond.toFixed(1)} tokens/s, first token after ${timings.ttftMs.toFixed(0)} ms (prompt ${usage.promptTokens} tokens, finish: ${finishReason})\n`,
  )
}
await engine.shutdown()
