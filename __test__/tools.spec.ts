// Tool calls on the real models: Qwen2.5-Coder-0.5B (its template takes tools;
// calls are `<tool_call>` JSON, which small Qwen models also write as the bare
// answer or its fenced block) and SmolLM2 (its template shows no tools: they
// are described to it, calls use the Hermes format). Calls parse, name an
// offered tool and match its parameters (ajv); streamed deltas add up to the
// calls; a full round trip; every bad input refused before any work.
import fs from 'node:fs'
import path from 'node:path'
import Ajv2020 from 'ajv/dist/2020'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, Engine, MODEL, MODEL_PATH } from './helpers'
import type { Tool, ToolCall, ToolCallDelta } from '../lib/index.js'

const QWEN_PATH = path.resolve(__dirname, '..', 'models', 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const QWEN = 'qwen2'

const TOOLS: Tool[] = [
  {
    name: 'get_weather',
    description: 'Get the current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 40 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city'], additionalProperties: false },
  },
  {
    name: 'add',
    description: 'Add two integers',
    parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'], additionalProperties: false },
  },
]

const ajv = new Ajv2020({ strict: false })

/** Each call names an offered tool and its arguments parse and match the tool's parameters. */
function expectValidCalls(calls: ToolCall[] | undefined, tools = TOOLS) {
  expect(calls?.length).toBeGreaterThan(0)
  for (const call of calls ?? []) {
    const tool = tools.find((t) => t.name === call.name)
    expect(tool, call.name).toBeDefined()
    expect(call.id).toMatch(/^call_[A-Za-z0-9]{24}$/)
    const args = JSON.parse(call.arguments)
    expect(ajv.validate(tool!.parameters as object, args), `${call.arguments}: ${ajv.errorsText()}`).toBe(true)
  }
}

/** The streamed deltas, put back together per call. */
function joined(chunks: { toolCallDeltas?: ToolCallDelta[] }[]) {
  const calls: { id: string; name: string; arguments: string }[] = []
  for (const d of chunks.flatMap((c) => c.toolCallDeltas ?? [])) {
    if (d.id !== undefined) calls[d.index] = { id: d.id, name: d.name!, arguments: '' }
    calls[d.index].arguments += d.arguments
  }
  return calls
}

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await Engine.create({ maxBatchSize: 8 })
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  if (fs.existsSync(QWEN_PATH)) await engine.loadModel({ id: QWEN, path: QWEN_PATH })
})
afterAll(async () => {
  await engine?.shutdown()
})

describe.skipIf(!fs.existsSync(QWEN_PATH))('Qwen2.5-Coder-0.5B (a template with tools)', () => {
  it('renders the tools and past calls through its own template', () => {
    const prompt = engine.applyChatTemplate(QWEN, ask('Weather in Oslo?'), { tools: TOOLS })
    expect(prompt).toContain('<tools>\n{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city", "parameters": ')
    expect(prompt).toContain('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    const history = [
      ...ask('Weather in Oslo?'),
      { role: 'assistant', content: null, toolCalls: [{ id: 'call_1', name: 'get_weather', arguments: '{"city": "Oslo"}' }] },
      { role: 'tool', toolCallId: 'call_1', content: '{"temperature": 3}' },
    ]
    const rendered = engine.applyChatTemplate(QWEN, history, { tools: TOOLS })
    expect(rendered).toContain('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>')
    expect(rendered).toContain('<|im_start|>user\n<tool_response>\n{"temperature": 3}\n</tool_response><|im_end|>\n<|im_start|>assistant\n')
  })

  it.each([
    ['greedy', {}],
    ['sampled', { temperature: 0.7, seed: 11 }],
  ])("toolChoice 'required' (%s): calls that parse and match the tool's parameters, streamed as deltas", async (_, sampling) => {
    const { chunks, final, text, error } = await drain(engine.generate({ model: QWEN, messages: ask('What is 17 plus 25?'), tools: TOOLS, toolChoice: 'required', maxTokens: 120, ...sampling }))
    expect(error).toBeUndefined()
    expect(final?.finishReason).toBe('tool_calls')
    expect(text).toBe('')
    expectValidCalls(final?.toolCalls)
    expect(joined(chunks).slice(0, final!.toolCalls!.length)).toEqual(final?.toolCalls)
  })

  it('a named tool is the one called, with valid arguments', async () => {
    const { final } = await drain(engine.generate({ model: QWEN, messages: ask('I am going to Lisbon tomorrow.'), tools: TOOLS, toolChoice: { name: 'get_weather' }, maxTokens: 80 }))
    expect(final?.finishReason).toBe('tool_calls')
    expect(final?.toolCalls).toHaveLength(1)
    expect(final?.toolCalls?.[0].name).toBe('get_weather')
    expectValidCalls(final?.toolCalls)
  })

  it("'auto': a question a tool answers gets a call, one no tool answers gets text", async () => {
    const [call, prose] = await Promise.all([
      drain(engine.generate({ model: QWEN, messages: ask('What is the weather in Paris?'), tools: TOOLS, maxTokens: 120 })),
      drain(engine.generate({ model: QWEN, messages: ask('Write a haiku about the sea.'), tools: TOOLS, maxTokens: 60 })),
    ])
    expect(call.final?.finishReason).toBe('tool_calls')
    expect(call.text).toBe('')
    expectValidCalls(call.final?.toolCalls)
    expect(call.final?.toolCalls?.[0].name).toBe('get_weather')
    expect(JSON.parse(call.final!.toolCalls![0].arguments).city).toMatch(/paris/i)
    expect(joined(call.chunks)).toEqual(call.final?.toolCalls)
    expect(prose.final?.toolCalls).toEqual([])
    expect(['stop', 'length']).toContain(prose.final?.finishReason)
    expect(prose.text.length).toBeGreaterThan(0)
  })

  it('a full round trip: call, tool result, answer', async () => {
    const messages: Parameters<typeof engine.generate>[0]['messages'] = ask('What is the weather in Paris?')
    const first = await engine.generate({ model: QWEN, messages, tools: TOOLS, toolChoice: 'required', maxTokens: 120 }).collect()
    expect(first.finishReason).toBe('tool_calls')
    const call = first.toolCalls![0]
    messages!.push({ role: 'assistant', content: first.text, toolCalls: first.toolCalls })
    messages!.push({ role: 'tool', toolCallId: call.id, content: JSON.stringify({ temperature: 21, unit: 'celsius', sky: 'sunny' }) })
    const prompt = engine.applyChatTemplate(QWEN, messages!, { tools: TOOLS })
    expect(prompt).toContain(`<tool_call>\n{"name": "${call.name}", "arguments": ${JSON.stringify(JSON.parse(call.arguments)).replace(/,"/g, ', "').replace(/":/g, '": ')}}\n</tool_call>`)
    expect(prompt).toContain('<tool_response>\n{"temperature":21,"unit":"celsius","sky":"sunny"}\n</tool_response>')
    const answer = await engine.generate({ model: QWEN, messages, tools: TOOLS, toolChoice: 'none', maxTokens: 60 }).collect()
    expect(answer.toolCalls).toEqual([])
    expect(answer.text.length).toBeGreaterThan(0)
    expect(answer.text).toMatch(/21/)
  })
})

describe('SmolLM2 (a template without tools)', () => {
  it('is told about the tools in a system message', () => {
    const prompt = engine.applyChatTemplate(MODEL, ask('Weather?'), { tools: TOOLS })
    expect(prompt).toMatch(/^<\|im_start\|>system\n# Tools\n/)
    expect(prompt).toContain('"name": <function-name>')
    expect(engine.applyChatTemplate(MODEL, [{ role: 'system', content: 'Be brief.' }, ...ask('Weather?')], { tools: TOOLS })).toMatch(/^<\|im_start\|>system\nBe brief\.\n\n# Tools\n/)
  })

  it("'required' gives valid calls in the default format, eight at once beside free text", async () => {
    const questions = ['What is the weather in Rome?', 'Add 2 and 3.', 'Is it raining in Oslo?', 'What is 10 plus 7?']
    const runs = [...questions, ...questions].map((q, i) =>
      drain(engine.generate({ model: MODEL, messages: ask(q), tools: TOOLS, toolChoice: 'required', parallelToolCalls: false, maxTokens: 80, ...(i >= 4 ? { temperature: 0.8, seed: i } : {}) })),
    )
    const free = drain(engine.generate({ model: MODEL, messages: ask('Tell me a joke.'), maxTokens: 30 }))
    for (const r of await Promise.all(runs)) {
      expect(r.error).toBeUndefined()
      expect(r.final?.finishReason).toBe('tool_calls')
      expect(r.final?.toolCalls).toHaveLength(1)
      expectValidCalls(r.final?.toolCalls)
    }
    expect((await free).final?.toolCalls).toBeUndefined()
  })
})

describe('refused before any work', () => {
  const weather = TOOLS[0]
  const cases: [string, Record<string, unknown>, RegExp][] = [
    ['a tool without a name', { tools: [{ description: 'x' }] }, /^tools\[0\]\.name: expected a string/],
    ['a tool with an empty name', { tools: [{ name: '' }] }, /^tools\[0\]\.name: must be a non-empty string/],
    ['two tools of one name', { tools: [weather, weather] }, /^tools\[1\]\.name: 'get_weather' names two tools/],
    ['parameters that are not a schema', { tools: [{ name: 'f', parameters: 'yes' }] }, /^tools\[0\]\.parameters: expected a JSON schema/],
    ['parameters that are an invalid schema', { tools: [{ name: 'f', parameters: { type: 'wat' } }] }, /^tools: /],
    ['parameters with an unsupported keyword', { tools: [{ name: 'f', parameters: { type: 'object', if: {} } }] }, /Unimplemented keys: \["if"\]/],
    ['a toolChoice naming an unknown tool', { tools: [weather], toolChoice: { name: 'nope' } }, /^toolChoice\.name: 'nope' is not one of the tools/],
    ['a toolChoice without tools', { toolChoice: 'required' }, /^toolChoice: needs tools/],
    ['a toolChoice of an unknown kind', { tools: [weather], toolChoice: 'always' }, /^toolChoice: must be/],
    ['tools beside a response format', { tools: [weather], responseFormat: { type: 'json_object' } }, /^responseFormat: cannot be combined with tools/],
    ['a past call without a name', { messages: [{ role: 'assistant', content: null, toolCalls: [{ id: 'a', arguments: '{}' }] }] }, /^messages\[0\]\.toolCalls\[0\]\.name/],
  ]
  it.each(cases)('%s', (_, fields, message) => {
    let error: (Error & { code?: string }) | undefined
    try {
      engine.generate({ model: MODEL, messages: ask('x'), ...fields } as never)
    } catch (e) {
      error = e as Error & { code?: string }
    }
    expect(error?.code).toBe('INVALID_ARGUMENT')
    expect(error?.message).toMatch(message)
    const stats = engine.stats().models.find((m) => m.id === MODEL)!
    expect(stats.activeRequests + stats.queuedRequests).toBe(0)
  })
})
