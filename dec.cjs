const { Engine } = require('./lib/index.js')
const fs = require('fs')
;(async () => {
const e = await Engine.create(); await e.loadModel({ id: 'm', path: 'models/SmolLM2-135M-Instruct.Q4_1.gguf' })
const ref = JSON.parse(fs.readFileSync('/tmp/ref.json'))
for (const r of ref) {
  const ours = (await e.generate({ model: 'm', prompt: e.detokenize('m', r.prompt), maxTokens: 40 }).collect()).tokenIds
  let k = 0; while (k < ours.length && ours[k] === r.ref[k]) k++
  console.log('match', k, '\n REF:', JSON.stringify(e.detokenize('m', r.ref)), '\n OUR:', JSON.stringify(e.detokenize('m', ours)))
}
await e.shutdown()
})()
