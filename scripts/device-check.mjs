// Which device the engine runs on, and one short generation there with the
// memory figures before, during and after (scripts/gpu.sh runs it first).
//   node scripts/device-check.mjs [model]
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import path from 'node:path'

const require = createRequire(import.meta.url)
const { Engine } = require('../lib/index.js')
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const modelPath = process.argv[2] ?? path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`
const memory = (engine) => {
  const m = engine.stats().memory
  return `active ${mib(m.activeBytes)}, peak ${mib(m.peakBytes)}, cache ${mib(m.cacheBytes)}`
}

const engine = await Engine.create()
const { device } = engine.stats()
console.log(`device: ${device.backend} (${device.name}${device.totalBytes ? `, ${mib(device.totalBytes)}` : ''})`)
console.log(`memory before load: ${memory(engine)}`)
const info = await engine.loadModel({ id: 'm', path: modelPath })
console.log(`model: ${path.basename(info.path)} on ${info.backend}, ${info.weightFormat} weights, computing in ${info.dtype}, loaded in ${info.loadMs.toFixed(0)} ms (of which GPU warm-up ${info.warmUpMs.toFixed(0)} ms)`)
console.log(`memory after load: ${memory(engine)}`)
let text = ''
for await (const chunk of engine.generate({ model: 'm', messages: [{ role: 'user', content: 'What is the capital of France?' }], maxTokens: 32 })) {
  if (!chunk.done) {
    text += chunk.text
    continue
  }
  console.log(`text: ${JSON.stringify(text)}`)
  console.log(`${chunk.usage.completionTokens} tokens, ${chunk.timings.tokensPerSecond.toFixed(1)} tok/s, first token ${chunk.timings.ttftMs.toFixed(0)} ms`)
}
console.log(`memory after generate: ${memory(engine)}`)
await engine.unloadModel('m')
console.log(`memory after unload: ${memory(engine)}`)
await engine.shutdown()
