// Structured output and tool calls through the OpenAI-compatible server,
// driven by the official `openai` client: `response_format` (json_object,
// json_schema strict, `chat.completions.parse` with a zod schema), `tools`,
// `tool_choice` and `parallel_tool_calls`, streamed `tool_calls` deltas as
// OpenAI sends them, a full tool round trip, and 400 on bad input.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import OpenAI from 'openai'
import { zodResponseFormat } from 'openai/helpers/zod'
import Ajv2020 from 'ajv/dist/2020'
import { z } from 'zod'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, MODEL, MODEL_PATH } from './helpers'
import type * as ServerApi from '../lib/server.js'

const require = createRequire(import.meta.url)
const { createServer } = require('../lib/server.js') as typeof ServerApi

const QWEN_PATH = path.resolve(__dirname, '..', 'models', 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const QWEN = 'qwen2'
const ajv = new Ajv2020({ strict: false })

const WEATHER: OpenAI.Chat.Completions.ChatCompletionTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 40 } }, required: ['city'], additionalProperties: false },
  },
}

let engine: InstanceType<typeof Engine>
let server: ServerApi.MlxServer
let base: string
let openai: OpenAI

beforeAll(async () => {
  engine = await Engine.create({ maxBatchSize: 8 })
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  if (fs.existsSync(QWEN_PATH)) await engine.loadModel({ id: QWEN, path: QWEN_PATH })
  server = createServer(engine, { port: 0 })
  base = (await server.listen()).url
  openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'none', maxRetries: 0 })
})
afterAll(async () => {
  await server?.close()
  await engine?.shutdown()
})

describe('response_format', () => {
  const schema = { type: 'object', properties: { city: { type: 'string', maxLength: 20 }, population: { type: 'integer', minimum: 0, maximum: 40000000 } }, required: ['city', 'population'], additionalProperties: false }
  const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Give the largest city of France and its population as JSON.' }]

  it('json_schema (strict) gives JSON valid under the schema', async () => {
    const r = await openai.chat.completions.create({ model: MODEL, messages, max_tokens: 80, response_format: { type: 'json_schema', json_schema: { name: 'city', strict: true, schema } } })
    expect(r.choices[0].finish_reason).toBe('stop')
    const value = JSON.parse(r.choices[0].message.content!)
    expect(ajv.validate(schema, value), ajv.errorsText()).toBe(true)
  })

  it('json_schema streamed: the deltas make valid JSON', async () => {
    const stream = await openai.chat.completions.create({ model: MODEL, messages, max_tokens: 80, stream: true, response_format: { type: 'json_schema', json_schema: { name: 'city', schema } } })
    let text = ''
    let finish: string | null = null
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? ''
      finish = chunk.choices[0]?.finish_reason ?? finish
    }
    expect(finish).toBe('stop')
    expect(ajv.validate(schema, JSON.parse(text)), ajv.errorsText()).toBe(true)
  })

  it('json_object gives an object', async () => {
    const r = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Reply with a JSON object with the name and the age of a cat.' }], max_tokens: 80, response_format: { type: 'json_object' } })
    const value = JSON.parse(r.choices[0].message.content!)
    expect(typeof value).toBe('object')
  })

  it('chat.completions.parse with a zod schema', async () => {
    const Book = z.object({ title: z.string().max(40), year: z.number().int().min(1000).max(2030), genres: z.array(z.enum(['fiction', 'poetry', 'history'])).min(1).max(2) })
    const r = await openai.chat.completions.parse({
      model: MODEL,
      messages: [{ role: 'user', content: 'Describe a famous book as JSON with title, year and genres.' }],
      max_tokens: 100,
      response_format: zodResponseFormat(Book, 'book'),
    })
    const parsed = r.choices[0].message.parsed
    expect(parsed).not.toBeNull()
    expect(Book.parse(parsed)).toEqual(parsed)
  })

  it('legacy completions take response_format too', async () => {
    const r = await openai.completions.create({ model: MODEL, prompt: 'The year the Berlin wall fell:', max_tokens: 10, response_format: { type: 'json_schema', json_schema: { name: 'y', schema: { type: 'integer', minimum: 1900, maximum: 2000 } } } } as never)
    expect(Number.isInteger(JSON.parse(r.choices[0].text))).toBe(true)
  })
})

describe.skipIf(!fs.existsSync(QWEN_PATH))('tools (Qwen2.5-Coder-0.5B)', () => {
  it("tool_choice 'required' (one call, parallel_tool_calls false): a call in OpenAI's shape, finish_reason tool_calls", async () => {
    const r = await openai.chat.completions.create({
      model: QWEN,
      messages: [{ role: 'user', content: 'How warm is it in Madrid?' }],
      tools: [WEATHER],
      tool_choice: 'required',
      parallel_tool_calls: false,
      max_tokens: 80,
    })
    const choice = r.choices[0]
    expect(choice.finish_reason).toBe('tool_calls')
    expect(choice.message.content).toBeNull()
    expect(choice.message.tool_calls).toHaveLength(1)
    const call = choice.message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall
    expect(call).toMatchObject({ type: 'function', function: { name: 'get_weather' } })
    expect(call.id).toMatch(/^call_/)
    expect(ajv.validate(WEATHER.function.parameters!, JSON.parse(call.function.arguments))).toBe(true)
  })

  it('streamed tool_calls deltas as OpenAI sends them: id, type and name first, then argument pieces', async () => {
    const stream = await openai.chat.completions.create({
      model: QWEN,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [WEATHER],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false,
      max_tokens: 80,
      stream: true,
    })
    const deltas: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = []
    let finish: string | null = null
    for await (const chunk of stream) {
      deltas.push(...(chunk.choices[0]?.delta.tool_calls ?? []))
      finish = chunk.choices[0]?.finish_reason ?? finish
    }
    expect(finish).toBe('tool_calls')
    expect(deltas[0]).toMatchObject({ index: 0, type: 'function', function: { name: 'get_weather', arguments: '' } })
    expect(deltas[0].id).toMatch(/^call_/)
    expect(deltas.slice(1).every((d) => d.index === 0 && d.id === undefined && d.function?.name === undefined)).toBe(true)
    const args = deltas.map((d) => d.function?.arguments ?? '').join('')
    expect(JSON.parse(args).city).toMatch(/paris/i)
    // The client's own accumulator agrees.
    const final = await openai.chat.completions
      .stream({ model: QWEN, messages: [{ role: 'user', content: 'What is the weather in Paris?' }], tools: [WEATHER], tool_choice: 'required', max_tokens: 80 })
      .finalChatCompletion()
    expect(final.choices[0].message.tool_calls?.[0]).toMatchObject({ type: 'function', function: { name: 'get_weather' } })
  })

  it('a full round trip: the call, the tool result, the answer', async () => {
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }]
    const first = await openai.chat.completions.create({ model: QWEN, messages, tools: [WEATHER], max_tokens: 100 })
    expect(first.choices[0].finish_reason).toBe('tool_calls')
    const call = first.choices[0].message.tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall
    messages.push(first.choices[0].message)
    messages.push({ role: 'tool', tool_call_id: call.id, content: JSON.stringify({ city: 'Paris', temperature_c: 21, sky: 'sunny' }) })
    const second = await openai.chat.completions.create({ model: QWEN, messages, tools: [WEATHER], tool_choice: 'none', max_tokens: 60 })
    expect(second.choices[0].finish_reason).toMatch(/^(stop|length)$/)
    expect(second.choices[0].message.tool_calls).toBeUndefined()
    expect(second.choices[0].message.content).toMatch(/21/)
  })
})

describe('400 on bad input, naming the parameter', () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['an unknown response_format type', { response_format: { type: 'xml' } }, 'response_format.type'],
    ['a json_schema without its object', { response_format: { type: 'json_schema' } }, 'response_format.json_schema'],
    ['an invalid schema', { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'wat' } } } }, 'responseFormat.schema'],
    ['an unsupported schema keyword', { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', if: {} } } } }, 'responseFormat.schema'],
    ['a tool that is not a function', { tools: [{ type: 'retrieval' }] }, 'tools[0].type'],
    ['a tool without a name', { tools: [{ type: 'function', function: { parameters: {} } }] }, 'tools[0].name'],
    ['a tool with invalid parameters', { tools: [{ type: 'function', function: { name: 'f', parameters: 'x' } }] }, 'tools[0].parameters'],
    ['a tool_choice naming an unknown tool', { tools: [WEATHER], tool_choice: { type: 'function', function: { name: 'nope' } } }, 'toolChoice.name'],
    ['a bad tool_choice', { tools: [WEATHER], tool_choice: 'sometimes' }, 'toolChoice'],
    ['a bad parallel_tool_calls', { tools: [WEATHER], parallel_tool_calls: 'yes' }, 'parallel_tool_calls'],
  ]
  it.each(cases)('%s', async (_, fields, param) => {
    const r = await fetch(`${base}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }], ...fields }),
    })
    expect(r.status).toBe(400)
    const body = await r.json()
    expect(body.error.type).toBe('invalid_request_error')
    expect(body.error.param).toBe(param)
  })
})
