// The OpenAI-compatible HTTP server, driven by the official `openai` client
// (and by plain HTTP where a client would never send such a request).
import { createRequire } from 'node:module'
import OpenAI from 'openai'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, engineWithModel, MODEL, MODEL_PATH, waitFor } from './helpers'
import type * as ServerApi from '../lib/server.js'

const require = createRequire(import.meta.url)
const { createServer } = require('../lib/server.js') as typeof ServerApi

const API_KEY = 'test-key'
let engine: InstanceType<typeof Engine>
let server: ServerApi.MlxServer
let base: string
let openai: OpenAI

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 8, maxQueued: 32 })
  server = createServer(engine, { port: 0, apiKey: API_KEY, bodyLimitBytes: 64 * 1024 })
  base = (await server.listen()).url
  openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: API_KEY, maxRetries: 0 })
})
afterAll(async () => {
  await server?.close()
  await engine?.shutdown()
})

const counting = { model: MODEL, messages: [{ role: 'user' as const, content: 'Count from 1 to 100, separated by commas.' }] }

function post(path: string, body: string | object, headers: Record<string, string> = {}) {
  return fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}

describe('OpenAI API through the openai client', () => {
  it('createServer and createHandler take an Engine only, and say what they got instead', () => {
    const { createHandler } = require('../lib/server.js') as typeof ServerApi
    expect(() => createServer(undefined as unknown as InstanceType<typeof Engine>)).toThrow(
      new TypeError('createServer: expected an Engine, got undefined'),
    )
    expect(() => createServer({ generate() {} } as unknown as InstanceType<typeof Engine>)).toThrow(
      new TypeError('createServer: expected an Engine, got an object'),
    )
    expect(() => createHandler(Engine as unknown as InstanceType<typeof Engine>)).toThrow(
      new TypeError('createHandler: expected an Engine, got a function (Engine)'),
    )
  })

  it('lists the loaded models', async () => {
    const models = await openai.models.list()
    expect(models.data.map((m) => m.id)).toEqual([MODEL])
  })

  it('chat completion, not streamed: the same greedy text as the engine gives directly', async () => {
    const r = await openai.chat.completions.create({ ...counting, max_tokens: 12, temperature: 0 })
    const direct = await engine.generate({ ...counting, maxTokens: 12, temperature: 0 }).collect()
    expect(r.object).toBe('chat.completion')
    expect(r.choices).toHaveLength(1)
    expect(r.choices[0].message).toMatchObject({ role: 'assistant', content: direct.text })
    expect(r.choices[0].finish_reason).toBe('length')
    expect(r.usage).toEqual({ prompt_tokens: direct.usage.promptTokens, completion_tokens: 12, total_tokens: direct.usage.promptTokens + 12 })
  })

  it('chat completion, streamed, with usage at the end', async () => {
    const stream = await openai.chat.completions.create({ ...counting, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } })
    let text = ''
    const finishes: (string | null)[] = []
    let usage: OpenAI.CompletionUsage | undefined | null
    for await (const chunk of stream) {
      expect(chunk.object).toBe('chat.completion.chunk')
      if (chunk.usage) usage = chunk.usage
      for (const c of chunk.choices) {
        text += c.delta.content ?? ''
        if (c.finish_reason) finishes.push(c.finish_reason)
      }
    }
    const direct = await engine.generate({ ...counting, maxTokens: 10, temperature: 0 }).collect()
    expect(text).toBe(direct.text)
    expect(finishes).toEqual(['length'])
    expect(usage).toMatchObject({ completion_tokens: 10 })
  })

  it('text completion, streamed and not; stop and seed are honoured', async () => {
    const request = { model: MODEL, prompt: 'The numbers from one to fifty are: one, two, three,', max_tokens: 30, temperature: 0 }
    const whole = await openai.completions.create(request)
    expect(whole.object).toBe('text_completion')
    const at = whole.choices[0].text.indexOf(' six')
    expect(at).toBeGreaterThan(0)
    const stopped = await openai.completions.create({ ...request, stop: [' six'] })
    expect(stopped.choices[0].text).toBe(whole.choices[0].text.slice(0, at))
    expect(stopped.choices[0].finish_reason).toBe('stop')
    let streamed = ''
    for await (const chunk of await openai.completions.create({ ...request, stream: true })) streamed += chunk.choices[0]?.text ?? ''
    expect(streamed).toBe(whole.choices[0].text)
    const seeded = () => openai.completions.create({ ...request, temperature: 1, top_p: 0.9, seed: 7 })
    expect((await seeded()).choices[0].text).toBe((await seeded()).choices[0].text)
  })

  it('unknown fields are ignored, as OpenAI does', async () => {
    const r = await openai.chat.completions.create({ ...counting, max_tokens: 3, user: 'someone', logit_bias: {}, frequency_penalty: 0 } as never)
    expect((r as OpenAI.ChatCompletion).choices[0].message.content?.length).toBeGreaterThan(0)
  })

  it('a client that aborts mid-stream stops its generation in the worker', async () => {
    const controller = new AbortController()
    const before = engine.stats().models[0].tokensGenerated
    const stream = await openai.chat.completions.create({ ...counting, max_tokens: 2000, stream: true }, { signal: controller.signal })
    let chunks = 0
    // The client's stream then ends (or rejects, depending on its version).
    await (async () => {
      for await (const _ of stream) if (++chunks === 3) controller.abort()
    })().catch(() => {})
    await waitFor(() => engine.stats().models[0].activeRequests === 0, 'the aborted request leaves the worker')
    // Had the abort not reached the worker, the request would have run to its 2000 tokens.
    expect(engine.stats().models[0].tokensGenerated - before).toBeLessThan(1000)
    expect(chunks).toBe(3)
  })

  it('16 concurrent clients are all served', async () => {
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) => openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: `Say a word about ${i}.` }], max_tokens: 6 })),
    )
    for (const r of results) expect(r.usage?.completion_tokens).toBeGreaterThan(0)
  })

  describe('errors in OpenAI shape', () => {
    it('validation is 400 invalid_request_error naming the parameter', async () => {
      const e = await openai.chat.completions.create({ ...counting, max_tokens: -1 }).catch((e) => e)
      expect(e).toBeInstanceOf(OpenAI.BadRequestError)
      expect(e.error).toMatchObject({ type: 'invalid_request_error', param: 'maxTokens' })
      const n = await openai.chat.completions.create({ ...counting, n: 2 }).catch((e) => e)
      expect(n).toBeInstanceOf(OpenAI.BadRequestError)
      expect(n.error).toMatchObject({ param: 'n' })
    })
    it('an unknown model is 404', async () => {
      const e = await openai.chat.completions.create({ ...counting, model: 'nope' }).catch((e) => e)
      expect(e).toBeInstanceOf(OpenAI.NotFoundError)
      expect(e.error).toMatchObject({ code: 'model_not_found' })
    })
    it('a prompt past the context is 400 context_length_exceeded', async () => {
      const e = await openai.completions.create({ model: MODEL, prompt: 'word '.repeat(9000), max_tokens: 1 }).catch((e) => e)
      expect(e).toBeInstanceOf(OpenAI.BadRequestError)
      expect(e.error).toMatchObject({ code: 'context_length_exceeded' })
    })
    it('a wrong API key is 401', async () => {
      const other = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'wrong', maxRetries: 0 })
      await expect(other.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError)
    })
    it('a full queue is 429 with Retry-After', async () => {
      const small = await engineWithModel({ maxBatchSize: 1, maxQueued: 1 })
      const s = createServer(small, { port: 0 })
      const { url } = await s.listen()
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 })
      try {
        const busy = small.generate({ ...counting, maxTokens: 2000 })
        await busy.next() // it holds the only slot
        const waiting = small.generate({ ...counting, maxTokens: 1 }) // the only queue place
        const e = await client.chat.completions.create({ ...counting, max_tokens: 1 }).catch((e) => e)
        expect(e).toBeInstanceOf(OpenAI.RateLimitError)
        expect(e.headers.get('retry-after')).toBe('1')
        await busy.return(undefined)
        await waiting.collect()
      } finally {
        await s.close()
        await small.shutdown()
      }
    })
    it('a timeout is 504', async () => {
      const timed = createServer(engine, { port: 0, timeoutMs: 300 })
      const { url } = await timed.listen()
      try {
        const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 })
        const e = await client.chat.completions.create({ ...counting, max_tokens: 4000 }).catch((e) => e)
        expect(e).toBeInstanceOf(OpenAI.APIError)
        expect(e.status).toBe(504)
        expect(e.error).toMatchObject({ code: 'timeout' })
      } finally {
        await timed.close()
      }
    })
    it('an error after the stream has begun is an error event, after the tokens', async () => {
      const own = await engineWithModel()
      const s = createServer(own, { port: 0 })
      const { url } = await s.listen()
      try {
        const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 })
        const stream = await client.chat.completions.create({ ...counting, max_tokens: 4000, stream: true })
        let text = ''
        const failure = await (async () => {
          for await (const chunk of stream) {
            const delta = chunk.choices[0]?.delta.content ?? ''
            // Once tokens flow, end the engine under the stream: its request ends with SHUTTING_DOWN.
            if (delta && !text) void own.shutdown({ drainTimeoutMs: 0 })
            text += delta
          }
        })().catch((e) => e)
        expect(failure).toBeInstanceOf(OpenAI.APIError)
        expect(String(failure.message)).toMatch(/shut/i)
        expect(text.length).toBeGreaterThan(0)
      } finally {
        await s.close()
        await own.shutdown()
      }
    })
  })
})

describe('plain HTTP', () => {
  it('malformed JSON is 400, an oversized body 413, a wrong method 405, an unknown path 404', async () => {
    const malformed = await post('/v1/chat/completions', '{"model": ')
    expect(malformed.status).toBe(400)
    expect(await malformed.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'invalid_json' } })
    const array = await post('/v1/chat/completions', '[1, 2]')
    expect(array.status).toBe(400)
    const big = await post('/v1/chat/completions', { ...counting, padding: 'x'.repeat(100 * 1024) })
    expect(big.status).toBe(413)
    const get = await fetch(`${base}/v1/chat/completions`, { headers: { authorization: `Bearer ${API_KEY}` } })
    expect(get.status).toBe(405)
    const unknown = await fetch(`${base}/v2/anything`)
    expect(unknown.status).toBe(404)
    const noMessages = await post('/v1/chat/completions', { model: MODEL })
    expect(noMessages.status).toBe(400)
    expect(await noMessages.json()).toMatchObject({ error: { param: 'messages' } })
  })

  it('/health is 200 while the model is ready and 503 while it is not', async () => {
    const ok = await fetch(`${base}/health`)
    expect(ok.status).toBe(200)
    expect(await ok.json()).toMatchObject({ status: 'ok', models: [{ id: MODEL, state: 'ready' }] })
    // A second model that is still loading (a load takes far longer than a local request).
    const loading = engine.loadModel({ id: 'second', path: MODEL_PATH })
    const during = await fetch(`${base}/health`)
    expect(during.status).toBe(503)
    expect(await during.json()).toMatchObject({ status: 'unavailable' })
    await loading
    expect((await fetch(`${base}/health`)).status).toBe(200)
    await engine.unloadModel('second')
  })

  it('/metrics is Prometheus text with queue depth, active requests, tokens, time to first token and restarts', async () => {
    await openai.chat.completions.create({ ...counting, max_tokens: 2 })
    const r = await fetch(`${base}/metrics`)
    expect(r.status).toBe(200)
    expect(r.headers.get('content-type')).toMatch(/text\/plain/)
    const text = await r.text()
    for (const name of [
      'mlx_serving_queue_depth{model="smollm2"} 0',
      'mlx_serving_active_requests{model="smollm2"}',
      'mlx_serving_tokens_generated{model="smollm2"}',
      'mlx_serving_worker_restarts{model="smollm2"} 0',
      'mlx_serving_time_to_first_token_seconds_count{model="smollm2"}',
      'mlx_serving_http_completion_tokens_total{model="smollm2"}',
      'mlx_serving_prefix_cache_bytes{model="smollm2"}',
      'mlx_serving_prefix_cache_tokens_reused{model="smollm2"}',
    ]) {
      expect(text).toContain(name)
    }
  })
})
