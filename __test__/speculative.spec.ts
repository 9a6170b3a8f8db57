// Speculative decoding: guesses looked up in the text or drafted by a smaller
// model, verified by the real model in one pass, must give exactly the answer
// plain decoding gives (the same token ids, text and end, greedy or sampled
// with a seed), end as plain requests end, and refuse bad input before work.
//
// Every guess is verified here (MLX_SERVING_SPECULATE=always): whether a
// guess pays is the engine's call on a given machine, and a test must not
// depend on a busy machine's speed.
process.env.MLX_SERVING_SPECULATE = 'always'

import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, MODEL, MODEL_PATH } from './helpers'

const models = path.resolve(__dirname, '..', 'models')
const QWEN = path.join(models, 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const QWEN_15B = path.join(models, 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf')
const haveQwen = fs.existsSync(QWEN) && fs.existsSync(QWEN_15B)

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  // Batches of one: every request decodes alone, so every one speculates.
  engine = await Engine.create({ maxBatchSize: 1 })
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  if (haveQwen) {
    await engine.loadModel({ id: 'qwen-0.5b', path: QWEN })
    await engine.loadModel({ id: 'qwen-1.5b', path: QWEN_15B })
  }
}, 600_000)
afterAll(async () => {
  await engine?.shutdown()
})

const quote =
  'The river rises in the hills above the town, runs past the old mill and the church, and reaches the sea after forty miles of fields and woods.'
const chat = (content: string) => [{ role: 'user' as const, content }]

type Request = Parameters<InstanceType<typeof Engine>['generate']>[0]

/** The request plainly, then with `speculative`: the same answer, and what was guessed. */
async function samePlainAndSpeculative(request: Request, speculative: NonNullable<Request['speculative']>) {
  const plain = await drain(engine.generate({ ...request, speculative: false }))
  const spec = await drain(engine.generate({ ...request, speculative }))
  expect(plain.error).toBeUndefined()
  expect(spec.error).toBeUndefined()
  expect(spec.ids).toEqual(plain.ids)
  expect(spec.text).toEqual(plain.text)
  expect(spec.final?.finishReason).toBe(plain.final?.finishReason)
  expect(plain.final?.usage.draftedTokens).toBe(0)
  return spec.final!.usage
}

describe('speculative decoding', () => {
  it('prompt lookup gives plain decoding tokens, greedy and sampled with a seed', async () => {
    const lookup = { type: 'prompt_lookup' as const }
    const repeat = await samePlainAndSpeculative({ model: MODEL, messages: chat(`Repeat this sentence exactly: ${quote}`), maxTokens: 48 }, lookup)
    // The answer quotes the prompt: most guesses are right.
    expect(repeat.draftedTokens).toBeGreaterThan(0)
    expect(repeat.acceptedTokens).toBeGreaterThan(repeat.draftedTokens / 3)
    await samePlainAndSpeculative({ model: MODEL, messages: chat('Name three rivers in Europe.'), maxTokens: 40 }, lookup)
    for (const seed of [1, 2, 3]) {
      const usage = await samePlainAndSpeculative(
        { model: MODEL, messages: chat(`Repeat this sentence: ${quote}`), maxTokens: 40, temperature: 0.8, topP: 0.95, seed },
        { type: 'prompt_lookup', maxDraft: 4, ngram: 2 },
      )
      expect(usage.draftedTokens).toBeGreaterThan(0)
    }
    // A repetition penalty looks at the guesses accepted before each position.
    await samePlainAndSpeculative({ model: MODEL, prompt: 'one two three one two three one two', maxTokens: 24, repetitionPenalty: 1.3 }, lookup)
  })

  it('stop strings and maxTokens end a speculative request where they end a plain one', async () => {
    const lookup = { type: 'prompt_lookup' as const }
    const request = { model: MODEL, messages: chat(`Repeat this sentence exactly: ${quote}`) }
    // A stop string inside a verified run of guesses.
    await samePlainAndSpeculative({ ...request, maxTokens: 48, stop: [' church'] }, lookup)
    // maxTokens inside a verified run of guesses, and at every small count.
    for (const maxTokens of [1, 2, 3, 7, 20]) {
      const usage = await samePlainAndSpeculative({ ...request, maxTokens }, lookup)
      expect(usage.completionTokens).toBeLessThanOrEqual(maxTokens)
    }
  })

  it('an abort ends it as it ends a plain request, after a prefix of the answer', async () => {
    const request = { model: MODEL, messages: chat(`Repeat this sentence exactly: ${quote}`), maxTokens: 48 }
    const plain = await drain(engine.generate(request))
    const controller = new AbortController()
    const stream = engine.generate({ ...request, speculative: { type: 'prompt_lookup' } }, { signal: controller.signal })
    const ids: number[] = []
    let error: (Error & { code?: string }) | undefined
    try {
      for await (const chunk of stream) {
        ids.push(...chunk.tokenIds)
        if (ids.length >= 5) controller.abort()
      }
    } catch (e) {
      error = e as Error & { code?: string }
    }
    expect(error?.code).toBe('ABORTED')
    expect(plain.ids.slice(0, ids.length)).toEqual(ids)
    expect(engine.stats().models.every((m) => m.activeRequests === 0)).toBe(true)
  })

  it('under a JSON schema, guesses the schema forbids are cut and the answer is the plain one', async () => {
    // Extraction copies text from the prompt into JSON: prompt lookup guesses
    // it, and each guessed position gets the mask plain decoding would give.
    const schema = {
      type: 'object',
      properties: { sentence: { type: 'string', maxLength: 200 }, places: { type: 'array', items: { enum: ['hills', 'town', 'mill', 'church', 'sea'] }, maxItems: 5 } },
      required: ['sentence', 'places'],
      additionalProperties: false,
    }
    const lookup = { type: 'prompt_lookup' as const }
    const request = {
      model: MODEL,
      messages: chat(`Copy this sentence into "sentence" and list the places it names, as JSON: ${quote}`),
      responseFormat: { type: 'json_schema' as const, schema },
      maxTokens: 120,
    }
    const greedy = await samePlainAndSpeculative(request, lookup)
    expect(greedy.draftedTokens).toBeGreaterThan(0)
    const text = (await engine.generate({ ...request, speculative: lookup }).collect()).text
    const parsed = JSON.parse(text)
    expect(Object.keys(parsed).sort()).toEqual(['places', 'sentence'])
    await samePlainAndSpeculative({ ...request, temperature: 0.7, seed: 5 }, lookup)
    // A regular expression that guesses from the prompt cannot satisfy: every guess is cut.
    await samePlainAndSpeculative({ model: MODEL, messages: chat(`Repeat this sentence exactly: ${quote}`), responseFormat: { type: 'regex', pattern: '[0-9]{1,6}' }, maxTokens: 10 }, lookup)
  })

  it.skipIf(!haveQwen)('a draft model gives the model plain decoding tokens, greedy and sampled with a seed', async () => {
    const draft = { type: 'draft' as const, model: 'qwen-0.5b' }
    const greedy = await samePlainAndSpeculative({ model: 'qwen-1.5b', messages: chat('Write a Python function that reverses a list.'), maxTokens: 40 }, draft)
    expect(greedy.draftedTokens).toBeGreaterThan(0)
    // The smaller model agrees with the larger one on much of it.
    expect(greedy.acceptedTokens).toBeGreaterThan(0)
    const sampled = await samePlainAndSpeculative(
      { model: 'qwen-1.5b', messages: chat('Name a few uses of a hash map.'), maxTokens: 32, temperature: 0.7, seed: 9 },
      { ...draft, maxDraft: 3 },
    )
    expect(sampled.draftedTokens).toBeGreaterThan(0)
    const stats = engine.stats().models.find((m) => m.id === 'qwen-1.5b')!.speculative
    expect(stats.draftedTokens).toBeGreaterThanOrEqual(greedy.draftedTokens + sampled.draftedTokens)
    expect(stats.acceptanceRate).toBeGreaterThan(0)
    expect(stats.acceptanceRate).toBeLessThanOrEqual(1)
  })

  it.skipIf(!haveQwen)("a model's default applies to requests that do not say, and false turns it off", async () => {
    // Loading a loaded model again (same id and file) sets its default.
    const id = 'qwen-1.5b'
    await engine.loadModel({ id, path: QWEN_15B, speculative: { type: 'draft', model: 'qwen-0.5b', maxDraft: 4 } })
    try {
      const request = { model: id, messages: chat('Say hello.'), maxTokens: 12 }
      const on = await drain(engine.generate(request))
      const off = await drain(engine.generate({ ...request, speculative: false }))
      expect(on.final?.usage.draftedTokens).toBeGreaterThan(0)
      expect(off.final?.usage.draftedTokens).toBe(0)
      expect(on.ids).toEqual(off.ids)
    } finally {
      await engine.loadModel({ id, path: QWEN_15B, speculative: false })
    }
    const after = await drain(engine.generate({ model: id, messages: chat('Say hello.'), maxTokens: 4 }))
    expect(after.final?.usage.draftedTokens).toBe(0)
  })

  it('bad speculative options are INVALID_ARGUMENT before any work, and nothing in flight is lost', async () => {
    const running = drain(engine.generate({ model: MODEL, prompt: 'Count: one, two,', maxTokens: 16, speculative: { type: 'prompt_lookup' } }))
    const bad = [
      [{ type: 'lookup' }, 'speculative.type'],
      [{ type: 'prompt_lookup', maxDraft: 0 }, 'speculative.maxDraft'],
      [{ type: 'prompt_lookup', maxDraft: 17 }, 'speculative.maxDraft'],
      [{ type: 'prompt_lookup', ngram: 1.5 }, 'speculative.ngram'],
      [{ type: 'prompt_lookup', model: MODEL }, 'speculative.model'],
      [{ type: 'draft' }, 'speculative.model'],
      [{ type: 'draft', model: 'not-loaded' }, 'speculative.model'],
      [{ type: 'draft', model: MODEL }, 'speculative.model'],
      [{ type: 'prompt_lookup', extra: 1 }, 'speculative.extra'],
      [true, 'speculative'],
      ['prompt_lookup', 'speculative'],
    ] as const
    for (const [speculative, field] of bad) {
      expect(() => engine.generate({ model: MODEL, prompt: 'Hi', speculative: speculative as never }), JSON.stringify(speculative)).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining(field) }),
      )
    }
    if (haveQwen) {
      // Another vocabulary: SmolLM2 cannot draft for Qwen.
      expect(() => engine.generate({ model: 'qwen-1.5b', prompt: 'Hi', speculative: { type: 'draft', model: MODEL } })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('vocabulary') }),
      )
    }
    const r = await running
    expect(r.error).toBeUndefined()
    expect(r.final?.finishReason).toBeDefined()
  })
})
