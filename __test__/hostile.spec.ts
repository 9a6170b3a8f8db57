// Hostile input: random option objects, broken strings, empty and oversized
// prompts, huge stop lists and odd message arrays. Every call gets a typed
// error or a valid completion; the process survives; normal work still runs.
import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, ErrorCode, MODEL } from './helpers'

let engine: InstanceType<typeof Engine>
const codes = new Set(Object.values(ErrorCode))
const figures: Record<string, number> = {}

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 4 })
})
afterAll(async () => {
  console.log('hostile figures', JSON.stringify(figures))
  await engine?.shutdown()
})

/** Strings that are awkward: lone surrogates (invalid UTF-16/UTF-8), NULs, specials. */
const nastyString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'grapheme' }),
  fc.constantFrom('', ' ', '\u0000', '\uD800', 'a\uDFFFb', '\uFFFE', '<|im_start|>', '<|im_end|>', '<|endoftext|>', '{{ raise }}', '\n'.repeat(50)),
  fc.string({ unit: 'binary', maxLength: 64 }),
)

const anyValue = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.integer({ min: -10, max: 40 }),
  nastyString,
  fc.array(fc.oneof(nastyString, fc.integer()), { maxLength: 5 }),
  fc.object({ maxDepth: 1 }),
)

const messages = fc.oneof(
  fc.array(fc.record({ role: fc.constantFrom('user', 'system', 'assistant', 'tool', ''), content: nastyString }), { maxLength: 6 }),
  fc.array(anyValue, { maxLength: 4 }),
  anyValue,
)

/** Mostly plausible values, sometimes anything at all. */
const mostly = <T,>(valid: fc.Arbitrary<T>) => fc.oneof({ arbitrary: valid, weight: 12 }, { arbitrary: anyValue, weight: 1 })

const options = fc.record(
  {
    maxTokens: mostly(fc.integer({ min: 0, max: 8 })),
    temperature: mostly(fc.double({ min: 0, max: 3, noNaN: true })),
    topK: mostly(fc.integer({ min: 0, max: 100 })),
    topP: mostly(fc.double({ min: 0.01, max: 1, noNaN: true })),
    minP: mostly(fc.double({ min: 0, max: 1, noNaN: true })),
    repetitionPenalty: mostly(fc.double({ min: 0.5, max: 2, noNaN: true })),
    seed: mostly(fc.integer({ min: 0, max: 2 ** 40 })),
    stop: mostly(fc.array(fc.oneof(fc.string({ minLength: 1 }), nastyString), { maxLength: 300 })),
  },
  { requiredKeys: [] },
)

const input = fc.oneof(
  { arbitrary: fc.record({ prompt: nastyString }), weight: 4 },
  { arbitrary: fc.record({ messages }), weight: 3 },
  { arbitrary: fc.record({ prompt: anyValue, messages: anyValue }, { requiredKeys: [] }), weight: 1 },
  { arbitrary: fc.record({ bogus: anyValue }), weight: 1 },
)

const request = fc
  .tuple(mostly(fc.constant(MODEL)), options, input)
  .map(([model, o, i]) => ({ model, ...o, ...i }))

/** Runs one call; returns its kind of end. Fails the property on anything untyped. */
async function attempt(req: unknown, options: unknown): Promise<string> {
  let stream
  try {
    stream = engine.generate(req as never, options as never)
  } catch (e) {
    const code = (e as { code?: string }).code
    if (!code || !codes.has(code as never)) throw new Error(`untyped synchronous error: ${String(e)}`)
    return `throw:${code}`
  }
  const r = await drain(stream)
  if (r.error) {
    const code = r.error.code
    if (!code || !codes.has(code as never)) throw new Error(`untyped stream error: ${String(r.error)}`)
    return `reject:${code}`
  }
  if (!r.final) throw new Error('stream ended without a final chunk')
  expect(r.final.usage.completionTokens).toBe(r.ids.length)
  return `final:${r.final.finishReason}`
}

async function normalRequestWorks() {
  const r = await drain(engine.generate({ model: MODEL, prompt: '1, 2, 3,', maxTokens: 5 }))
  expect(r.error).toBeUndefined()
  expect(r.ids).toHaveLength(5)
}

describe('hostile input', () => {
  it('random option objects get a typed error or a valid completion', { timeout: 1_200_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(request, fc.oneof(fc.constant(undefined), fc.record({ timeoutMs: fc.oneof(fc.integer({ min: 1, max: 3000 }), anyValue) }, { requiredKeys: [] }), anyValue), async (req, options) => {
        // Every accepted call also gets a deadline so a huge maxTokens cannot stall the run.
        let opts = options
        if (opts === undefined) opts = { timeoutMs: 3000 }
        else if (opts && typeof opts === 'object' && !Array.isArray(opts) && (opts as { timeoutMs?: unknown }).timeoutMs === undefined) opts = { ...opts, timeoutMs: 3000 }
        const kind = await attempt(req, opts)
        figures[kind] = (figures[kind] ?? 0) + 1
      }),
      { numRuns: 200, seed: Number(process.env.FC_SEED ?? 424242) },
    )
    expect(Object.keys(figures).some((k) => k.startsWith('final:'))).toBe(true)
    await normalRequestWorks()
  })

  it('invalid UTF-16 (lone surrogates) in prompts and messages is replaced, not fatal', async () => {
    const r = await drain(engine.generate({ model: MODEL, prompt: 'bad \uD800 text \uDFFF', maxTokens: 3 }))
    expect(r.final).toBeDefined()
    expect(engine.tokenize(MODEL, '\uD800')).toEqual(engine.tokenize(MODEL, '\uFFFD'))
    const m = await drain(engine.generate({ model: MODEL, messages: [{ role: 'user', content: '\uDBFF' }], maxTokens: 3 }))
    expect(m.final).toBeDefined()
  })

  it('an empty prompt is INVALID_ARGUMENT', async () => {
    const r = await drain(engine.generate({ model: MODEL, prompt: '', maxTokens: 3 }))
    expect(r.error).toMatchObject({ code: 'INVALID_ARGUMENT' })
  })

  it('a prompt past the context length is CONTEXT_OVERFLOW, and so is maxTokens past it', async () => {
    const info = engine.modelInfo(MODEL)
    const long = await drain(engine.generate({ model: MODEL, prompt: 'word '.repeat(info.contextLength + 10), maxTokens: 1 }))
    expect(long.error).toMatchObject({ code: 'CONTEXT_OVERFLOW' })
    const greedy = await drain(engine.generate({ model: MODEL, prompt: 'Hello', maxTokens: info.contextLength }))
    expect(greedy.error).toMatchObject({ code: 'CONTEXT_OVERFLOW' })
    await normalRequestWorks()
  })

  it('a huge stop list is refused up front; a large valid one works', async () => {
    expect(() => engine.generate({ model: MODEL, prompt: 'x', stop: Array.from({ length: 100_000 }, (_, i) => `stop${i}`) })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    )
    const r = await drain(engine.generate({ model: MODEL, prompt: '1, 2, 3,', maxTokens: 10, stop: Array.from({ length: 256 }, (_, i) => `zz${i}zz`) }))
    expect(r.ids).toHaveLength(10)
  })

  it('odd message arrays', async () => {
    const odd = [
      [{ role: 'assistant', content: 'I speak first.' }],
      [{ role: 'user', content: '' }],
      Array.from({ length: 60 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `turn ${i}` })),
      [{ role: 'system', content: 'only a system message' }],
      [{ role: '<|im_end|>', content: '<|im_start|>' }],
    ]
    for (const m of odd) {
      const kind = await attempt({ model: MODEL, messages: m, maxTokens: 3 }, { timeoutMs: 60_000 })
      expect(kind).toMatch(/^final:|^reject:(INVALID_ARGUMENT|CONTEXT_OVERFLOW)$/)
    }
    await normalRequestWorks()
  })
})
