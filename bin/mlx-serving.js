#!/usr/bin/env node
'use strict'
// The command line: `mlx-serving run | serve | embed | info`. See `mlx-serving --help`.

const path = require('node:path')
const readline = require('node:readline')
const { Command, InvalidArgumentError } = require('commander')
const cliProgress = require('cli-progress')
// The addon loads on first use, so `--help` works anywhere.
const lib = () => require('../lib/index.js')
const { version } = require('../package.json')

const positiveInt = (name) => (value) => {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive integer`)
  return n
}
const number = (name) => (value) => {
  const n = Number(value)
  if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`)
  return n
}

/** `id=path`, or a bare path whose file or directory name (without extension) becomes the id. */
function modelSpec(value, previous = []) {
  const eq = value.indexOf('=')
  const spec = eq > 0 ? { id: value.slice(0, eq), path: value.slice(eq + 1) } : { id: path.basename(value.replace(/\/+$/, '')).replace(/\.gguf$/i, ''), path: value }
  return [...previous, spec]
}

/** Loads a model with a progress bar on stderr (when it is a terminal). */
async function load(engine, spec) {
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar({ format: `loading ${spec.id} [{bar}] {percentage}% {value}/{total} MiB`, hideCursor: true, stream: process.stderr }, cliProgress.Presets.shades_classic)
    : undefined
  let started = false
  const info = await engine.loadModel({
    ...spec,
    onProgress: ({ bytesRead, totalBytes }) => {
      if (!bar) return
      const mib = (b) => Math.round(b / 2 ** 20)
      if (!started) {
        started = true
        bar.start(mib(totalBytes), 0)
      }
      bar.update(mib(bytesRead))
    },
  })
  bar?.stop()
  return info
}

function fail(err) {
  const code = typeof err.code === 'string' && !err.code.startsWith('commander.') ? `${err.code}: ` : ''
  process.stderr.write(`mlx-serving: ${code}${err.message}\n`)
  process.exitCode = 1
}

/**
 * Streams one answer to stdout and returns its text. `controller` stops it
 * (Ctrl-C): the answer ends, the program goes on.
 */
async function answer(engine, request, controller, options) {
  let text = ''
  try {
    let last
    for await (const chunk of engine.generate(request, { signal: controller.signal })) {
      if (chunk.done) last = chunk
      else {
        process.stdout.write(chunk.text)
        text += chunk.text
      }
    }
    process.stdout.write('\n')
    if (options.stats) {
      const t = last.timings
      process.stderr.write(`[${last.usage.completionTokens} tokens, ${t.tokensPerSecond.toFixed(1)} tok/s, first token ${t.ttftMs.toFixed(0)} ms, prompt ${last.usage.promptTokens} tokens, ${last.finishReason}]\n`)
    }
  } catch (err) {
    process.stdout.write('\n')
    if (err.code !== 'ABORTED') throw err
    process.stderr.write('[stopped]\n')
  }
  return text
}

async function run(modelPath, promptWords, options) {
  const engine = await lib().Engine.create()
  try {
    const [spec] = modelSpec(modelPath)
    await load(engine, spec)
    const sampling = { maxTokens: options.maxTokens, temperature: options.temperature }
    const prompt = promptWords.join(' ')
    const history = options.system ? [{ role: 'system', content: options.system }] : []
    if (prompt) {
      const controller = new AbortController()
      const stop = () => controller.abort(new Error('stopped'))
      process.once('SIGINT', stop)
      try {
        await answer(engine, { model: spec.id, messages: [...history, { role: 'user', content: prompt }], ...sampling }, controller, options)
      } finally {
        process.off('SIGINT', stop)
      }
      return
    }
    // Interactive chat, history kept. Ctrl-C stops the answer being written
    // (or, at the prompt, quits); Ctrl-D or /exit quits.
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY })
    let current
    let closed = false
    const ask = () => new Promise((resolve) => (closed ? resolve(null) : rl.question('> ', resolve)))
    rl.on('close', () => (closed = true))
    // A terminal's Ctrl-C reaches readline; a signal sent to the process (or Ctrl-C without a terminal) the process.
    const interrupt = () => (current ? current.abort(new Error('stopped')) : rl.close())
    rl.on('SIGINT', interrupt)
    process.on('SIGINT', interrupt)
    process.stderr.write(`chatting with ${spec.id}; Ctrl-C stops an answer, Ctrl-D or /exit quits\n`)
    for (;;) {
      const line = await Promise.race([ask(), new Promise((resolve) => rl.once('close', () => resolve(null)))])
      if (line === null || line.trim() === '/exit') break
      if (!line.trim()) continue
      history.push({ role: 'user', content: line })
      current = new AbortController()
      try {
        history.push({ role: 'assistant', content: await answer(engine, { model: spec.id, messages: history, ...sampling }, current, options) })
      } finally {
        current = undefined
      }
    }
    rl.close()
    process.off('SIGINT', interrupt)
  } finally {
    await engine.shutdown()
  }
}

async function serve(options) {
  if (!options.model || options.model.length === 0) throw new InvalidArgumentError('serve needs at least one --model id=path')
  const engine = await lib().Engine.create({ maxBatchSize: options.maxBatchSize })
  for (const spec of options.model) await load(engine, spec)
  const server = require('../lib/server.js').createServer(engine, { host: options.host, port: options.port, apiKey: options.apiKey ?? process.env.MLX_SERVING_API_KEY })
  const { url } = await server.listen()
  process.stderr.write(`serving ${options.model.map((m) => m.id).join(', ')} at ${url}/v1 (Ctrl-C stops)\n`)
  console.log(JSON.stringify({ url }))
  const stop = async () => {
    process.stderr.write('shutting down\n')
    await server.close()
    await engine.shutdown({ drainTimeoutMs: 10_000 })
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

/** Lines of standard input, without empty ones. */
async function stdinLines() {
  const lines = []
  for await (const line of readline.createInterface({ input: process.stdin })) if (line.trim()) lines.push(line)
  return lines
}

function cosine(a, b) {
  let dot = 0
  let na = 0
  let nb = 0
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i]
    na += a[i] * a[i]
    nb += b[i] * b[i]
  }
  return dot / Math.sqrt(na * nb)
}

async function embed(modelPath, texts, options) {
  if (texts.length === 0 && !process.stdin.isTTY) texts = await stdinLines()
  if (texts.length === 0) throw new InvalidArgumentError('embed needs texts: as arguments, or one per line on standard input')
  const engine = await lib().Engine.create()
  try {
    const [spec] = modelSpec(modelPath)
    await load(engine, spec)
    const request = { model: spec.id, input: texts }
    if (options.prompt) request.prompt = options.prompt
    if (options.dimensions) request.dimensions = options.dimensions
    if (options.normalize === false) request.normalize = false
    const started = performance.now()
    const { embeddings, usage } = await engine.embed(request)
    const ms = performance.now() - started
    if (options.query !== undefined) {
      // Rank the texts by cosine similarity to the query (embedded with --query-prompt).
      const q = { model: spec.id, input: options.query }
      if (options.queryPrompt) q.prompt = options.queryPrompt
      if (options.dimensions) q.dimensions = options.dimensions
      const [query] = (await engine.embed(q)).embeddings
      const ranked = texts.map((text, i) => ({ text, score: cosine(query, embeddings[i]) })).sort((a, b) => b.score - a.score)
      for (const r of ranked) console.log(`${r.score.toFixed(4)}  ${r.text}`)
    } else {
      texts.forEach((text, index) => console.log(JSON.stringify({ index, text, embedding: Array.from(embeddings[index]) })))
    }
    if (options.stats) process.stderr.write(`[${texts.length} texts, ${usage.promptTokens} tokens, ${embeddings[0].length} dimensions, ${ms.toFixed(0)} ms]\n`)
  } finally {
    await engine.shutdown()
  }
}

async function info(modelPath) {
  const engine = await lib().Engine.create()
  try {
    const [spec] = modelSpec(modelPath)
    const i = await load(engine, spec)
    const rows = {
      kind: i.kind,
      ...(i.kind === 'embedding' ? { dimensions: i.dimensions, 'max tokens': i.maxTokens, pooling: i.pooling, prompts: (i.prompts ?? []).map((p) => p.name).join(', ') || 'none' } : {}),
      architecture: i.architecture,
      parameters: i.parameters.toLocaleString('en'),
      'context length': i.contextLength,
      vocabulary: i.vocabSize,
      layers: i.layers,
      'hidden size': i.hiddenSize,
      'attention heads': `${i.heads} (${i.kvHeads} for keys/values)`,
      'tensor types': i.tensorTypes.join(', '),
      'weights in memory': i.weightFormat,
      'load time': `${i.loadMs.toFixed(0)} ms`,
    }
    for (const [k, v] of Object.entries(rows)) console.log(`${k.padEnd(18)} ${v}`)
    if (i.kind === 'embedding') return
    let template = null
    try {
      template = engine.applyChatTemplate(spec.id, [
        { role: 'system', content: 'SYSTEM' },
        { role: 'user', content: 'USER' },
      ])
    } catch {}
    console.log(`${'chat template'.padEnd(18)} ${i.hasChatTemplate ? 'yes; renders as:' : 'none'}`)
    if (template) console.log(template.replace(/^/gm, '  '))
  } finally {
    await engine.shutdown()
  }
}

const program = new Command()
  .name('mlx-serving')
  .description('Local LLM inference on MLX: chat with a model, serve an OpenAI-compatible API, embed texts, inspect a model file.')
  .version(version)

program
  .command('run')
  .description('stream an answer to a prompt; without a prompt, chat interactively (history kept)')
  .argument('<model>', 'model file (GGUF)')
  .argument('[prompt...]', 'the prompt; omit to chat')
  .option('-n, --max-tokens <n>', 'tokens to generate at most', positiveInt('--max-tokens'), 512)
  .option('-t, --temperature <t>', 'sampling temperature (0 = greedy)', number('--temperature'), 0.7)
  .option('-s, --system <text>', 'a system prompt')
  .option('--no-stats', 'do not print tokens/s after each answer')
  .action((model, prompt, options) => run(model, prompt, options).catch(fail))

program
  .command('serve')
  .description('serve an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /health, /metrics)')
  .option('-m, --model <id=path>', 'a model to load, as id=path (repeatable)', modelSpec)
  .option('-p, --port <port>', 'port (0 picks a free one)', (v) => Number(v), 8080)
  .option('-H, --host <host>', 'address to bind (127.0.0.1 keeps it local)', '127.0.0.1')
  .option('--api-key <key>', 'require "Authorization: Bearer <key>" (or set MLX_SERVING_API_KEY)')
  .option('--max-batch-size <n>', 'requests decoded together per model', positiveInt('--max-batch-size'), 8)
  .action((options) => serve(options).catch(fail))

program
  .command('embed')
  .description('embed texts with an embedding model (a sentence-transformers directory): one JSON line per text, or with --query the texts ranked by similarity')
  .argument('<model>', 'model directory (sentence-transformers)')
  .argument('[texts...]', 'the texts; without any, one per line of standard input')
  .option('-p, --prompt <name>', "one of the model's named prompts for the texts (e.g. document)")
  .option('-q, --query <text>', 'rank the texts by cosine similarity to this query instead of printing vectors')
  .option('--query-prompt <name>', "the model's named prompt for the query (e.g. query)")
  .option('-d, --dimensions <n>', 'keep the first n dimensions (Matryoshka)', positiveInt('--dimensions'))
  .option('--no-normalize', 'do not L2-normalize the vectors')
  .option('--stats', 'print texts, tokens and time on stderr')
  .action((model, texts, options) => embed(model, texts, options).catch(fail))

program
  .command('info')
  .description('load a model and print its architecture, quantization, context and chat template')
  .argument('<model>', 'model file (GGUF)')
  .action((model) => info(model).catch(fail))

program.parseAsync(process.argv).catch(fail)
