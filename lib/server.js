'use strict'
// An OpenAI-compatible HTTP API over an Engine, in the caller's process.
//
//   const { Engine } = require('mlx-serving')
//   const { createServer } = require('mlx-serving/server')
//   const engine = await Engine.create()
//   await engine.loadModel({ id: 'smol', path: 'models/SmolLM2-135M-Instruct.Q4_1.gguf' })
//   const server = createServer(engine, { port: 8080 })
//   const { url } = await server.listen()
//
// `createHandler(engine, options)` gives the bare `(req, res)` handler, to
// mount inside a service's own node:http server. Every request goes through
// the same Engine API as any other caller: one place for validation,
// cancellation and errors.

const http = require('node:http')
const { randomUUID } = require('node:crypto')
const client = require('prom-client')
const { Engine, MlxServingError } = require('./index.js')

const DEFAULTS = {
  host: '127.0.0.1',
  port: 8080,
  apiKey: undefined,
  bodyLimitBytes: 4 * 1024 * 1024,
  timeoutMs: undefined,
  retryAfterSeconds: 1,
  hangThresholdMs: 30_000,
}

/** An error in OpenAI's shape, with its HTTP status. */
class HttpError extends Error {
  constructor(status, message, { type = 'invalid_request_error', code = null, param = null, headers = {} } = {}) {
    super(message)
    this.status = status
    this.type = type
    this.code = code
    this.param = param
    this.headers = headers
  }

  body() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } }
  }
}

/** The HTTP face of each engine error code. */
function httpError(err, options) {
  if (err instanceof HttpError) return err
  if (!(err instanceof MlxServingError)) return new HttpError(500, `internal error: ${err && err.message}`, { type: 'server_error', code: 'internal_error' })
  const param = err.code === 'INVALID_ARGUMENT' ? /^([\w.[\]]+):/.exec(err.message)?.[1] ?? null : null
  switch (err.code) {
    case 'INVALID_ARGUMENT':
      return new HttpError(400, err.message, { code: 'invalid_argument', param })
    case 'CONTEXT_OVERFLOW':
      return new HttpError(400, err.message, { code: 'context_length_exceeded', param: 'messages' })
    case 'MODEL_NOT_FOUND':
      return new HttpError(404, err.message, { code: 'model_not_found', param: 'model' })
    case 'QUEUE_FULL':
      return new HttpError(429, err.message, { type: 'rate_limit_error', code: 'queue_full', headers: { 'retry-after': String(options.retryAfterSeconds) } })
    case 'TIMEOUT':
      return new HttpError(504, err.message, { type: 'timeout_error', code: 'timeout' })
    case 'SHUTTING_DOWN':
    case 'MODEL_LOAD_FAILED':
    case 'WORKER_CRASHED':
    case 'WORKER_HUNG':
      return new HttpError(503, err.message, { type: 'server_error', code: err.code.toLowerCase() })
    default:
      return new HttpError(500, err.message, { type: 'server_error', code: err.code.toLowerCase() })
  }
}

function sendJson(res, status, body, headers = {}) {
  const data = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers })
  res.end(data)
}

function sendError(res, err) {
  if (res.headersSent) {
    // Inside an event stream: an error event, then the end.
    if (!res.writableEnded) res.end(`data: ${JSON.stringify(err.body())}\n\n`)
    return
  }
  sendJson(res, err.status, err.body(), err.headers)
}

/** Reads a JSON body of at most `limit` bytes. */
function readJson(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (declared > limit) {
      reject(new HttpError(413, `request body larger than ${limit} bytes`, { code: 'body_too_large' }))
      req.resume()
      return
    }
    const parts = []
    let size = 0
    req.on('data', (chunk) => {
      size += chunk.length
      if (size > limit) {
        reject(new HttpError(413, `request body larger than ${limit} bytes`, { code: 'body_too_large' }))
        req.removeAllListeners('data')
        req.resume()
        return
      }
      parts.push(chunk)
    })
    req.on('error', reject)
    req.on('end', () => {
      if (size > limit) return
      const text = Buffer.concat(parts).toString('utf8')
      try {
        const body = JSON.parse(text)
        if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Error('expected a JSON object')
        resolve(body)
      } catch (e) {
        reject(new HttpError(400, `request body is not a JSON object: ${e.message}`, { code: 'invalid_json' }))
      }
    })
  })
}

const bad = (param, message) => new HttpError(400, `${param}: ${message}`, { code: 'invalid_argument', param })

/** OpenAI's message content: a string, or text parts. */
function contentText(content, param) {
  if (typeof content === 'string') return content
  if (content === null || content === undefined) return ''
  if (Array.isArray(content)) {
    return content
      .map((part, i) => {
        if (part && part.type === 'text' && typeof part.text === 'string') return part.text
        throw bad(`${param}[${i}]`, 'only text content parts are supported')
      })
      .join('')
  }
  throw bad(param, 'expected a string or an array of text parts')
}

/** The sampling fields both endpoints share, mapped to the Engine's request. */
function samplingFields(body) {
  const out = {}
  const maxTokens = body.max_completion_tokens ?? body.max_tokens
  if (maxTokens !== undefined && maxTokens !== null) out.maxTokens = maxTokens
  const map = { temperature: 'temperature', top_p: 'topP', top_k: 'topK', min_p: 'minP', seed: 'seed', repetition_penalty: 'repetitionPenalty' }
  for (const [from, to] of Object.entries(map)) if (body[from] !== undefined && body[from] !== null) out[to] = body[from]
  if (body.stop !== undefined && body.stop !== null) out.stop = body.stop
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw bad('n', 'only n=1 is supported')
  if (body.stream !== undefined && typeof body.stream !== 'boolean') throw bad('stream', 'expected a boolean')
  return out
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

/** An assistant message's `tool_calls`, in the Engine's shape. */
function pastToolCalls(calls, param) {
  if (!Array.isArray(calls)) throw bad(param, 'expected an array')
  return calls.map((c, j) => {
    const at = `${param}[${j}]`
    if (!isObject(c) || !isObject(c.function)) throw bad(at, 'expected { id, type: "function", function: { name, arguments } }')
    if (c.type !== undefined && c.type !== 'function') throw bad(`${at}.type`, `only "function" calls are supported, got ${JSON.stringify(c.type)}`)
    if (typeof c.function.name !== 'string') throw bad(`${at}.function.name`, 'expected a string')
    const args = c.function.arguments ?? '{}'
    if (typeof args !== 'string') throw bad(`${at}.function.arguments`, 'expected a JSON string')
    return { id: typeof c.id === 'string' ? c.id : '', name: c.function.name, arguments: args }
  })
}

/** OpenAI's `response_format` as the Engine's `responseFormat` (undefined for text). */
function responseFormat(rf) {
  if (rf === undefined || rf === null) return undefined
  if (!isObject(rf)) throw bad('response_format', 'expected an object')
  switch (rf.type) {
    case 'text':
      return undefined
    case 'json_object':
      return { type: 'json_object' }
    case 'json_schema': {
      const js = rf.json_schema
      if (!isObject(js)) throw bad('response_format.json_schema', 'expected { name, schema, strict? }')
      if (js.strict !== undefined && typeof js.strict !== 'boolean') throw bad('response_format.json_schema.strict', 'expected a boolean')
      // The schema is always followed exactly (strict or not); none means any JSON.
      const schema = js.schema === undefined ? {} : js.schema
      if (!isObject(schema) && typeof schema !== 'boolean') throw bad('response_format.json_schema.schema', 'expected a JSON schema (an object)')
      const out = { type: 'json_schema', schema }
      if (typeof js.name === 'string') out.name = js.name
      return out
    }
    default:
      throw bad('response_format.type', `expected "text", "json_object" or "json_schema", got ${JSON.stringify(rf.type)}`)
  }
}

/** OpenAI's `tools` (function tools) as the Engine's. */
function tools(list) {
  if (!Array.isArray(list)) throw bad('tools', 'expected an array')
  return list.map((t, i) => {
    if (!isObject(t)) throw bad(`tools[${i}]`, 'expected an object')
    if (t.type !== 'function') throw bad(`tools[${i}].type`, `only "function" tools are supported, got ${JSON.stringify(t.type)}`)
    const f = t.function
    if (!isObject(f)) throw bad(`tools[${i}].function`, 'expected { name, description?, parameters? }')
    const out = { name: f.name }
    if (f.description !== undefined) out.description = f.description
    if (f.parameters !== undefined) out.parameters = f.parameters
    return out
  })
}

/** OpenAI's `tool_choice` as the Engine's `toolChoice`. */
function toolChoice(choice) {
  if (typeof choice === 'string') return choice
  if (isObject(choice) && choice.type === 'function' && isObject(choice.function) && typeof choice.function.name === 'string') return { name: choice.function.name }
  throw bad('tool_choice', 'expected "none", "auto", "required" or { type: "function", function: { name } }')
}

function chatRequest(body) {
  if (typeof body.model !== 'string') throw bad('model', 'expected a string')
  if (!Array.isArray(body.messages) || body.messages.length === 0) throw bad('messages', 'expected a non-empty array')
  const messages = body.messages.map((m, i) => {
    if (m === null || typeof m !== 'object') throw bad(`messages[${i}]`, 'expected an object')
    if (typeof m.role !== 'string') throw bad(`messages[${i}].role`, 'expected a string')
    // OpenAI's newer name for the system role.
    const role = m.role === 'developer' ? 'system' : m.role
    const message = { role, content: contentText(m.content, `messages[${i}].content`) }
    if (m.tool_calls !== undefined && m.tool_calls !== null) message.toolCalls = pastToolCalls(m.tool_calls, `messages[${i}].tool_calls`)
    if (m.tool_call_id !== undefined) {
      if (typeof m.tool_call_id !== 'string') throw bad(`messages[${i}].tool_call_id`, 'expected a string')
      message.toolCallId = m.tool_call_id
    }
    return message
  })
  const request = { model: body.model, messages, ...samplingFields(body) }
  const format = responseFormat(body.response_format)
  if (format) request.responseFormat = format
  if (body.tools !== undefined && body.tools !== null) request.tools = tools(body.tools)
  if (body.tool_choice !== undefined && body.tool_choice !== null) request.toolChoice = toolChoice(body.tool_choice)
  if (body.parallel_tool_calls !== undefined && body.parallel_tool_calls !== null) {
    if (typeof body.parallel_tool_calls !== 'boolean') throw bad('parallel_tool_calls', 'expected a boolean')
    request.parallelToolCalls = body.parallel_tool_calls
  }
  return request
}

/** A finished call in OpenAI's shape. */
const toolCallOut = (c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })

/** A streamed call delta in OpenAI's shape: the first of a call has its id, type and name. */
function toolCallDeltaOut(d) {
  const out = { index: d.index }
  if (d.id !== undefined) Object.assign(out, { id: d.id, type: 'function' })
  out.function = d.name !== undefined ? { name: d.name, arguments: d.arguments } : { arguments: d.arguments }
  return out
}

function completionRequest(body) {
  if (typeof body.model !== 'string') throw bad('model', 'expected a string')
  let prompt = body.prompt
  if (Array.isArray(prompt)) {
    if (prompt.length !== 1 || typeof prompt[0] !== 'string') throw bad('prompt', 'only a single string prompt is supported')
    prompt = prompt[0]
  }
  if (typeof prompt !== 'string') throw bad('prompt', 'expected a string')
  const request = { model: body.model, prompt, ...samplingFields(body) }
  const format = responseFormat(body.response_format)
  if (format) request.responseFormat = format
  return request
}

/** OpenAI's embeddings request, mapped to the Engine's; `prompt` (a named prompt of the model) and `truncate` are ours. */
function embeddingsRequest(body) {
  if (typeof body.model !== 'string') throw bad('model', 'expected a string')
  const input = body.input
  const texts = typeof input === 'string' ? [input] : input
  if (!Array.isArray(texts) || texts.length === 0) throw bad('input', 'expected a string or a non-empty array of strings')
  texts.forEach((t, i) => {
    if (typeof t !== 'string') throw bad(`input[${i}]`, Array.isArray(t) || typeof t === 'number' ? 'token arrays are not supported; send text' : 'expected a string')
  })
  const format = body.encoding_format ?? 'float'
  if (format !== 'float' && format !== 'base64') throw bad('encoding_format', "expected 'float' or 'base64'")
  const request = { model: body.model, input: texts }
  if (body.dimensions !== undefined && body.dimensions !== null) request.dimensions = body.dimensions
  if (body.prompt !== undefined && body.prompt !== null) request.prompt = body.prompt
  if (body.truncate !== undefined && body.truncate !== null) request.truncate = body.truncate
  return { request, format }
}

function usageOf(final) {
  const { promptTokens, completionTokens } = final.usage
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens }
}

function metrics(engine) {
  const registry = new client.Registry()
  const byModel = (name, help, pick) =>
    new client.Gauge({
      name,
      help,
      labelNames: ['model'],
      registers: [registry],
      collect() {
        this.reset()
        for (const m of engine.stats().models) this.set({ model: m.id }, pick(m))
      },
    })
  byModel('mlx_serving_queue_depth', 'Requests waiting for a batch slot.', (m) => m.queuedRequests)
  byModel('mlx_serving_active_requests', 'Requests in the running batch.', (m) => m.activeRequests)
  byModel('mlx_serving_tokens_generated', 'Tokens generated by the model since it was loaded (all callers).', (m) => m.tokensGenerated)
  byModel('mlx_serving_worker_restarts', 'Workers replaced after a panic or a hang.', (m) => m.restarts)
  byModel('mlx_serving_model_ready', '1 while the model is ready.', (m) => (m.state === 'ready' ? 1 : 0))
  byModel('mlx_serving_prefix_cache_bytes', 'Bytes of keys and values kept for prefix reuse.', (m) => m.prefixCache.bytes)
  byModel('mlx_serving_prefix_cache_hits', 'Prompts that started from a cached prefix (current worker).', (m) => m.prefixCache.hits)
  byModel('mlx_serving_prefix_cache_tokens_reused', 'Prompt tokens not prefilled thanks to the prefix cache (current worker).', (m) => m.prefixCache.tokensReused)
  byModel('mlx_serving_heartbeat_age_seconds', 'Seconds since the worker last finished a step or went idle.', (m) => m.lastHeartbeatMsAgo / 1000)
  new client.Gauge({
    name: 'mlx_serving_memory_active_bytes',
    help: 'MLX memory in use.',
    registers: [registry],
    collect() {
      this.set(engine.stats().memory.activeBytes)
    },
  })
  return {
    registry,
    requests: new client.Counter({ name: 'mlx_serving_http_requests_total', help: 'HTTP requests by endpoint and status.', labelNames: ['endpoint', 'status'], registers: [registry] }),
    tokens: new client.Counter({ name: 'mlx_serving_http_completion_tokens_total', help: 'Completion tokens sent over HTTP.', labelNames: ['model'], registers: [registry] }),
    ttft: new client.Histogram({
      name: 'mlx_serving_time_to_first_token_seconds',
      help: 'Time from request to first token, HTTP requests.',
      labelNames: ['model'],
      buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  }
}

/**
 * The `(req, res)` handler of the OpenAI-compatible API. Options:
 * `apiKey` (require `Authorization: Bearer <apiKey>` on /v1/*), `bodyLimitBytes`
 * (4 MiB), `timeoutMs` (per request; the engine's default otherwise),
 * `retryAfterSeconds` (sent with 429), `hangThresholdMs` (/health reports 503
 * when a busy worker has not beaten for this long; 30000).
 */
function createHandler(engine, options = {}) {
  Engine.assertEngine(engine, 'createHandler')
  const o = { ...DEFAULTS, ...options }
  const m = metrics(engine)

  async function generate(req, res, endpoint, body, request) {
    const stream = body.stream === true
    const includeUsage = stream && body.stream_options && body.stream_options.include_usage === true
    const id = `${endpoint === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`
    const created = Math.floor(Date.now() / 1000)
    const controller = new AbortController()
    const onClose = () => {
      if (!res.writableFinished) controller.abort(new Error('the client disconnected'))
    }
    res.on('close', onClose)
    const started = performance.now()
    let firstToken = true
    try {
      // Synchronous refusals (validation, unknown model, full queue) throw here.
      const generation = engine.generate(request, { signal: controller.signal, timeoutMs: o.timeoutMs })
      const frame = (choice, extra = {}) => ({
        id,
        object: endpoint === 'chat' ? 'chat.completion.chunk' : 'text_completion',
        created,
        model: request.model,
        choices: [{ index: 0, ...choice }],
        ...extra,
      })
      let text = ''
      for await (const chunk of generation) {
        if (!chunk.done) {
          if (firstToken) {
            firstToken = false
            m.ttft.observe({ model: request.model }, (performance.now() - started) / 1000)
            if (stream) {
              res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
              if (endpoint === 'chat') res.write(`data: ${JSON.stringify(frame({ delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }))}\n\n`)
            }
          }
          m.tokens.inc({ model: request.model }, chunk.tokenIds.length)
          if (!stream) text += chunk.text
          else {
            if (chunk.text) {
              const choice = endpoint === 'chat' ? { delta: { content: chunk.text }, logprobs: null, finish_reason: null } : { text: chunk.text, logprobs: null, finish_reason: null }
              res.write(`data: ${JSON.stringify(frame(choice))}\n\n`)
            }
            if (chunk.toolCallDeltas) {
              const delta = { tool_calls: chunk.toolCallDeltas.map(toolCallDeltaOut) }
              res.write(`data: ${JSON.stringify(frame({ delta, logprobs: null, finish_reason: null }))}\n\n`)
            }
          }
          continue
        }
        const finish = chunk.finishReason
        if (stream) {
          if (firstToken) res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
          const choice = endpoint === 'chat' ? { delta: {}, logprobs: null, finish_reason: finish } : { text: '', logprobs: null, finish_reason: finish }
          res.write(`data: ${JSON.stringify(frame(choice))}\n\n`)
          if (includeUsage) res.write(`data: ${JSON.stringify({ ...frame({}), choices: [], usage: usageOf(chunk) })}\n\n`)
          res.end('data: [DONE]\n\n')
        } else {
          const calls = chunk.toolCalls ?? []
          const message = { role: 'assistant', content: calls.length && !text ? null : text }
          if (calls.length) message.tool_calls = calls.map(toolCallOut)
          const choice = endpoint === 'chat' ? { index: 0, message, logprobs: null, finish_reason: finish } : { index: 0, text, logprobs: null, finish_reason: finish }
          sendJson(res, 200, { id, object: endpoint === 'chat' ? 'chat.completion' : 'text_completion', created, model: request.model, choices: [choice], usage: usageOf(chunk) })
        }
        m.requests.inc({ endpoint, status: 200 })
      }
    } catch (err) {
      if (controller.signal.aborted) {
        m.requests.inc({ endpoint, status: 499 }) // the client went away; nobody to answer
        return
      }
      const e = httpError(err, o)
      m.requests.inc({ endpoint, status: e.status })
      sendError(res, e)
    } finally {
      res.off('close', onClose)
    }
  }

  async function embeddings(req, res, body) {
    const { request, format } = embeddingsRequest(body)
    const controller = new AbortController()
    const onClose = () => {
      if (!res.writableFinished) controller.abort(new Error('the client disconnected'))
    }
    res.on('close', onClose)
    try {
      const { embeddings: vectors, usage } = await engine.embed(request, { signal: controller.signal, timeoutMs: o.timeoutMs })
      const data = vectors.map((v, index) => ({
        object: 'embedding',
        index,
        // base64: the little-endian f32 bytes, as OpenAI sends them.
        embedding: format === 'base64' ? Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') : Array.from(v),
      }))
      sendJson(res, 200, { object: 'list', data, model: request.model, usage: { prompt_tokens: usage.promptTokens, total_tokens: usage.promptTokens } })
      m.requests.inc({ endpoint: 'embeddings', status: 200 })
    } catch (err) {
      if (controller.signal.aborted) {
        m.requests.inc({ endpoint: 'embeddings', status: 499 })
        return
      }
      const e = httpError(err, o)
      if (e.code === 'context_length_exceeded') e.param = 'input'
      m.requests.inc({ endpoint: 'embeddings', status: e.status })
      sendError(res, e)
    } finally {
      res.off('close', onClose)
    }
  }

  function health(res) {
    const models = engine.stats().models
    const problems = models.filter((x) => x.state !== 'ready' || (x.activeRequests > 0 && x.lastHeartbeatMsAgo > o.hangThresholdMs))
    const status = problems.length === 0 && models.length > 0 ? 200 : 503
    sendJson(res, status, {
      status: status === 200 ? 'ok' : 'unavailable',
      models: models.map((x) => ({ id: x.id, state: x.state, activeRequests: x.activeRequests, queuedRequests: x.queuedRequests, lastHeartbeatMsAgo: x.lastHeartbeatMsAgo })),
    })
  }

  return async function handle(req, res) {
    const url = new URL(req.url, 'http://localhost')
    const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`
    try {
      if (url.pathname.startsWith('/v1/') && o.apiKey !== undefined && req.headers.authorization !== `Bearer ${o.apiKey}`) {
        throw new HttpError(401, 'missing or wrong API key (Authorization: Bearer ...)', { code: 'invalid_api_key' })
      }
      switch (route) {
        case 'GET /health':
          return health(res)
        case 'GET /metrics': {
          const text = await m.registry.metrics()
          res.writeHead(200, { 'content-type': m.registry.contentType })
          return res.end(text)
        }
        case 'GET /v1/models':
          return sendJson(res, 200, {
            object: 'list',
            data: engine
              .stats()
              .models.filter((x) => x.state === 'ready')
              .map((x) => ({ id: x.id, object: 'model', created: 0, owned_by: 'mlx-serving' })),
          })
        case 'POST /v1/chat/completions': {
          const body = await readJson(req, o.bodyLimitBytes)
          return await generate(req, res, 'chat', body, chatRequest(body))
        }
        case 'POST /v1/completions': {
          const body = await readJson(req, o.bodyLimitBytes)
          return await generate(req, res, 'completion', body, completionRequest(body))
        }
        case 'POST /v1/embeddings': {
          const body = await readJson(req, o.bodyLimitBytes)
          return await embeddings(req, res, body)
        }
        default: {
          const known = ['/health', '/metrics', '/v1/models', '/v1/chat/completions', '/v1/completions', '/v1/embeddings']
          if (known.includes(url.pathname.replace(/\/+$/, ''))) throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`, { code: 'method_not_allowed' })
          throw new HttpError(404, `no route ${req.method} ${url.pathname}`, { code: 'not_found' })
        }
      }
    } catch (err) {
      const e = httpError(err, o)
      m.requests.inc({ endpoint: url.pathname, status: e.status })
      sendError(res, e)
    }
  }
}

/**
 * An HTTP server for `engine`, bound to 127.0.0.1 unless `host` says otherwise.
 * `listen()` resolves with `{ url, port }`; `close()` stops accepting, ends
 * open connections and resolves (the engine stays yours to shut down).
 */
function createServer(engine, options = {}) {
  Engine.assertEngine(engine, 'createServer')
  const o = { ...DEFAULTS, ...options }
  const server = http.createServer(createHandler(engine, o))
  return {
    server,
    listen() {
      return new Promise((resolve, reject) => {
        server.once('error', reject)
        server.listen(o.port, o.host, () => {
          server.off('error', reject)
          const { port } = server.address()
          const host = o.host.includes(':') ? `[${o.host}]` : o.host
          resolve({ url: `http://${host}:${port}`, port })
        })
      })
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
    },
  }
}

module.exports = { createServer, createHandler }
