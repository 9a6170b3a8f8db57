// The AI SDK provider with structured output and tools, through the real `ai`
// package: generateObject / streamObject under a zod schema (SmolLM2), and
// generateText / streamText with tools, multi-step (Qwen2.5-Coder-0.5B).
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { generateObject, generateText, stepCountIs, streamObject, streamText, tool } from 'ai'
import { z } from 'zod'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine, MODEL, MODEL_PATH } from './helpers'
import type * as Provider from '../lib/ai-sdk.js'

const require = createRequire(import.meta.url)
const { createMlxServing } = require('../lib/ai-sdk.js') as typeof Provider

const QWEN_PATH = path.resolve(__dirname, '..', 'models', 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const QWEN = 'qwen2'

let engine: InstanceType<typeof Engine>
let mlx: Provider.MlxServingProvider

beforeAll(async () => {
  engine = await Engine.create({ maxBatchSize: 8 })
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  if (fs.existsSync(QWEN_PATH)) await engine.loadModel({ id: QWEN, path: QWEN_PATH })
  mlx = createMlxServing(engine)
})
afterAll(async () => {
  await engine?.shutdown()
})

const Recipe = z.object({
  name: z.string().max(30),
  servings: z.number().int().min(1).max(12),
  ingredients: z.array(z.string().max(20)).min(2).max(4),
  vegetarian: z.boolean(),
})

describe('structured output', () => {
  it('generateObject gives an object valid under its zod schema, with no warning', async () => {
    const { object, finishReason, warnings } = await generateObject({ model: mlx(MODEL), schema: Recipe, prompt: 'A simple pancake recipe as JSON.', maxOutputTokens: 150 })
    expect(finishReason).toBe('stop')
    expect(Recipe.parse(object)).toEqual(object)
    expect(warnings ?? []).toEqual([])
  })

  it('streamObject streams partial objects, then the valid whole', async () => {
    const result = streamObject({ model: mlx(MODEL), schema: Recipe, prompt: 'A simple salad recipe as JSON.', maxOutputTokens: 150 })
    const partials: unknown[] = []
    for await (const partial of result.partialObjectStream) partials.push(partial)
    const object = await result.object
    expect(partials.length).toBeGreaterThan(2)
    expect(Recipe.parse(object)).toEqual(object)
  })
})

describe.skipIf(!fs.existsSync(QWEN_PATH))('tools', () => {
  const calls: { city: string }[] = []
  const tools = {
    get_weather: tool({
      description: 'Get the current weather in a city',
      inputSchema: z.object({ city: z.string().max(40) }),
      execute: async ({ city }) => {
        calls.push({ city })
        return { city, temperatureC: 21, sky: 'sunny' }
      },
    }),
  }

  it('generateText with tools, multi-step: the call runs, its result reaches the model, the answer follows', async () => {
    calls.length = 0
    const result = await generateText({
      model: mlx(QWEN),
      tools,
      stopWhen: stepCountIs(3),
      // The answer after the tool's result is text.
      prepareStep: ({ stepNumber }) => (stepNumber > 0 ? { toolChoice: 'none' } : {}),
      prompt: 'What is the weather in Paris?',
      maxOutputTokens: 80,
    })
    expect(result.steps.length).toBe(2)
    expect(result.steps[0].finishReason).toBe('tool-calls')
    expect(result.steps[0].toolCalls[0]).toMatchObject({ toolName: 'get_weather' })
    expect(calls[0].city).toMatch(/paris/i)
    expect(result.steps[0].toolResults[0].output).toMatchObject({ temperatureC: 21 })
    expect(result.text.length).toBeGreaterThan(0)
    expect(result.text).toMatch(/21/)
  })

  it('streamText with a required tool streams the input, the call and its result', async () => {
    calls.length = 0
    const result = streamText({ model: mlx(QWEN), tools, toolChoice: { type: 'tool', toolName: 'get_weather' }, prompt: 'I am flying to Oslo.', maxOutputTokens: 80 })
    const kinds: string[] = []
    let input = ''
    for await (const part of result.fullStream) {
      kinds.push(part.type)
      if (part.type === 'tool-input-delta') input += part.delta
    }
    expect(kinds).toContain('tool-input-start')
    expect(kinds).toContain('tool-call')
    expect(kinds).toContain('tool-result')
    expect(kinds.indexOf('tool-input-start')).toBeLessThan(kinds.indexOf('tool-call'))
    const [call] = await result.toolCalls
    expect(call.toolName).toBe('get_weather')
    expect(JSON.parse(input)).toEqual(call.input)
    expect(calls).toHaveLength(1)
    expect(await result.finishReason).toBe('tool-calls')
  })
})
