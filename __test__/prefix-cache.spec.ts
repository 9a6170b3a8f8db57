// Prefix reuse and prompt cache files: a prompt that starts like an earlier
// sequence prefills only what is new, and the answer is the one a cold
// prefill gives, wherever the shared part ends; cache files round-trip and
// every file that does not belong is refused with CACHE_INVALID.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

type E = InstanceType<typeof Engine>
let cold: E // prefix cache off: every prompt prefilled from scratch
let warm: E // default prefix cache
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlx-serving-prefix-'))

beforeAll(async () => {
  cold = await engineWithModel({ prefixCacheMb: 0 })
  warm = await engineWithModel()
})
afterAll(async () => {
  await Promise.all([cold?.shutdown(), warm?.shutdown()])
  fs.rmSync(dir, { recursive: true, force: true })
})

const BASE =
  'The lighthouse keeper kept a logbook of every ship that passed the rocky point. ' +
  'In spring the fishing boats came first, painted red and blue, with nets piled high on their decks. ' +
  'In summer the tall sailing ships arrived from the south, carrying wine, cloth and spices to the harbour town. ' +
  'In autumn the storms began, and the keeper climbed the stairs twice a night to clean the great lens. ' +
  'In winter almost nothing moved on the grey water, and he wrote long letters to his sister in the city. ' +
  'One evening a small boat with a torn sail appeared near the rocks, and the keeper'

const prefix = () => warm.stats().models.find((m) => m.id === MODEL)!.prefixCache

function commonPrefix(a: number[], b: number[]) {
  let n = 0
  while (n < a.length && n < b.length && a[n] === b[n]) n++
  return n
}

async function greedy(engine: E, prompt: string, maxTokens = 20) {
  const r = await drain(engine.generate({ model: MODEL, prompt, maxTokens }))
  expect(r.error).toBeUndefined()
  return r
}

describe('prefix reuse', () => {
  it('gives the cold answer for prompts sharing a prefix cut anywhere, and reports what it reused', async () => {
    const baseRun = await greedy(warm, BASE, 16)
    // What the warm engine now holds: the prompt, and prompt + answer (all but its last token).
    const held = [...warm.tokenize(MODEL, BASE), ...baseRun.ids.slice(0, -1)]
    // Divergence points inside words, after spaces and punctuation, early and late.
    const cuts = [160, 201, 262, 333, 398, 451, 503, BASE.length]
    for (const cut of cuts) {
      const prompt = BASE.slice(0, cut) + ' Suddenly, a bell rang out'
      const ids = warm.tokenize(MODEL, prompt)
      const expected = Math.min(commonPrefix(held, ids), ids.length - 1)
      expect(expected, `cut ${cut} shares at least 32 tokens`).toBeGreaterThanOrEqual(32)
      const before = prefix()
      const hot = await greedy(warm, prompt)
      const after = prefix()
      expect(after.hits - before.hits, `cut ${cut}`).toBe(1)
      // Several entries may share the prompt's start; the longest shared prefix is used.
      expect(after.tokensReused - before.tokensReused, `cut ${cut}`).toBeGreaterThanOrEqual(expected)
      expect(hot.ids, `cut ${cut}: reuse changed the answer`).toEqual((await greedy(cold, prompt)).ids)
    }
    // The whole prompt cached: everything but its last token is reused.
    const before = prefix()
    const again = await greedy(warm, BASE, 16)
    expect(prefix().tokensReused - before.tokensReused).toBe(warm.tokenize(MODEL, BASE).length - 1)
    expect(again.ids).toEqual(baseRun.ids)
  })

  it('turn 2 of a conversation reuses turn 1 and its answer', async () => {
    const history = [
      { role: 'system', content: 'You are a helpful assistant who answers briefly.' },
      { role: 'user', content: BASE + ' What did the keeper see?' },
    ]
    const turn1 = await drain(warm.generate({ model: MODEL, messages: history, maxTokens: 24 }))
    expect(turn1.error).toBeUndefined()
    const turn2 = [...history, { role: 'assistant', content: turn1.text }, { role: 'user', content: 'And what did he do next?' }]
    const before = prefix()
    const hot = await drain(warm.generate({ model: MODEL, messages: turn2, maxTokens: 24 }))
    const reused = prefix().tokensReused - before.tokensReused
    expect(reused).toBeGreaterThan(turn1.final!.usage.promptTokens)
    expect(reused).toBeLessThan(hot.final!.usage.promptTokens)
    expect(hot.ids).toEqual((await drain(cold.generate({ model: MODEL, messages: turn2, maxTokens: 24 }))).ids)
  })

  it('concurrent prompts sharing a system prompt are batched and answer as cold ones do', async () => {
    const system = { role: 'system', content: BASE }
    await drain(warm.generate({ model: MODEL, messages: [system, { role: 'user', content: 'Hi' }], maxTokens: 1 }))
    const questions = ['Who kept the logbook?', 'What came in spring?', 'What did he write in winter?', 'What was torn?']
    const before = prefix()
    const hot = await Promise.all(questions.map((q) => drain(warm.generate({ model: MODEL, messages: [system, { role: 'user', content: q }], maxTokens: 12 }))))
    expect(prefix().hits - before.hits).toBe(questions.length)
    for (const [i, q] of questions.entries()) {
      const ref = await drain(cold.generate({ model: MODEL, messages: [system, { role: 'user', content: q }], maxTokens: 12 }))
      expect(hot[i].ids, q).toEqual(ref.ids)
    }
  })

  it('stays within its budget, evicting the least recently used', async () => {
    // SmolLM2 keeps 46 KiB per token in f32 (23 KiB in f16, a GPU's dtype):
    // 8 MiB (4 MiB) holds about 180 tokens.
    const f32 = cold.modelInfo(MODEL).dtype === 'float32'
    const small = await engineWithModel({ prefixCacheMb: f32 ? 8 : 4 })
    try {
      const stats = () => small.stats().models[0].prefixCache
      // Each about 110 prompt tokens plus 40 generated: two do not fit.
      const first = BASE
      const second =
        'The recipe needs flour, butter, two eggs, a pinch of salt and a cup of cold milk, mixed slowly in a wide bowl. ' +
        'Heat the pan until a drop of water dances on it, then pour a thin layer of batter and tilt the pan so it spreads. ' +
        'After a minute the edges turn golden; lift one with a spatula, flip the pancake and count to thirty. ' +
        'Stack the pancakes on a warm plate under a cloth, and serve them with lemon, sugar or a spoon of jam. When'
      await greedy(small, first, 40)
      await greedy(small, second, 40)
      const s = stats()
      expect(s.evictions).toBeGreaterThanOrEqual(1)
      expect(s.bytes).toBeLessThanOrEqual(8 << 20)
      expect(s.entries).toBeGreaterThanOrEqual(1)
      const hits = s.hits
      await greedy(small, first, 4) // its entry went: a miss
      expect(stats().hits).toBe(hits)
      expect(stats().misses).toBeGreaterThan(s.misses)
    } finally {
      await small.shutdown()
    }
  })

  it('prefixCacheMb is validated', () => {
    for (const bad of [-1, 1.5, Number.NaN, 'x']) {
      expect(() => new Engine({ prefixCacheMb: bad as number })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
    }
  })
})

describe('cache files', () => {
  const file = path.join(dir, 'story.safetensors')

  /** A copy of `file` whose safetensors header metadata was edited by `edit`. */
  function withMetadata(name: string, edit: (meta: Record<string, string>) => void) {
    const bytes = fs.readFileSync(file)
    const n = Number(bytes.readBigUInt64LE(0))
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'))
    edit(header.__metadata__)
    const json = Buffer.from(JSON.stringify(header))
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(json.length))
    const out = path.join(dir, name)
    fs.writeFileSync(out, Buffer.concat([len, json, bytes.subarray(8 + n)]))
    return out
  }

  it('save, then load into a fresh engine: the prompt prefills only its new part, same answer', async () => {
    const saved = await warm.saveCache({ model: MODEL, prompt: BASE }, file)
    expect(saved.tokens).toBe(warm.tokenize(MODEL, BASE).length)
    expect(saved.bytes).toBe(fs.statSync(file).size)
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([])

    const fresh = await engineWithModel()
    try {
      expect(await fresh.loadCache(MODEL, file)).toEqual({ tokens: saved.tokens })
      const prompt = BASE + ' shouted for help.'
      const hot = await greedy(fresh, prompt)
      const s = fresh.stats().models[0].prefixCache
      expect(s.hits).toBe(1)
      expect(s.tokensReused).toBeGreaterThanOrEqual(saved.tokens - 2)
      expect(hot.ids).toEqual((await greedy(cold, prompt)).ids)
    } finally {
      await fresh.shutdown()
    }
  })

  it('refuses another model, another version, a truncated or altered file, with CACHE_INVALID', async () => {
    const bytes = fs.readFileSync(file)
    const truncated = path.join(dir, 'truncated.safetensors')
    fs.writeFileSync(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)))
    const altered = path.join(dir, 'altered.safetensors')
    const flipped = Buffer.from(bytes)
    flipped[flipped.length - 100] ^= 0x10
    fs.writeFileSync(altered, flipped)
    const cases: [string, RegExp][] = [
      [withMetadata('other-model.safetensors', (m) => (m.model_fingerprint = '0'.repeat(64))), /another model/],
      [withMetadata('other-tokenizer.safetensors', (m) => (m.tokenizer = 'f'.repeat(64))), /another tokenizer/],
      [withMetadata('version.safetensors', (m) => (m.version = '99')), /version 99/],
      [truncated, /truncated or corrupt/],
      [altered, /checksum/],
      [path.join(dir, 'missing.safetensors'), /cannot open/],
      [path.join(dir, 'not-a-cache.safetensors'), /safetensors/],
    ]
    fs.writeFileSync(path.join(dir, 'not-a-cache.safetensors'), 'hello')
    // A generation in flight is not disturbed by the refusals.
    const running = drain(warm.generate({ model: MODEL, prompt: 'Count: one, two, three,', maxTokens: 24 }))
    const before = prefix().entries
    for (const [p, message] of cases) {
      await expect(warm.loadCache(MODEL, p), p).rejects.toMatchObject({ code: 'CACHE_INVALID', message: expect.stringMatching(message) })
    }
    const r = await running
    expect(r.error).toBeUndefined()
    expect(r.final!.usage.completionTokens).toBe(24)
    expect(prefix().entries).toBeGreaterThanOrEqual(before)
  })

  it('a file that cannot be written is CACHE_WRITE_FAILED, and bad calls fail before any work', async () => {
    await expect(warm.saveCache({ model: MODEL, prompt: BASE }, path.join(dir, 'no-such-dir', 'x.safetensors'))).rejects.toMatchObject({
      code: 'CACHE_WRITE_FAILED',
    })
    await expect(warm.saveCache({ model: MODEL, prompt: BASE }, '')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await expect(warm.saveCache({ model: MODEL, prompt: BASE, maxTokens: 3 } as never, file)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    await expect(warm.loadCache('nope', file)).rejects.toMatchObject({ code: 'MODEL_NOT_FOUND' })
    await expect(cold.loadCache(MODEL, file)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/prefixCacheMb/) })
  })
})

const GEMMA_PATH = path.resolve(__dirname, '..', 'models', 'gemma-3-270m-q4_k_m.gguf')

describe.skipIf(!fs.existsSync(GEMMA_PATH))('prefix reuse with sliding-window layers (Gemma 3)', () => {
  it('gives the cold answer for shared prefixes shorter and longer than the 512-token window', async () => {
    const [g0, g1] = await Promise.all([Engine.create({ prefixCacheMb: 0 }), Engine.create()])
    try {
      await Promise.all([g0.loadModel({ id: 'g', path: GEMMA_PATH }), g1.loadModel({ id: 'g', path: GEMMA_PATH })])
      const base = BASE.repeat(7) // about 800 tokens
      const run = async (e: E, prompt: string) => (await e.generate({ model: 'g', prompt, maxTokens: 8 }).collect()).tokenIds
      await run(g1, base)
      for (const cut of [400, 1900, 3100, base.length]) {
        const prompt = base.slice(0, cut) + ' Suddenly, a bell rang out'
        const reused = g1.stats().models[0].prefixCache.tokensReused
        expect(await run(g1, prompt), `cut ${cut}`).toEqual(await run(g0, prompt))
        expect(g1.stats().models[0].prefixCache.tokensReused, `cut ${cut} was reused`).toBeGreaterThan(reused)
      }
      // A cache file of another model (SmolLM2's) is refused.
      const smol = path.join(dir, 'smol.safetensors')
      await warm.saveCache({ model: MODEL, prompt: BASE }, smol)
      await expect(g1.loadCache('g', smol)).rejects.toMatchObject({ code: 'CACHE_INVALID', message: expect.stringMatching(/another model/) })
    } finally {
      await Promise.all([g0.shutdown(), g1.shutdown()])
    }
  })
})
