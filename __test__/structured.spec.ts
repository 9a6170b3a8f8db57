// Constrained output (`responseFormat`) on the real model: every output
// parses and is valid under its JSON schema (checked with ajv), greedy and
// sampled, eight constrained rows decoding beside free-text rows; regexes,
// Lark grammars, `maxTokens` mid-object, and every way a constraint is refused.
import Ajv2020 from 'ajv/dist/2020'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, Engine, engineWithModel, MODEL, MODEL_PATH } from './helpers'

type Schema = Record<string, unknown>

const str = (maxLength: number, extra: Schema = {}) => ({ type: 'string', maxLength, ...extra })
const int = (minimum: number, maximum: number) => ({ type: 'integer', minimum, maximum })
const object = (properties: Record<string, unknown>, required = Object.keys(properties)) => ({ type: 'object', properties, required, additionalProperties: false })

/** 22 schemas: nested objects, arrays with bounds, enums, anyOf/oneOf, const, nullable, patterns, bounded numbers, $ref, closed objects. */
const SCHEMAS: [string, Schema][] = [
  ['person', object({ name: str(20), age: int(0, 120) })],
  ['nested address', object({ name: str(20), address: object({ street: str(30), city: str(20), zip: { type: 'string', pattern: '^[0-9]{5}$' } }) })],
  ['array of strings with min/max items', object({ tags: { type: 'array', items: str(12), minItems: 2, maxItems: 4 } })],
  ['string enum', object({ color: { enum: ['red', 'green', 'blue'] } })],
  ['anyOf integer or string', object({ value: { anyOf: [int(0, 100), str(10)] } })],
  ['const', object({ kind: { const: 'point' }, x: int(-10, 10), y: int(-10, 10) })],
  ['nullable', object({ middleName: { type: ['string', 'null'], maxLength: 10 } })],
  ['pattern', object({ code: { type: 'string', pattern: '^[A-Z]{3}-[0-9]{3}$' } })],
  ['number with bounds', object({ temperature: { type: 'number', minimum: -50, maximum: 50 } })],
  ['boolean and integer', object({ done: { type: 'boolean' }, count: int(0, 10) })],
  ['array of objects', object({ items: { type: 'array', items: object({ name: str(10), qty: int(1, 9) }), minItems: 1, maxItems: 3 } })],
  ['exclusive bounds', object({ score: { type: 'integer', exclusiveMinimum: 0, exclusiveMaximum: 10 } })],
  ['string length bounds', object({ word: { type: 'string', minLength: 3, maxLength: 8 } })],
  ['nested arrays', object({ matrix: { type: 'array', minItems: 2, maxItems: 2, items: { type: 'array', minItems: 2, maxItems: 2, items: int(0, 9) } } })],
  ['mixed enum', object({ level: { enum: [1, 2, 3, 'max'] } })],
  ['$defs and $ref', { ...object({ from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } }), $defs: { point: object({ x: int(0, 9), y: int(0, 9) }) } }],
  ['anyOf of objects', object({ shape: { anyOf: [object({ type: { const: 'circle' }, r: int(1, 9) }), object({ type: { const: 'square' }, side: int(1, 9) })] } })],
  ['date pattern', object({ date: { type: 'string', pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$' } })],
  ['optional property', object({ title: str(20), subtitle: str(20) }, ['title'])],
  ['top-level array', { type: 'array', items: { enum: ['apple', 'pear', 'plum'] }, minItems: 1, maxItems: 5 }],
  ['oneOf', object({ id: { oneOf: [int(0, 999), { type: 'string', pattern: '^[a-z]{4}$' }] } })],
  ['closed object with a nested nullable array', object({ name: str(12), aliases: { anyOf: [{ type: 'array', items: str(8), maxItems: 2 }, { type: 'null' }] } })],
]

const ajv = new Ajv2020({ strict: false })
const BATCH = 8
const MAX_TOKENS = 200

let engine: Awaited<ReturnType<typeof engineWithModel>>

beforeAll(async () => {
  // Eight constrained rows and two free-text ones decode together.
  engine = await engineWithModel({ maxBatchSize: BATCH + 2 })
})
afterAll(async () => {
  await engine?.shutdown()
})

function request(schema: Schema, sampled: boolean) {
  const messages = ask(`Reply with JSON that matches this JSON schema: ${JSON.stringify(schema)}`)
  return { model: MODEL, messages, maxTokens: MAX_TOKENS, responseFormat: { type: 'json_schema' as const, schema }, ...(sampled ? { temperature: 0.8, seed: 7 } : {}) }
}

describe.each([
  ['greedy', false],
  ['sampled', true],
])('%s: JSON schemas', (_, sampled) => {
  for (let from = 0; from < SCHEMAS.length; from += BATCH) {
    const group = SCHEMAS.slice(from, from + BATCH)
    it(`${group.map(([name]) => name).join(', ')}: ${group.length} at once beside free text, each valid`, async () => {
      const free = [
        engine.generate({ model: MODEL, messages: ask('Tell me about the sea.'), maxTokens: 40 }),
        engine.generate({ model: MODEL, prompt: 'Once upon a time', maxTokens: 40, temperature: 0.7, seed: 1 }),
      ]
      const results = await Promise.all([...group.map(([, schema]) => drain(engine.generate(request(schema, sampled)))), ...free.map(drain)])
      group.forEach(([name, schema], i) => {
        const { text, final, error } = results[i]
        expect(error, name).toBeUndefined()
        expect(final?.finishReason, `${name}: ${text}`).toBe('stop')
        let value: unknown
        expect(() => (value = JSON.parse(text)), `${name}: ${text}`).not.toThrow()
        const valid = ajv.validate(schema, value)
        expect(valid, `${name}: ${text} ${ajv.errorsText()}`).toBe(true)
      })
      for (const r of results.slice(group.length)) {
        expect(r.error).toBeUndefined()
        expect(r.final?.usage.completionTokens).toBeGreaterThan(0)
      }
      const masks = engine.stats().models[0].constraintMasks
      expect(masks.masks).toBeGreaterThan(0)
    })
  }
})

describe('other formats', () => {
  it('json_object gives a JSON object', async () => {
    const { text, final } = await drain(engine.generate({ model: MODEL, messages: ask('Reply with a JSON object with the name and the age of a cat.'), maxTokens: MAX_TOKENS, responseFormat: { type: 'json_object' } }))
    expect(final?.finishReason, text).toBe('stop')
    const value = JSON.parse(text)
    expect(typeof value === 'object' && value !== null && !Array.isArray(value), text).toBe(true)
  })

  it('a regex constrains the whole output, greedy and sampled', async () => {
    for (const sampling of [{}, { temperature: 1, seed: 3 }]) {
      const { text, final } = await drain(
        engine.generate({ model: MODEL, prompt: 'My phone number is', maxTokens: 30, responseFormat: { type: 'regex', pattern: '\\+[0-9]{2} [0-9]{3}-[0-9]{4}' }, ...sampling }),
      )
      expect(text).toMatch(/^\+[0-9]{2} [0-9]{3}-[0-9]{4}$/)
      expect(final?.finishReason).toBe('stop')
    }
  })

  it('a Lark grammar constrains the output', async () => {
    const lark = 'start: answer " because " reason\nanswer: "yes" | "no"\nreason: /[a-z ]{1,30}/'
    const { text, final } = await drain(engine.generate({ model: MODEL, messages: ask('Is the sky blue?'), maxTokens: 40, responseFormat: { type: 'grammar', lark } }))
    expect(text).toMatch(/^(yes|no) because [a-z ]{1,30}$/)
    expect(final?.finishReason).toBe('stop')
  })

  it('maxTokens reached mid-object ends with length and the text so far', async () => {
    const schema = object({ story: str(400) })
    const { text, final } = await drain(engine.generate({ ...request(schema, false), maxTokens: 6 }))
    expect(final?.finishReason).toBe('length')
    expect(final?.usage.completionTokens).toBe(6)
    expect(text.startsWith('{"story": "'), text).toBe(true)
    expect(() => JSON.parse(text)).toThrow()
  })
})

describe('refused before any work', () => {
  const cases: [string, unknown, RegExp][] = [
    ['a schema that is not an object', { type: 'json_schema', schema: 'yes' }, /^responseFormat\.schema: expected a JSON schema/],
    ['an invalid schema', { type: 'json_schema', schema: { type: 'wat' } }, /^responseFormat\.schema: /],
    ['an unsupported schema keyword', { type: 'json_schema', schema: { type: 'object', if: { type: 'object' } } }, /^responseFormat\.schema: .*Unimplemented keys: \["if"\]/],
    ['a reference to nothing', { type: 'json_schema', schema: { $ref: '#/$defs/missing' } }, /^responseFormat\.schema: /],
    ['an invalid regex', { type: 'regex', pattern: '(unclosed' }, /^responseFormat\.pattern: /],
    ['an invalid grammar', { type: 'grammar', lark: 'start: undefined_rule' }, /^responseFormat\.lark: /],
    ['an unknown type', { type: 'xml' }, /^responseFormat\.type: /],
    ['a missing pattern', { type: 'regex' }, /^responseFormat\.pattern: expected a string/],
    ['an unknown field', { type: 'json_object', schema: {} }, /^responseFormat\.schema: unknown option/],
  ]
  it.each(cases)('%s', (_, responseFormat, message) => {
    let error: (Error & { code?: string }) | undefined
    try {
      engine.generate({ model: MODEL, prompt: 'x', responseFormat } as never)
    } catch (e) {
      error = e as Error & { code?: string }
    }
    expect(error?.code).toBe('INVALID_ARGUMENT')
    expect(error?.message).toMatch(message)
    const stats = engine.stats().models[0]
    expect(stats.activeRequests + stats.queuedRequests).toBe(0)
  })

  it('a schema sent while the model loads is refused as the stream’s end, before any token', async () => {
    const fresh = await Engine.create()
    try {
      const loading = fresh.loadModel({ id: MODEL, path: MODEL_PATH })
      const { chunks, error } = await drain(fresh.generate({ model: MODEL, prompt: 'x', responseFormat: { type: 'json_schema', schema: { type: 'object', if: {} } } }))
      await loading
      expect(chunks).toEqual([])
      expect(error?.code).toBe('INVALID_ARGUMENT')
      expect(error?.message).toMatch(/^responseFormat\.schema: .*Unimplemented keys/)
    } finally {
      await fresh.shutdown()
    }
  })
})

describe('a grammar too expensive to follow', () => {
  it('fails its request with GRAMMAR_TOO_COMPLEX after its tokens; batch mates go on', async () => {
    // Every split of the text is a parse: each token costs more than the last
    // until the per-token limit (or llguidance's row limit) is passed.
    const lark = 'start: s\ns: s s | "a" | "b"'
    const heavy = drain(engine.generate({ model: MODEL, prompt: 'abba', maxTokens: 4000, temperature: 1, seed: 5, responseFormat: { type: 'grammar', lark } }))
    const mates = [0, 1].map(() => drain(engine.generate({ model: MODEL, messages: ask('Name three rivers.'), maxTokens: 60 })))
    const { chunks, error } = await heavy
    expect(error?.code).toBe('GRAMMAR_TOO_COMPLEX')
    expect(chunks.length).toBeGreaterThan(0)
    expect(chunks.map((c) => c.text).join('')).toMatch(/^[ab]+$/)
    for (const mate of await Promise.all(mates)) {
      expect(mate.error).toBeUndefined()
      expect(mate.final?.usage.completionTokens).toBeGreaterThan(0)
    }
  })
})
