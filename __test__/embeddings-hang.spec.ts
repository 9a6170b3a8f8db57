// A worker of an embedding model that blocks inside a forward pass is noticed
// by the watchdog within hangTimeoutMs: the call ends with WORKER_HUNG, the
// thread is abandoned and a fresh worker serves the next calls.
// MLX_SERVING_FAULT hangs the 2nd forward pass of the process. Needs the test
// build (cargo feature `fault-injection`), which `npm test` makes.
process.env.MLX_SERVING_FAULT = 'hang:2'

import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine } from './helpers'

const MINILM = path.resolve(__dirname, '..', 'models', 'all-MiniLM-L6-v2')
const present = fs.existsSync(path.join(MINILM, 'modules.json'))
if (!present) console.warn(`SKIPPED: ${MINILM} is missing; run scripts/setup.sh --embeddings`)
const HANG_TIMEOUT_MS = 1500

describe.skipIf(!present)('embedding worker hang', () => {
  let engine: InstanceType<typeof Engine>
  beforeAll(async () => {
    engine = await Engine.create({ hangTimeoutMs: HANG_TIMEOUT_MS })
    await engine.loadModel({ id: 'minilm', path: MINILM })
  })
  afterAll(() => engine?.shutdown({ drainTimeoutMs: 1000 }))

  it('a hung forward pass ends its call with WORKER_HUNG; a fresh worker serves the next', async () => {
    await engine.embed({ model: 'minilm', input: 'served before the hang' })
    const started = Date.now()
    await expect(engine.embed({ model: 'minilm', input: 'the unlucky one' })).rejects.toMatchObject({ code: 'WORKER_HUNG' })
    expect(Date.now() - started).toBeGreaterThanOrEqual(HANG_TIMEOUT_MS)
    const after = await engine.embed({ model: 'minilm', input: 'served by the replacement' })
    expect(after.embeddings).toHaveLength(1)
    expect(engine.stats().models[0]).toMatchObject({ state: 'ready', restarts: 1, abandonedWorkers: 1 })
  })
})
