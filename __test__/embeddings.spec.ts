// engine.embed(): validation before any work, the engine's guarantees
// (abort, timeout, shutdown, stats) for embedding calls, and how embedding
// and generation models refuse each other's calls. all-MiniLM-L6-v2 (fetched
// by `scripts/setup.sh --embeddings`, which `npm test` runs).
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, MODEL, MODEL_PATH, waitFor } from './helpers'

const MINILM = path.resolve(__dirname, '..', 'models', 'all-MiniLM-L6-v2')
const present = fs.existsSync(path.join(MINILM, 'modules.json'))
if (!present) console.warn(`SKIPPED: ${MINILM} is missing; run scripts/setup.sh --embeddings`)

const ID = 'minilm'
// Past the model's 256 tokens; many of them keep the worker busy for many passes.
const LONG = 'The quick brown fox jumps over the lazy dog near the river bank. '.repeat(30)
const MANY = Array.from({ length: 3000 }, (_, i) => `${i} ${LONG}`)

describe.skipIf(!present)('engine.embed', () => {
  let engine: InstanceType<typeof Engine>

  beforeAll(async () => {
    engine = await Engine.create()
    await Promise.all([engine.loadModel({ id: ID, path: MINILM }), engine.loadModel({ id: MODEL, path: MODEL_PATH })])
  })
  afterAll(() => engine?.shutdown())

  const idle = () => engine.stats().models.find((m) => m.id === ID)!

  it('resolves with one Float32Array per input, in order, and the tokens read', async () => {
    const { embeddings, usage } = await engine.embed({ model: ID, input: ['a cat', 'a dog sleeps', 'a cat'] })
    expect(embeddings).toHaveLength(3)
    for (const v of embeddings) {
      expect(v).toBeInstanceOf(Float32Array)
      expect(v).toHaveLength(384)
    }
    // The same text in one batch: the same vector, but for the rounding of the
    // matrix products, whose tiles may sum a row in another order.
    embeddings[2].forEach((x, i) => expect(x).toBeCloseTo(embeddings[0][i], 6))
    expect(usage.promptTokens).toBe(['a cat', 'a dog sleeps', 'a cat'].reduce((n, t) => n + engine.tokenize(ID, t).length, 0))
    const one = await engine.embed({ model: ID, input: 'a cat' })
    expect(one.embeddings).toHaveLength(1)
  })

  it('counts embedded tokens in stats', async () => {
    const before = idle().tokensGenerated
    const { usage } = await engine.embed({ model: ID, input: ['one more sentence to count'] })
    expect(idle().tokensGenerated - before).toBe(usage.promptTokens)
    expect(idle()).toMatchObject({ state: 'ready', activeRequests: 0, queuedRequests: 0 })
  })

  it('serves many concurrent calls, each with its own vectors', async () => {
    const texts = Array.from({ length: 40 }, (_, i) => `sentence number ${i} ${'word '.repeat(i % 9)}`)
    const together = await Promise.all(texts.map((t) => engine.embed({ model: ID, input: t })))
    const alone = (await engine.embed({ model: ID, input: texts })).embeddings
    together.forEach((r, i) => {
      const dot = r.embeddings[0].reduce((s, x, k) => s + x * alone[i][k], 0)
      expect(dot).toBeGreaterThan(0.999999)
    })
  })

  it('normalizes unless told not to, and truncates to fewer dimensions', async () => {
    const [n] = (await engine.embed({ model: ID, input: 'hello world' })).embeddings
    const [raw] = (await engine.embed({ model: ID, input: 'hello world', normalize: false })).embeddings
    const norm = Math.hypot(...raw)
    expect(Math.abs(Math.hypot(...n) - 1)).toBeLessThan(1e-5)
    expect(Math.abs(norm - 1)).toBeGreaterThan(1e-3)
    raw.forEach((x, i) => expect(Math.abs(x / norm - n[i])).toBeLessThan(1e-6))
    const [short] = (await engine.embed({ model: ID, input: 'hello world', dimensions: 64 })).embeddings
    expect(short).toHaveLength(64)
    expect(Math.abs(Math.hypot(...short) - 1)).toBeLessThan(1e-5)
  })

  it('truncates long inputs to the model maximum, or fails with CONTEXT_OVERFLOW when asked not to', async () => {
    const { usage } = await engine.embed({ model: ID, input: LONG })
    expect(usage.promptTokens).toBe(256)
    await expect(engine.embed({ model: ID, input: ['short', LONG], truncate: false })).rejects.toMatchObject({
      code: 'CONTEXT_OVERFLOW',
      message: expect.stringMatching(/^input\[1\]: .*256 tokens/),
    })
  })

  it.each([
    [{ model: ID, input: [] }, /^input: /],
    [{ model: ID, input: '' }, /^input: /],
    [{ model: ID, input: ['ok', ''] }, /^input\[1\]: /],
    [{ model: ID, input: ['ok', 3] }, /^input\[1\]: /],
    [{ model: ID, input: 42 }, /^input: /],
    [{ model: ID, input: 'x', dimensions: 0 }, /^dimensions: /],
    [{ model: ID, input: 'x', dimensions: 385 }, /^dimensions: .*1 to 384/],
    [{ model: ID, input: 'x', dimensions: 2.5 }, /^dimensions: /],
    [{ model: ID, input: 'x', prompt: 'query' }, /^prompt: .*has no prompt named 'query'/],
    [{ model: ID, input: 'x', prompt: 'query', promptText: 'q: ' }, /^prompt: /],
    [{ model: ID, input: 'x', normalize: 'yes' }, /^normalize: /],
    [{ model: ID, input: 'x', batch: 4 }, /^request\.batch: unknown option/],
    [{ model: MODEL, input: 'x' }, /^model: .*generation model and defines no pooling/],
  ])('refuses %j with INVALID_ARGUMENT before any work', async (request, message) => {
    const before = idle().tokensGenerated
    await expect(engine.embed(request as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(message) })
    expect(idle().tokensGenerated).toBe(before)
  })

  it('refuses an unknown model with MODEL_NOT_FOUND', async () => {
    await expect(engine.embed({ model: 'nope', input: 'x' })).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' })
  })

  it('an embedding model refuses to generate, at once', () => {
    expect(() => engine.generate({ model: ID, prompt: 'Hello' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/embedding model/) }))
  })

  it('an aborted signal rejects with AbortError, before work or during it, and the worker lets the call go', async () => {
    const already = new AbortController()
    already.abort(new Error('not needed'))
    await expect(engine.embed({ model: ID, input: 'x' }, { signal: already.signal })).rejects.toMatchObject({ name: 'AbortError', code: 'ABORTED', message: 'not needed' })

    const controller = new AbortController()
    const call = engine.embed({ model: ID, input: MANY }, { signal: controller.signal })
    await waitFor(() => idle().activeRequests === 1, 'the call is admitted')
    controller.abort(new Error('the user left'))
    await expect(call).rejects.toMatchObject({ name: 'AbortError', code: 'ABORTED', message: 'the user left' })
    await waitFor(() => idle().activeRequests === 0, 'the worker drops the call')
    expect((await engine.embed({ model: ID, input: 'still serving' })).embeddings).toHaveLength(1)
  })

  it('times out at its deadline while the worker is busy, and the worker lets the call go', async () => {
    const started = performance.now()
    await expect(engine.embed({ model: ID, input: MANY }, { timeoutMs: 300 })).rejects.toMatchObject({ name: 'TimeoutError', code: 'TIMEOUT' })
    // Far less than the call's own work (thousands of long inputs).
    expect(performance.now() - started).toBeLessThan(300 + 2000)
    await waitFor(() => idle().activeRequests === 0, 'the worker drops the call')
  })

  it('a short query waits for about one pass, not for a large call to finish', async () => {
    const big = engine.embed({ model: ID, input: MANY.slice(0, 120) })
    await waitFor(() => idle().activeRequests === 1, 'the large call is admitted')
    const query = await engine.embed({ model: ID, input: 'where is the fox?' })
    expect(query.embeddings).toHaveLength(1)
    // The large call is still running when the query is answered.
    expect(idle().activeRequests).toBe(1)
    expect((await big).embeddings).toHaveLength(120)
  })
})

describe.skipIf(!present)('embed and shutdown', () => {
  it('shutdown drains, then ends a call still running with SHUTTING_DOWN', async () => {
    const engine = await Engine.create()
    await engine.loadModel({ id: ID, path: MINILM })
    const call = engine.embed({ model: ID, input: MANY })
    const rejected = expect(call).rejects.toMatchObject({ code: 'SHUTTING_DOWN' })
    await waitFor(() => engine.stats().models[0].activeRequests === 1, 'the call is admitted')
    await engine.shutdown({ drainTimeoutMs: 0 })
    await rejected
    await expect(engine.embed({ model: ID, input: 'x' })).rejects.toMatchObject({ code: 'SHUTTING_DOWN' })
  })
})
