'use strict'
// The public API: a thin layer over the native addon (../index.js) that adds
// what belongs on the JS side: type checks for untyped callers, AbortSignal
// wiring, the async iterator protocol, and Error objects with stable codes.

const native = require('../index.js')

/** Every error code this library uses, as `ErrorCode.NAME === 'NAME'`. */
const ErrorCode = Object.freeze(Object.fromEntries(native.errorCodes().map((c) => [c, c])))

/** The error class of this library; `code` is one of `ErrorCode`. */
class MlxServingError extends Error {
  constructor(code, message, options) {
    super(message, options)
    this.code = code
    this.name = code === 'TIMEOUT' ? 'TimeoutError' : code === 'ABORTED' ? 'AbortError' : 'MlxServingError'
  }
}

function invalid(field, why) {
  return new MlxServingError('INVALID_ARGUMENT', `${field}: ${why}`)
}

function describe(value) {
  if (value === null) return 'null'
  if (value === undefined) return 'undefined'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'number' && Number.isNaN(value)) return 'NaN'
  if (typeof value === 'function') return `a function${value.name ? ` (${value.name})` : ''}`
  if (typeof value === 'object') {
    const name = Object.getPrototypeOf(value)?.constructor?.name
    return name && name !== 'Object' ? `an instance of ${name}` : 'an object'
  }
  return `${typeof value} ${String(value).slice(0, 40)}`
}

// Marks engines, also across two copies of this package in one process.
const ENGINE = Symbol.for('mlx-serving.Engine')

/** Errors thrown by the native side carry `code`; anything else is a bug. */
function fromNative(err) {
  if (err instanceof MlxServingError) return err
  const code = err && typeof err.code === 'string' && ErrorCode[err.code] ? err.code : 'INTERNAL'
  return new MlxServingError(code, err && err.message ? err.message : String(err), { cause: err })
}

function callNative(fn) {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}

function check(outcome) {
  if (outcome.error) throw new MlxServingError(outcome.error.code, outcome.error.message)
  return outcome
}

// --- type checks for callers without TypeScript --------------------------

function plainObject(value, field, optional = false) {
  if (value === undefined && optional) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalid(field, `expected an object, got ${describe(value)}`)
  }
  return value
}

function onlyKeys(obj, field, allowed) {
  for (const key of Object.keys(obj)) {
    if (!allowed.includes(key)) throw invalid(`${field}.${key}`, `unknown option (known: ${allowed.join(', ')})`)
  }
}

function optNumber(obj, key, field = key) {
  const v = obj[key]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || Number.isNaN(v)) throw invalid(field, `expected a number, got ${describe(v)}`)
  return v
}

function str(v, field) {
  if (typeof v !== 'string') throw invalid(field, `expected a string, got ${describe(v)}`)
  return v
}

const REQUEST_KEYS = [
  'model', 'prompt', 'messages', 'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed', 'stop',
  'responseFormat', 'tools', 'toolChoice', 'parallelToolCalls', 'speculative',
]

/** JSON text of a schema given as an object (or a boolean schema). */
function schemaText(value, field) {
  if (value === null || (typeof value !== 'object' && typeof value !== 'boolean') || Array.isArray(value)) {
    throw invalid(field, `expected a JSON schema (an object), got ${describe(value)}`)
  }
  try {
    return JSON.stringify(value)
  } catch (e) {
    throw invalid(field, `cannot be written as JSON: ${e.message}`)
  }
}

function responseFormatInput(rf) {
  plainObject(rf, 'responseFormat')
  const type = str(rf.type, 'responseFormat.type')
  switch (type) {
    case 'json_schema': {
      onlyKeys(rf, 'responseFormat', ['type', 'schema', 'name'])
      const out = { type, schema: schemaText(rf.schema, 'responseFormat.schema') }
      if (rf.name !== undefined) out.name = str(rf.name, 'responseFormat.name')
      return out
    }
    case 'json_object':
      onlyKeys(rf, 'responseFormat', ['type'])
      return { type }
    case 'regex':
      onlyKeys(rf, 'responseFormat', ['type', 'pattern'])
      return { type, pattern: str(rf.pattern, 'responseFormat.pattern') }
    case 'grammar':
      onlyKeys(rf, 'responseFormat', ['type', 'lark'])
      return { type, lark: str(rf.lark, 'responseFormat.lark') }
    default:
      throw invalid('responseFormat.type', `must be 'json_schema', 'json_object', 'regex' or 'grammar', got ${describe(type)}`)
  }
}

function toolsInput(tools) {
  if (!Array.isArray(tools)) throw invalid('tools', `expected an array, got ${describe(tools)}`)
  return tools.map((t, i) => {
    plainObject(t, `tools[${i}]`)
    onlyKeys(t, `tools[${i}]`, ['name', 'description', 'parameters'])
    const out = { name: str(t.name, `tools[${i}].name`) }
    if (t.description !== undefined) out.description = str(t.description, `tools[${i}].description`)
    if (t.parameters !== undefined) out.parameters = schemaText(t.parameters, `tools[${i}].parameters`)
    return out
  })
}

function toolChoiceInput(choice, input) {
  if (typeof choice === 'string') {
    if (!['auto', 'none', 'required'].includes(choice)) throw invalid('toolChoice', `must be 'auto', 'none', 'required' or { name }, got ${describe(choice)}`)
    input.toolChoice = choice
    return
  }
  if (choice === null || typeof choice !== 'object' || Array.isArray(choice)) {
    throw invalid('toolChoice', `must be 'auto', 'none', 'required' or { name }, got ${describe(choice)}`)
  }
  onlyKeys(choice, 'toolChoice', ['name'])
  input.toolChoice = 'named'
  input.toolChoiceName = str(choice.name, 'toolChoice.name')
}

function messageInput(m, i) {
  plainObject(m, `messages[${i}]`)
  const role = str(m.role, `messages[${i}].role`)
  const out = { role }
  if (m.toolCalls !== undefined) {
    if (!Array.isArray(m.toolCalls)) throw invalid(`messages[${i}].toolCalls`, `expected an array, got ${describe(m.toolCalls)}`)
    out.toolCalls = m.toolCalls.map((c, j) => {
      const field = `messages[${i}].toolCalls[${j}]`
      plainObject(c, field)
      const args = c.arguments === undefined ? '{}' : typeof c.arguments === 'string' ? c.arguments : schemaText(c.arguments, `${field}.arguments`)
      return { id: c.id === undefined ? '' : str(c.id, `${field}.id`), name: str(c.name, `${field}.name`), arguments: args }
    })
  }
  // An assistant message that only calls tools may have no content.
  out.content = (m.content === undefined || m.content === null) && out.toolCalls ? '' : str(m.content, `messages[${i}].content`)
  if (m.toolCallId !== undefined) out.toolCallId = str(m.toolCallId, `messages[${i}].toolCallId`)
  return out
}

/** `speculative` as the native side takes it: `false` is `{ type: 'none' }`. */
function speculativeInput(value, field = 'speculative') {
  if (value === false) return { type: 'none' }
  plainObject(value, field)
  onlyKeys(value, field, ['type', 'maxDraft', 'ngram', 'model'])
  const out = { type: str(value.type, `${field}.type`) }
  for (const key of ['maxDraft', 'ngram']) {
    const v = optNumber(value, key, `${field}.${key}`)
    if (v !== undefined) out[key] = v
  }
  if (value.model !== undefined) out.model = str(value.model, `${field}.model`)
  return out
}

function generateInput(request, options) {
  plainObject(request, 'request')
  onlyKeys(request, 'request', REQUEST_KEYS)
  const input = { model: str(request.model, 'model') }
  if (request.prompt !== undefined) input.prompt = str(request.prompt, 'prompt')
  if (request.messages !== undefined) {
    if (!Array.isArray(request.messages)) throw invalid('messages', `expected an array, got ${describe(request.messages)}`)
    input.messages = request.messages.map(messageInput)
  }
  if (request.responseFormat !== undefined) input.responseFormat = responseFormatInput(request.responseFormat)
  if (request.tools !== undefined) input.tools = toolsInput(request.tools)
  if (request.toolChoice !== undefined) toolChoiceInput(request.toolChoice, input)
  if (request.parallelToolCalls !== undefined) {
    if (typeof request.parallelToolCalls !== 'boolean') throw invalid('parallelToolCalls', `expected a boolean, got ${describe(request.parallelToolCalls)}`)
    input.parallelToolCalls = request.parallelToolCalls
  }
  for (const key of ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed']) {
    const v = optNumber(request, key)
    if (v !== undefined) input[key] = v
  }
  if (request.stop !== undefined) {
    const stop = typeof request.stop === 'string' ? [request.stop] : request.stop
    if (!Array.isArray(stop)) throw invalid('stop', `expected a string or an array of strings, got ${describe(request.stop)}`)
    input.stop = stop.map((s, i) => str(s, `stop[${i}]`))
  }
  if (request.speculative !== undefined) input.speculative = speculativeInput(request.speculative)
  const timeoutMs = optNumber(options, 'timeoutMs')
  if (timeoutMs !== undefined) input.timeoutMs = timeoutMs
  return input
}

const EMBED_KEYS = ['model', 'input', 'dimensions', 'prompt', 'promptText', 'normalize', 'truncate']

function embedInput(request, options) {
  plainObject(request, 'request')
  onlyKeys(request, 'request', EMBED_KEYS)
  const input = { model: str(request.model, 'model') }
  const texts = request.input
  if (typeof texts === 'string') input.input = [texts]
  else if (Array.isArray(texts)) input.input = texts.map((t, i) => str(t, `input[${i}]`))
  else throw invalid('input', `expected a string or an array of strings, got ${describe(texts)}`)
  const dimensions = optNumber(request, 'dimensions')
  if (dimensions !== undefined) input.dimensions = dimensions
  if (request.prompt !== undefined) input.prompt = str(request.prompt, 'prompt')
  if (request.promptText !== undefined) input.promptText = str(request.promptText, 'promptText')
  for (const key of ['normalize', 'truncate']) {
    const v = request[key]
    if (v === undefined) continue
    if (typeof v !== 'boolean') throw invalid(key, `expected a boolean, got ${describe(v)}`)
    input[key] = v
  }
  const timeoutMs = optNumber(options, 'timeoutMs')
  if (timeoutMs !== undefined) input.timeoutMs = timeoutMs
  return input
}

function drainMs(options) {
  const v = optNumber(options, 'drainTimeoutMs')
  if (v !== undefined && !(v >= 0)) throw invalid('drainTimeoutMs', `must be a non-negative number, got ${v}`)
  return v
}

function abortSignal(options) {
  const signal = options.signal
  if (signal === undefined || signal === null) return undefined
  if (typeof signal !== 'object' || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw invalid('signal', `expected an AbortSignal, got ${describe(signal)}`)
  }
  return signal
}

function abortError(signal) {
  const reason = signal.reason
  const message = reason instanceof Error ? reason.message : reason !== undefined ? String(reason) : 'the operation was aborted'
  return new MlxServingError('ABORTED', message, { cause: reason })
}

// --- the stream ----------------------------------------------------------

/** A native tool-call delta without its empty fields. */
function delta(d) {
  const out = { index: d.index }
  if (d.id != null) out.id = d.id
  if (d.name != null) out.name = d.name
  out.arguments = d.arguments
  return out
}

/**
 * The async iterator `generate()` returns. Chunks are `{ text, tokenIds }`;
 * the last chunk has `done: true` with `finishReason`, `usage` and `timings`.
 * Errors (timeout, abort, worker failure, ...) reject `next()` after every
 * token produced before them was delivered.
 */
class Generation {
  #native
  #signal
  #onAbort
  #pending
  #finished = false
  #tools

  constructor(core, input, signal) {
    this.#signal = signal
    this.#tools = input.tools !== undefined
    if (signal && signal.aborted) {
      this.#pending = abortError(signal) // rejects on first next(), no work started
      return
    }
    this.#native = callNative(() => core.generate(input))
    if (signal) {
      this.#onAbort = () => {
        this.#pending = abortError(signal)
        this.#native.cancel('abort')
      }
      signal.addEventListener('abort', this.#onAbort, { once: true })
    }
  }

  [Symbol.asyncIterator]() {
    return this
  }

  async next() {
    if (this.#finished) return { done: true, value: undefined }
    if (!this.#native) {
      this.#finish()
      throw this.#pending
    }
    const event = await this.#native.next()
    switch (event.kind) {
      case 'token': {
        const value = { text: event.text, tokenIds: event.tokenIds, done: false }
        if (event.toolCallDeltas) value.toolCallDeltas = event.toolCallDeltas.map(delta)
        return { done: false, value }
      }
      case 'end': {
        this.#finish()
        const value = { text: '', tokenIds: [], done: true, finishReason: event.finishReason, usage: event.usage, timings: event.timings }
        if (this.#tools) value.toolCalls = event.toolCalls ?? []
        return { done: false, value }
      }
      default: {
        this.#finish()
        const { code, message } = event.error
        if (code === 'ABORTED' && this.#pending) throw this.#pending
        throw new MlxServingError(code, message)
      }
    }
  }

  /** Stops the generation (also what `break` in `for await` calls). */
  async return(value) {
    this.#native?.cancel('close')
    this.#finish()
    return { done: true, value }
  }

  /** Stops the generation and rethrows `err`. */
  async throw(err) {
    this.#native?.cancel('close')
    this.#finish()
    throw err
  }

  /** Reads the whole generation: `{ text, tokenIds, finishReason, usage, timings }` (and `toolCalls` with tools). */
  async collect() {
    let text = ''
    const tokenIds = []
    for await (const chunk of this) {
      text += chunk.text
      tokenIds.push(...chunk.tokenIds)
      if (chunk.done) {
        const out = { text, tokenIds, finishReason: chunk.finishReason, usage: chunk.usage, timings: chunk.timings }
        if (chunk.toolCalls) out.toolCalls = chunk.toolCalls
        return out
      }
    }
    throw new MlxServingError('INTERNAL', 'the stream ended without an end chunk')
  }

  #finish() {
    this.#finished = true
    if (this.#onAbort) {
      this.#signal.removeEventListener('abort', this.#onAbort)
      this.#onAbort = undefined
    }
  }
}

// --- the engine ----------------------------------------------------------

const ENGINE_KEYS = ['maxBatchSize', 'maxQueued', 'defaultTimeoutMs', 'hangTimeoutMs', 'prefixCacheMb']

/** Local LLM inference on MLX. See docs/streaming.md for the full contract. */
class Engine {
  #core

  constructor(options) {
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ENGINE_KEYS)
    const input = {}
    for (const key of ENGINE_KEYS) {
      const v = optNumber(o, key)
      if (v !== undefined) input[key] = v
    }
    this.#core = callNative(() => new native.EngineCore(input))
  }

  /** Same as `new Engine(options)`, for symmetry with the async API. */
  static async create(options) {
    return new Engine(options)
  }

  /** Whether `value` is an Engine (of this or another copy of this package). */
  static isEngine(value) {
    return value !== null && typeof value === 'object' && value[ENGINE] === true
  }

  /** Throws a TypeError naming what `value` is unless it is an Engine; `caller` names the function that needs one. */
  static assertEngine(value, caller) {
    if (!Engine.isEngine(value)) throw new TypeError(`${caller}: expected an Engine, got ${describe(value)}`)
  }

  /**
   * Loads a model; resolves with its info once it is ready. `onProgress`
   * is called with `{ bytesRead, totalBytes }` while the weights are read.
   */
  async loadModel(spec) {
    plainObject(spec, 'model')
    onlyKeys(spec, 'model', ['id', 'path', 'onProgress', 'speculative'])
    const id = str(spec.id, 'id')
    const path = str(spec.path, 'path')
    const onProgress = spec.onProgress
    if (onProgress !== undefined && typeof onProgress !== 'function') throw invalid('onProgress', `expected a function, got ${describe(onProgress)}`)
    const speculative = spec.speculative === undefined ? undefined : speculativeInput(spec.speculative)
    callNative(() => this.#core.startLoad(id, path))
    if (speculative) callNative(() => this.#core.setSpeculativeDefault(id, speculative))
    const ready = this.#core.waitReady(id)
    if (!onProgress) return check(await ready).info
    // Progress is read from the load's counters while waiting (no callback
    // crosses from the loading thread).
    let last = -1
    let total
    const report = () => {
      const model = this.#core.stats().models.find((m) => m.id === id)
      const p = model && model.loadProgress
      if (p && p.bytesRead !== last) {
        last = p.bytesRead
        total = p.totalBytes
        onProgress({ bytesRead: p.bytesRead, totalBytes: p.totalBytes })
      }
    }
    report()
    const timer = setInterval(report, 100)
    try {
      const outcome = check(await ready)
      report() // the last report: everything read
      if (total !== undefined && last !== total) onProgress({ bytesRead: total, totalBytes: total })
      return outcome.info
    } finally {
      clearInterval(timer)
    }
  }

  /** Drains a model's requests (up to `drainTimeoutMs`), unloads it and frees its memory. */
  async unloadModel(id, options) {
    str(id, 'id')
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['drainTimeoutMs'])
    check(await this.#core.unloadModel(id, drainMs(o)))
  }

  /** Streams a completion. See docs/streaming.md for the end-of-stream contract. */
  generate(request, options) {
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['signal', 'timeoutMs'])
    const signal = abortSignal(o)
    return new Generation(this.#core, generateInput(request, o), signal)
  }

  /**
   * Prefills a prompt (`{ model, prompt }` or `{ model, messages }`) and
   * writes its keys and values to `path` (written atomically: a crash leaves
   * the old file or the new one). Resolves with `{ path, tokens, bytes }`.
   */
  async saveCache(request, path, options) {
    plainObject(request, 'request')
    onlyKeys(request, 'request', ['model', 'prompt', 'messages'])
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['signal', 'timeoutMs'])
    const input = generateInput(request, o)
    input.saveCache = str(path, 'path')
    const { usage } = await new Generation(this.#core, input, abortSignal(o)).collect()
    return { path, tokens: usage.promptTokens, bytes: require('node:fs').statSync(path).size }
  }

  /**
   * Reads a file written by `saveCache` into the model's prefix cache, after
   * checking it was made by this model (CACHE_INVALID otherwise); prompts
   * that start with its tokens then skip their prefill. Resolves with `{ tokens }`.
   */
  async loadCache(model, path, options) {
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['signal', 'timeoutMs'])
    const input = { model: str(model, 'model'), loadCache: str(path, 'path') }
    const timeoutMs = optNumber(o, 'timeoutMs')
    if (timeoutMs !== undefined) input.timeoutMs = timeoutMs
    const { usage } = await new Generation(this.#core, input, abortSignal(o)).collect()
    return { tokens: usage.promptTokens }
  }

  /**
   * Embeds one text or several with an embedding model. Resolves with
   * `{ embeddings: Float32Array[], usage: { promptTokens } }`, one vector per
   * input, in order. Concurrent calls share forward passes in the model's
   * worker; `signal` and `timeoutMs` work as for `generate`.
   */
  async embed(request, options) {
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['signal', 'timeoutMs'])
    const signal = abortSignal(o)
    const input = embedInput(request, o)
    if (signal && signal.aborted) throw abortError(signal)
    const call = callNative(() => this.#core.embed(input))
    let aborted
    const onAbort = () => {
      aborted = abortError(signal)
      call.cancel('abort')
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    let event
    try {
      event = await call.next()
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
    if (event.kind === 'embeddings') return { embeddings: event.embeddings, usage: { promptTokens: event.usage.promptTokens } }
    if (event.kind !== 'error') throw new MlxServingError('INTERNAL', `an embed call ended with a ${event.kind} event`)
    const { code, message } = event.error
    if (code === 'ABORTED' && aborted) throw aborted
    throw new MlxServingError(code, message)
  }

  tokenize(model, text) {
    str(model, 'model')
    str(text, 'text')
    return callNative(() => this.#core.tokenize(model, text))
  }

  detokenize(model, ids) {
    str(model, 'model')
    if (!Array.isArray(ids) || !ids.every((id) => Number.isInteger(id) && id >= 0 && id < 2 ** 32)) {
      throw invalid('ids', 'expected an array of token ids (non-negative integers)')
    }
    return callNative(() => this.#core.detokenize(model, ids))
  }

  /** The prompt text `messages` become with the model's chat template (with `options.tools`, as a request with those tools renders it). */
  applyChatTemplate(model, messages, options) {
    str(model, 'model')
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['tools'])
    const input = generateInput({ model, messages, tools: o.tools }, {})
    return callNative(() => this.#core.applyChatTemplate(model, input.messages, input.tools))
  }

  /** Info of a loaded model (MODEL_NOT_FOUND if it is not ready). */
  modelInfo(id) {
    str(id, 'id')
    return callNative(() => this.#core.modelInfo(id))
  }

  /** Model and memory figures; see docs/reliability.md. */
  stats() {
    return this.#core.stats()
  }

  /**
   * Refuses new work (SHUTTING_DOWN), lets in-flight requests finish for up
   * to `drainTimeoutMs` (default 30000), ends the rest with SHUTTING_DOWN,
   * unloads the models and joins the worker threads. Safe to call twice.
   */
  async shutdown(options) {
    const o = plainObject(options, 'options', true)
    onlyKeys(o, 'options', ['drainTimeoutMs'])
    const drainTimeoutMs = drainMs(o)
    this.#core.refuseNewWork()
    check(await this.#core.shutdown(drainTimeoutMs))
  }
}

/**
 * Opt-in: on SIGTERM or SIGINT, shut `engine` down gracefully, then let the
 * signal take its default course. Returns a function that removes the handlers.
 */
function shutdownOnSignals(engine, options = {}) {
  const signals = options.signals ?? ['SIGTERM', 'SIGINT']
  const handler = (signal) => {
    remove()
    engine.shutdown({ drainTimeoutMs: options.drainTimeoutMs }).finally(() => process.kill(process.pid, signal))
  }
  const remove = () => signals.forEach((s) => process.removeListener(s, handler))
  signals.forEach((s) => process.once(s, handler))
  return remove
}

Object.defineProperty(Engine.prototype, ENGINE, { value: true })

module.exports = { Engine, ErrorCode, MlxServingError, shutdownOnSignals }
