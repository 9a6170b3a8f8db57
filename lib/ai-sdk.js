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
// `@ai-sdk/provider` (specification v4): `embed` / `embedMany` run on a local
// embedding model. Text in, text out: tool calls, files and JSON schemas
// are reported as unsupported warnings, never silently dropped.

const { Engine } = require('./index.js')

/** Flattens the AI SDK's prompt into the chat messages the model's template takes. */
function toMessages(prompt, warnings) {
  const messages = []
  for (const message of prompt) {
    if (message.role === 'system') {
      messages.push({ role: 'system', content: message.content })
      continue
    }
    let content = ''
    for (const part of message.content) {
      if (part.type === 'text') content += part.text
      else if (part.type === 'reasoning') continue
      else warnings.push({ type: 'unsupported', feature: `${message.role} content part '${part.type}'`, details: 'only text parts reach the model' })
    }
    if (message.role === 'user' || message.role === 'assistant') messages.push({ role: message.role, content })
    else warnings.push({ type: 'unsupported', feature: `'${message.role}' messages`, details: 'tool results are not passed to the model' })
  }
  return messages
}

function callSettings(modelId, options, warnings) {
  if (options.tools && options.tools.length) warnings.push({ type: 'unsupported', feature: 'tools' })
  if (options.responseFormat && options.responseFormat.type === 'json') warnings.push({ type: 'unsupported', feature: 'responseFormat json' })
  for (const key of ['presencePenalty', 'frequencyPenalty']) if (options[key] !== undefined) warnings.push({ type: 'unsupported', feature: key })
  const request = { model: modelId, messages: toMessages(options.prompt, warnings) }
  if (options.maxOutputTokens !== undefined) request.maxTokens = options.maxOutputTokens
  if (options.temperature !== undefined) request.temperature = options.temperature
  if (options.topP !== undefined) request.topP = options.topP
  if (options.topK !== undefined) request.topK = options.topK
  if (options.seed !== undefined) request.seed = options.seed
  if (options.stopSequences && options.stopSequences.length) request.stop = options.stopSequences
  return request
}

const finishReason = (reason) => ({ unified: reason === 'stop' || reason === 'length' ? reason : 'other', raw: reason })

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
    return {
      content: done.text ? [{ type: 'text', text: done.text }] : [],
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
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue({ type: 'stream-start', warnings })
        controller.enqueue({ type: 'response-metadata', modelId, timestamp: new Date() })
      },
      async pull(controller) {
        try {
          const { value: chunk, done } = await generation.next()
          if (done) return controller.close()
          if (!chunk.done) {
            if (!open) {
              open = true
              controller.enqueue({ type: 'text-start', id })
            }
            if (chunk.text) controller.enqueue({ type: 'text-delta', id, delta: chunk.text })
            return
          }
          if (open) controller.enqueue({ type: 'text-end', id })
          controller.enqueue({ type: 'finish', finishReason: finishReason(chunk.finishReason), usage: usage(chunk) })
          controller.close()
        } catch (error) {
          controller.enqueue({ type: 'error', error })
          controller.close()
        }
      },
      async cancel() {
        await generation.return()
      },
    })
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
