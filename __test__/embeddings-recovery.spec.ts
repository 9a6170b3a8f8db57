// A worker of an embedding model that panics or hangs in a forward pass is
// replaced like a generation model's: the calls it held end with
// WORKER_CRASHED / WORKER_HUNG, the queued ones wait for the replacement, and
// later calls are served. MLX_SERVING_FAULT (read once per process, counting
// forward passes) panics at the 3rd pass here; embeddings-hang.spec.ts hangs
// one. Needs the test build (cargo feature `fault-injection`), which `npm test` makes.
process.env.MLX_SERVING_FAULT = 'panic:3'

import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, waitFor } from './helpers'

const MINILM = path.resolve(__dirname, '..', 'models', 'all-MiniLM-L6-v2')
const present = fs.existsSync(path.join(MINILM, 'modules.json'))
if (!present) console.warn(`SKIPPED: ${MINILM} is missing; run scripts/setup.sh --embeddings`)

describe.skipIf(!present)('embedding worker recovery', () => {
  let engine: InstanceType<typeof Engine>
  beforeAll(async () => {
    engine = await Engine.create()
    await engine.loadModel({ id: 'minilm', path: MINILM })
  })
  afterAll(() => engine?.shutdown({ drainTimeoutMs: 1000 }))

  it('a panic in a forward pass ends the calls it held with WORKER_CRASHED; a fresh worker serves the rest', async () => {
    // Passes 1 and 2 serve these; pass 3 panics inside the long call.
    await engine.embed({ model: 'minilm', input: 'first' })
    await engine.embed({ model: 'minilm', input: 'second' })
    const long = Array.from({ length: 200 }, (_, i) => `${i} ${'the quick brown fox jumps over the lazy dog '.repeat(25)}`)
    await expect(engine.embed({ model: 'minilm', input: long })).rejects.toMatchObject({ code: 'WORKER_CRASHED', message: expect.stringMatching(/injected fault/) })
    const after = await engine.embed({ model: 'minilm', input: ['served by the replacement'] })
    expect(after.embeddings).toHaveLength(1)
    expect(engine.stats().models[0]).toMatchObject({ state: 'ready', restarts: 1, activeRequests: 0, queuedRequests: 0 })
    await waitFor(() => engine.stats().models[0].state === 'ready', 'the replacement is ready')
  })
})
