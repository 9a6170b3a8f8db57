// Embeddings through every front door: the OpenAI-compatible server (driven by
// the official `openai` client), the AI SDK provider (the real `ai` package's
// embed / embedMany) and the CLI. all-MiniLM-L6-v2 and EmbeddingGemma-300M
// (for its prompts and Matryoshka widths), fetched by `scripts/setup.sh --embeddings`.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { cosineSimilarity, embed, embedMany } from 'ai'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, MODEL, MODEL_PATH } from './helpers'
import type * as Provider from '../lib/ai-sdk.js'
import type * as ServerApi from '../lib/server.js'

const require = createRequire(import.meta.url)
const { createServer } = require('../lib/server.js') as typeof ServerApi
const { createMlxServing } = require('../lib/ai-sdk.js') as typeof Provider

const ROOT = path.resolve(__dirname, '..')
const MINILM = path.join(ROOT, 'models', 'all-MiniLM-L6-v2')
const GEMMA = path.join(ROOT, 'models', 'embeddinggemma-300m')
const present = fs.existsSync(path.join(MINILM, 'modules.json')) && fs.existsSync(path.join(GEMMA, 'modules.json'))
if (!present) console.warn('SKIPPED: the embedding models are missing; run scripts/setup.sh --embeddings')

const docs = [
  'The Eiffel Tower is a wrought-iron lattice tower in Paris.',
  'Photosynthesis turns light, water and carbon dioxide into sugar.',
  'Mount Everest is the highest mountain above sea level.',
]
const query = 'What is the tallest mountain in the world?'

describe.skipIf(!present)('embeddings through the server, the AI SDK and the CLI', () => {
  let engine: InstanceType<typeof Engine>
  let server: ServerApi.MlxServer
  let openai: OpenAI
  let base: string

  beforeAll(async () => {
    engine = await Engine.create()
    await Promise.all([
      engine.loadModel({ id: 'minilm', path: MINILM }),
      engine.loadModel({ id: 'gemma', path: GEMMA }),
      engine.loadModel({ id: MODEL, path: MODEL_PATH }),
    ])
    server = createServer(engine, { port: 0, apiKey: 'k' })
    base = (await server.listen()).url
    openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'k', maxRetries: 0 })
  })
  afterAll(async () => {
    await server?.close()
    await engine?.shutdown()
  })

  const direct = async (model: string, input: string[], extra = {}) => (await engine.embed({ model, input, ...extra })).embeddings

  describe('POST /v1/embeddings with the openai client', () => {
    it('answers a list of texts with the engine\'s vectors (base64, the client\'s default)', async () => {
      const r = await openai.embeddings.create({ model: 'minilm', input: docs })
      expect(r.object).toBe('list')
      expect(r.model).toBe('minilm')
      expect(r.data.map((d) => d.index)).toEqual([0, 1, 2])
      const want = await direct('minilm', docs)
      r.data.forEach((d, i) => d.embedding.forEach((x, k) => expect(x).toBeCloseTo(want[i][k], 6)))
      expect(r.usage).toEqual({ prompt_tokens: docs.reduce((n, t) => n + engine.tokenize('minilm', t).length, 0), total_tokens: expect.any(Number) })
      expect(r.usage.total_tokens).toBe(r.usage.prompt_tokens)
    })

    it('answers one string as floats, with fewer dimensions when asked', async () => {
      const r = await openai.embeddings.create({ model: 'gemma', input: query, encoding_format: 'float', dimensions: 256 })
      expect(r.data).toHaveLength(1)
      expect(r.data[0].embedding).toHaveLength(256)
      const [want] = await direct('gemma', [query], { dimensions: 256 })
      r.data[0].embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i], 6))
    })

    it('takes a model prompt as an extra field', async () => {
      const r = await openai.embeddings.create({ model: 'gemma', input: query, encoding_format: 'float', prompt: 'query' } as never)
      const [want] = await direct('gemma', [query], { prompt: 'query' })
      r.data[0].embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i], 6))
    })

    it('answers bad requests with 400 in OpenAI\'s error shape, and an unknown model with 404', async () => {
      await expect(openai.embeddings.create({ model: 'minilm', input: [] })).rejects.toMatchObject({ status: 400, error: { param: 'input' } })
      await expect(openai.embeddings.create({ model: 'minilm', input: [[1, 2, 3]] })).rejects.toMatchObject({ status: 400, error: { message: expect.stringMatching(/token arrays/) } })
      await expect(openai.embeddings.create({ model: 'minilm', input: 'x', dimensions: 1000 })).rejects.toMatchObject({ status: 400, error: { param: 'dimensions' } })
      await expect(openai.embeddings.create({ model: MODEL, input: 'x' })).rejects.toMatchObject({ status: 400, error: { param: 'model' } })
      await expect(openai.embeddings.create({ model: 'nope', input: 'x' })).rejects.toMatchObject({ status: 404 })
      const r = await fetch(`${base}/v1/embeddings`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer k' },
        body: JSON.stringify({ model: 'minilm', input: 'x', encoding_format: 'int8' }),
      })
      expect(r.status).toBe(400)
      expect((await r.json()).error.param).toBe('encoding_format')
    })

    it('answers a too long input with truncate: false as context_length_exceeded', async () => {
      const long = 'word '.repeat(400)
      await expect(openai.embeddings.create({ model: 'minilm', input: long, truncate: false } as never)).rejects.toMatchObject({
        status: 400,
        error: { code: 'context_length_exceeded', param: 'input' },
      })
    })
  })

  describe('AI SDK embed / embedMany', () => {
    it('embed gives the engine\'s vector and usage', async () => {
      const mlx = createMlxServing(engine)
      const r = await embed({ model: mlx.embeddingModel('minilm'), value: query })
      const [want] = await direct('minilm', [query])
      r.embedding.forEach((x, k) => expect(x).toBeCloseTo(want[k], 6))
      expect(r.usage.tokens).toBe(engine.tokenize('minilm', query).length)
    })

    it('embedMany with textEmbeddingModel and a model prompt finds the right document', async () => {
      const mlx = createMlxServing(engine)
      const { embeddings } = await embedMany({ model: mlx.textEmbeddingModel('gemma', { prompt: 'document' }), values: docs })
      const { embedding } = await embed({
        model: mlx.textEmbeddingModel('gemma'),
        value: query,
        providerOptions: { 'mlx-serving': { prompt: 'query' } },
      })
      const scores = embeddings.map((d) => cosineSimilarity(embedding, d))
      expect(scores.indexOf(Math.max(...scores))).toBe(2)
      const [want] = await direct('gemma', [query], { prompt: 'query' })
      embedding.forEach((x, i) => expect(x).toBeCloseTo(want[i], 6))
    })

    it('embedMany splits nothing and keeps the order of many values', async () => {
      const mlx = createMlxServing(engine)
      const values = Array.from({ length: 50 }, (_, i) => `value ${i}`)
      const { embeddings } = await embedMany({ model: mlx.embeddingModel('minilm'), values })
      const want = await direct('minilm', values)
      embeddings.forEach((v, i) => v.forEach((x, k) => expect(x).toBeCloseTo(want[i][k], 6)))
    })

    it('passes the abort signal and the engine\'s errors through', async () => {
      const mlx = createMlxServing(engine)
      const controller = new AbortController()
      controller.abort(new Error('stop'))
      await expect(embed({ model: mlx.embeddingModel('minilm'), value: 'x', abortSignal: controller.signal, maxRetries: 0 })).rejects.toThrow()
      await expect(embed({ model: mlx.embeddingModel(MODEL), value: 'x', maxRetries: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' })
    })
  })

  describe('mlx-serving embed', () => {
    const cli = (...args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bin', 'mlx-serving.js'), 'embed', ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })

    it('prints one JSON line per text with the engine\'s vector', async () => {
      const r = cli(MINILM, ...docs)
      expect(r.status).toBe(0)
      const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l))
      expect(lines.map((l) => l.text)).toEqual(docs)
      const want = await direct('minilm', docs)
      lines.forEach((l, i) => l.embedding.forEach((x: number, k: number) => expect(x).toBeCloseTo(want[i][k], 6)))
    })

    it('ranks texts read from standard input against a query', () => {
      const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'mlx-serving.js'), 'embed', GEMMA, '--prompt', 'document', '--query', query, '--query-prompt', 'query'], {
        input: docs.join('\n') + '\n',
        encoding: 'utf8',
      })
      expect(r.status).toBe(0)
      const first = r.stdout.trim().split('\n')[0]
      expect(first).toMatch(/^\d\.\d{4} {2}Mount Everest/)
    })

    it('fails with the engine\'s error code', () => {
      const r = cli(MINILM, 'x', '--dimensions', '999')
      expect(r.status).toBe(1)
      expect(r.stderr).toMatch(/INVALID_ARGUMENT: dimensions/)
    })
  })
})
