'use strict'
// An AI SDK provider over an in-process Engine (no HTTP): `generateText` and
// `streamText` from the `ai` package run on a local model.
//
//   const { generateText } = require('ai')
//   const { createMlxServing } = require('mlx-serving/ai-sdk')
//   const mlx = createMlxServing(engine)
//   const { text } = await generateText({ model: mlx('smol'), prompt: 'Hi' })
//
// Implements the language model and the embedding model interfaces of
// `@ai-sdk/provider` (specification v4): text, JSON output under a schema
// (`generateObject`, `streamObject`, `Output.object`), function tools
// (`generateText` / `streamText` with `tools`, multi-step) with the engine's
// constrained decoding, and `embed` / `embedMany` on a local embedding model.
// Files and provider-defined tools are reported as unsupported warnings,
// never silently dropped.

const { Engine } = require('./index.js')

/** A tool result as the text a `tool` message carries. */
function resultText(output) {
  switch (output.type) {
    case 'text':
    case 'error-text':
      return output.value
    case 'json':
    case 'error-json':
      return JSON.stringify(output.value)
    case 'execution-denied':
      return `The tool call was denied${output.reason ? `: ${output.reason}` : '.'}`
    case 'content':
      return output.value.filter((p) => p.type === 'text').map((p) => p.text).join('')
    default:
      return JSON.stringify(output)
  }
}

/**
 * Flattens the AI SDK's prompt into the chat messages the model's template
 * takes: text, an assistant's tool calls, and one `tool` message per result.
 */
function toMessages(prompt, warnings) {
  const messages = []
  for (const message of prompt) {
    if (message.role === 'system') {
      messages.push({ role: 'system', content: message.content })
      continue
    }
    if (message.role === 'tool') {
      for (const part of message.content) {
        if (part.type === 'tool-result') messages.push({ role: 'tool', toolCallId: part.toolCallId, content: resultText(part.output) })
        else warnings.push({ type: 'unsupported', feature: `tool content part '${part.type}'` })
      }
      continue
    }
    let content = ''
    const toolCalls = []
    for (const part of message.content) {
      if (part.type === 'text') content += part.text
      else if (part.type === 'reasoning') continue
      else if (part.type === 'tool-call' && message.role === 'assistant') {
        toolCalls.push({ id: part.toolCallId, name: part.toolName, arguments: typeof part.input === 'string' ? part.input : JSON.stringify(part.input ?? {}) })
      } else warnings.push({ type: 'unsupported', feature: `${message.role} content part '${part.type}'`, details: 'only text parts and tool calls reach the model' })
    }
    if (message.role === 'user' || message.role === 'assistant') messages.push(toolCalls.length ? { role: message.role, content, toolCalls } : { role: message.role, content })
    else warnings.push({ type: 'unsupported', feature: `'${message.role}' messages` })
  }
  return messages
}

/** The call's function tools in the Engine's shape (provider-defined tools are not supported). */
function toTools(tools, warnings) {
  const out = []
  for (const tool of tools ?? []) {
    if (tool.type !== 'function') {
      warnings.push({ type: 'unsupported', feature: `provider-defined tool '${tool.name ?? tool.id}'` })
      continue
    }
    const t = { name: tool.name, parameters: tool.inputSchema ?? { type: 'object', properties: {} } }
    if (tool.description) t.description = tool.description
    out.push(t)
  }
  return out
}

function toToolChoice(choice) {
  if (!choice) return undefined
  return choice.type === 'tool' ? { name: choice.toolName } : choice.type
}

function callSettings(modelId, options, warnings) {
  for (const key of ['presencePenalty', 'frequencyPenalty']) if (options[key] !== undefined) warnings.push({ type: 'unsupported', feature: key })
  const request = { model: modelId, messages: toMessages(options.prompt, warnings) }
  const tools = toTools(options.tools, warnings)
  const choice = toToolChoice(options.toolChoice)
  if (tools.length) {
    request.tools = tools
    if (choice) request.toolChoice = choice
  }
  const json = options.responseFormat && options.responseFormat.type === 'json'
  if (json && tools.length && choice !== 'none') {
    // The engine constrains either the answer or the calls.
    warnings.push({ type: 'unsupported', feature: 'responseFormat json together with tools', details: 'the calls are constrained; the answer is not' })
  } else if (json) {
    const { schema, name } = options.responseFormat
    request.responseFormat = schema ? { type: 'json_schema', schema, ...(name ? { name } : {}) } : { type: 'json_object' }
  }
  if (options.maxOutputTokens !== undefined) request.maxTokens = options.maxOutputTokens
  if (options.temperature !== undefined) request.temperature = options.temperature
  if (options.topP !== undefined) request.topP = options.topP
  if (options.topK !== undefined) request.topK = options.topK
  if (options.seed !== undefined) request.seed = options.seed
  if (options.stopSequences && options.stopSequences.length) request.stop = options.stopSequences
  return request
}

const UNIFIED = { stop: 'stop', length: 'length', tool_calls: 'tool-calls' }
const finishReason = (reason) => ({ unified: UNIFIED[reason] ?? 'other', raw: reason })

/** A finished call as the AI SDK's content part (`input` is the JSON text). */
const toolCallPart = (c) => ({ type: 'tool-call', toolCallId: c.id, toolName: c.name, input: c.arguments })

function usage(final) {
  return {
    inputTokens: { total: final.usage.promptTokens, noCache: final.usage.promptTokens, cacheRead: undefined, cacheWrite: undefined },
    outputTokens: { total: final.usage.completionTokens, text: final.usage.completionTokens, reasoning: undefined },
  }
}

class MlxServingLanguageModel {
  specificationVersion = 'v4'
  provider = 'mlx-serving'
  supportedUrls = {}
  #engine
  #timeoutMs

  constructor(engine, modelId, settings = {}) {
    this.#engine = engine
    this.modelId = modelId
    this.#timeoutMs = settings.timeoutMs
  }

  #start(options, warnings) {
    const request = callSettings(this.modelId, options, warnings)
    return this.#engine.generate(request, { signal: options.abortSignal, timeoutMs: this.#timeoutMs })
  }

  async doGenerate(options) {
    const warnings = []
    const done = await this.#start(options, warnings).collect()
    const content = done.text ? [{ type: 'text', text: done.text }] : []
    for (const call of done.toolCalls ?? []) content.push(toolCallPart(call))
    return {
      content,
      finishReason: finishReason(done.finishReason),
      usage: usage(done),
      response: { modelId: this.modelId, timestamp: new Date() },
      warnings,
    }
  }

  async doStream(options) {
    const warnings = []
    const generation = this.#start(options, warnings)
    const modelId = this.modelId
    const id = 'text-0'
    let open = false
    // Streamed calls: their ids by index.
    const inputs = []
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue({ type: 'stream-start', warnings })
        controller.enqueue({ type: 'response-metadata', modelId, timestamp: new Date() })
      },
      // Each pull enqueues at least one part (or ends the stream): a stream
      // whose pull enqueues nothing is not pulled again. Chunks without text
      // (a call's markup, text held back) are read past.
      async pull(controller) {
        try {
          for (;;) {
            const { value: chunk, done } = await generation.next()
            if (done) return controller.close()
            if (chunk.done) return finish(controller, chunk)
            if (chunk.text || chunk.toolCallDeltas) return tokens(controller, chunk)
          }
        } catch (error) {
          controller.enqueue({ type: 'error', error })
          controller.close()
        }
      },
      async cancel() {
        await generation.return()
      },
    })
    function tokens(controller, chunk) {
      if (chunk.text) {
        if (!open) {
          open = true
          controller.enqueue({ type: 'text-start', id })
        }
        controller.enqueue({ type: 'text-delta', id, delta: chunk.text })
      }
      for (const d of chunk.toolCallDeltas ?? []) {
        if (d.id !== undefined) {
          inputs[d.index] = d.id
          controller.enqueue({ type: 'tool-input-start', id: d.id, toolName: d.name })
        }
        if (d.arguments) controller.enqueue({ type: 'tool-input-delta', id: inputs[d.index], delta: d.arguments })
      }
    }
    function finish(controller, chunk) {
      if (open) controller.enqueue({ type: 'text-end', id })
      for (const input of inputs) controller.enqueue({ type: 'tool-input-end', id: input })
      for (const call of chunk.toolCalls ?? []) controller.enqueue(toolCallPart(call))
      controller.enqueue({ type: 'finish', finishReason: finishReason(chunk.finishReason), usage: usage(chunk) })
      controller.close()
    }
    return { stream }
  }
}

/** Most texts one `doEmbed` call takes (the engine's limit per `embed` call). */
const MAX_EMBEDDINGS_PER_CALL = 65536

/** The options of `providerOptions['mlx-serving']` an embedding call passes to `engine.embed`. */
const EMBED_OPTIONS = ['prompt', 'promptText', 'normalize', 'truncate']

class MlxServingEmbeddingModel {
  specificationVersion = 'v4'
  provider = 'mlx-serving'
  maxEmbeddingsPerCall = MAX_EMBEDDINGS_PER_CALL
  // Concurrent calls are batched together in the model's worker.
  supportsParallelCalls = true
  #engine
  #settings

  constructor(engine, modelId, settings = {}) {
    this.#engine = engine
    this.modelId = modelId
    this.#settings = settings
  }

  async doEmbed(options) {
    const request = { model: this.modelId, input: options.values }
    const own = { ...this.#settings, ...(options.providerOptions && options.providerOptions['mlx-serving']) }
    for (const key of EMBED_OPTIONS) if (own[key] !== undefined) request[key] = own[key]
    if (options.dimensions !== undefined) request.dimensions = options.dimensions
    const { embeddings, usage } = await this.#engine.embed(request, { signal: options.abortSignal, timeoutMs: own.timeoutMs })
    return { embeddings: embeddings.map((v) => Array.from(v)), usage: { tokens: usage.promptTokens }, warnings: [] }
  }
}

/**
 * A provider over `engine`: `provider(modelId, settings?)` (or
 * `provider.languageModel(...)`) is an AI SDK language model for a model
 * loaded into the engine under `modelId`. `settings.timeoutMs` bounds each call.
 */
function createMlxServing(engine, defaults = {}) {
  Engine.assertEngine(engine, 'createMlxServing')
  const provider = (modelId, settings) => new MlxServingLanguageModel(engine, modelId, { ...defaults, ...settings })
  provider.specificationVersion = 'v4'
  provider.languageModel = provider
  provider.embeddingModel = (modelId, settings) => new MlxServingEmbeddingModel(engine, modelId, { timeoutMs: defaults.timeoutMs, ...settings })
  provider.textEmbeddingModel = provider.embeddingModel
  const unsupported = (kind) => () => {
    throw new Error(`mlx-serving provides language and embedding models, not ${kind}`)
  }
  provider.imageModel = unsupported('image models')
  return provider
}

module.exports = { createMlxServing, MlxServingLanguageModel, MlxServingEmbeddingModel }
