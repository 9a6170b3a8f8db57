// Observability: stats() and tracing output.
import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, ErrorCode, MODEL, MODEL_PATH } from './helpers'

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await engineWithModel()
})
afterAll(async () => {
  await engine?.shutdown()
})

describe('stats', () => {
  it('reports models and memory', async () => {
    const before = engine.stats().models[0].tokensGenerated
    const stream = engine.generate({ model: MODEL, prompt: '1, 2, 3,', maxTokens: 20 })
    await stream.next()
    const during = engine.stats()
    expect(during.models[0]).toMatchObject({ id: MODEL, state: 'ready', activeRequests: 1, queuedRequests: 0, restarts: 0 })
    expect(during.models[0].lastHeartbeatMsAgo).toBeLessThan(30_000) // the default hangTimeoutMs
    await drain(stream)
    const after = engine.stats()
    expect(after.models[0].tokensGenerated - before).toBe(20)
    expect(after.models[0].tokensPerSecond).toBeGreaterThan(0)
    expect(after.models[0].activeRequests).toBe(0)
    expect(after.memory.activeBytes).toBeGreaterThan(100e6)
    expect(after.memory.peakBytes).toBeGreaterThanOrEqual(after.memory.activeBytes)
    expect(after.memory.cacheBytes).toBeGreaterThanOrEqual(0)
  })
})

describe('tracing', () => {
  it('MLX_SERVING_LOG turns on per-request spans and events on stderr', () => {
    const script = `
      const { Engine } = require(${JSON.stringify(require.resolve('../lib/index.js'))});
      (async () => {
        const e = await Engine.create();
        await e.loadModel({ id: 'm', path: ${JSON.stringify(MODEL_PATH)} });
        await e.generate({ model: 'm', prompt: 'Hi', maxTokens: 2 }).collect();
        await e.shutdown();
      })();`
    const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, MLX_SERVING_LOG: 'mlx_serving=debug' }, encoding: 'utf8' })
    expect(r.status).toBe(0)
    expect(r.stderr).toMatch(/request\{id=\d+ model=m\}.*queued/)
    expect(r.stderr).toMatch(/request finished/)
    expect(r.stderr).toMatch(/model ready/)
  })
})

describe('error codes', () => {
  it('are a documented, exported list', () => {
    expect(Object.keys(ErrorCode)).toEqual([
      'INVALID_ARGUMENT',
      'MODEL_NOT_FOUND',
      'MODEL_LOAD_FAILED',
      'TIMEOUT',
      'ABORTED',
      'QUEUE_FULL',
      'SHUTTING_DOWN',
      'CONTEXT_OVERFLOW',
      'WORKER_CRASHED',
      'WORKER_HUNG',
      'CACHE_INVALID',
      'CACHE_WRITE_FAILED',
      'GRAMMAR_TOO_COMPLEX',
      'INTERNAL',
    ])
    for (const [k, v] of Object.entries(ErrorCode)) expect(v).toBe(k)
  })
})
