#!/usr/bin/env node
// The randomized scheduler property: requests that share batches get the
// answers they get alone, and none fails because of a batch mate.
//
// Each case draws 2-8 requests (the engine batches 6, so some wait and join
// as others leave): chat or raw prompts of a few to ~400 tokens (past the
// 256 tokens that a prompt is interleaved with running streams from),
// greedy or seeded sampling (some with a repetition penalty), some with
// constrained output (a JSON schema, JSON object or regex) or tools (a
// required call, or the model's choice: rows that may start a grammar mid-way,
// masked and not), each ending
// one way: its end-of-turn token, `maxTokens`, a stop string, an abort, a
// timeout, `break` or `throw()` after a few tokens. Every request first runs
// alone; then all of them run together, each starting at once, after a
// short delay, or once an earlier one has delivered a number of tokens, so
// rows join and leave a running batch at every position. Then:
// - a request that ends by itself (end-of-turn, maxTokens, stop string) has
//   the same token ids, text and finish reason as alone;
// - one stopped by its caller (abort, timeout, break, throw) has delivered a
//   prefix of its lone answer and ends the way it was stopped (or, if its
//   lone answer ended first, exactly as alone);
// - nothing else ends a request, and each ends once.
//
//   node __test__/scheduler/property.mjs --mode default --cases 10 [--seed N] [--json]
//
// The seed (random unless given) is printed; a failure names its case's seed,
// which replays that case alone with `--case-seed`.
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { MODES } from './modes.mjs'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true'])
    return pairs
  }, []),
)
const modeName = args.mode ?? 'default'
const mode = MODES[modeName]
if (!mode) {
  console.error(`unknown mode ${modeName} (known: ${Object.keys(MODES).join(', ')})`)
  process.exit(2)
}
// Batched and lone rows must take the same kernels: f32, and on a GPU every
// product on the quantized kernel (as __test__/batching.spec.ts explains).
process.env.MLX_SERVING_DTYPE ??= 'f32'
process.env.MLX_SERVING_CUDA_DEQUANTIZE_ROWS ??= String(2 ** 30)
Object.assign(process.env, mode.env)

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const require = createRequire(import.meta.url)
const { Engine } = require(path.join(root, 'lib', 'index.js'))
const MODEL_PATH = path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
const MODEL = 'smollm2'
const MAX_BATCH = 6

/** mulberry32: a small seeded generator, enough to draw cases from. */
function rng(seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)],
    chance: (p) => next() < p,
  }
}

const QUESTIONS = [
  'What is the capital of Italy?',
  'Tell me fact number 7 about the sea.',
  'Tell me fact number 8 about the sea.',
  'Name a fruit that is yellow.',
  'Write one sentence about dogs.',
  'What is 3 times 4?',
  'Say hello in German.',
  'Give me a word that rhymes with cat.',
  'Who wrote Romeo and Juliet?',
  'List three colors.',
  'Why do cats purr?',
  'Write a haiku about rivers.',
]
const TEXTS = ['The capital of France is', 'Once upon a time', 'Count: one, two, three,', 'def fibonacci(n):', 'The alphabet: A, B, C,']
const STOPS = ['.', ',', ' the', '\n', 'e', ' is']
const FORMATS = [
  { type: 'json_schema', schema: { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer', minimum: 0, maximum: 99 } }, required: ['name', 'age'] } },
  { type: 'json_schema', schema: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 4 } },
  { type: 'json_object' },
  { type: 'regex', pattern: '[A-Z][a-z]{2,8}( [a-z]{2,8}){0,6}\\.' },
]
const TOOLS = [
  { name: 'get_weather', description: 'The weather in a city', parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 20 } }, required: ['city'] } },
  { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } },
]
const PARAGRAPH =
  'Rivers carry water from the mountains to the sea, shaping valleys, feeding farms and giving homes to fish, birds and people. '

function drawPrompt(r) {
  const kind = r.next()
  if (kind < 0.6) return { messages: [{ role: 'user', content: r.pick(QUESTIONS) }] }
  if (kind < 0.9) return { prompt: r.pick(TEXTS) }
  // ~250-450 tokens: longer than one interleaved chunk.
  return { messages: [{ role: 'user', content: PARAGRAPH.repeat(r.int(10, 18)) + 'Summarize this in one sentence.' }] }
}

function drawRequest(r, index) {
  const request = { model: MODEL, ...drawPrompt(r), maxTokens: r.int(24, 48) }
  if (r.chance(0.35)) {
    request.temperature = r.pick([0.6, 0.8, 1.0])
    request.seed = r.int(0, 1e6)
    if (r.chance(0.5)) request.topK = r.pick([20, 40])
    if (r.chance(0.5)) request.topP = r.pick([0.9, 0.95])
  } else if (r.chance(0.1)) {
    request.repetitionPenalty = 1.1
  }
  const rules = r.next()
  if (rules < 0.2) request.responseFormat = r.pick(FORMATS)
  else if (rules < 0.3) Object.assign(request, { tools: TOOLS, toolChoice: r.pick(['auto', 'required', { name: 'add' }]) })
  const ending = r.pick(['natural', 'natural', 'length', 'stop', 'abort', 'timeout', 'break', 'throw'])
  const plan = { ending, after: r.int(1, 12) }
  if (ending === 'length') request.maxTokens = r.int(1, 16)
  if (ending === 'stop') request.stop = [r.pick(STOPS)]
  if (ending === 'timeout') plan.timeoutMs = r.int(20, 1500)
  // When it starts: at once, after a short delay, or once an earlier request
  // has delivered some tokens (a row joining a running batch).
  const start = index === 0 ? { at: 'now' } : r.pick([{ at: 'now' }, { at: 'delay', ms: r.int(0, 40) }, { at: 'tokens', of: r.int(0, index - 1), count: r.int(1, 10) }])
  return { request, plan, start }
}

export function drawCase(seed) {
  const r = rng(seed)
  const n = r.int(2, 8)
  return Array.from({ length: n }, (_, i) => drawRequest(r, i))
}

/**
 * Runs one request to its end as `plan` says, calling `onChunk(count)` after
 * each token chunk. Returns what was delivered and how it ended.
 */
async function run(engine, { request, plan }, onChunk = () => {}) {
  const controller = plan.ending === 'abort' ? new AbortController() : undefined
  const options = {}
  if (controller) options.signal = controller.signal
  if (plan.timeoutMs !== undefined) options.timeoutMs = plan.timeoutMs
  const stream = engine.generate(request, options)
  const out = { ids: [], text: '', chunks: 0, final: undefined, error: undefined, ends: 0, stoppedByCaller: false }
  const thrown = new Error('stopped by the caller')
  try {
    for await (const chunk of stream) {
      if (out.final) throw new Error('a chunk after the final chunk')
      if (chunk.done) {
        out.final = chunk
        out.ends++
        continue
      }
      out.ids.push(...chunk.tokenIds)
      out.text += chunk.text
      out.chunks++
      onChunk(out.chunks)
      if (out.chunks === plan.after) {
        if (plan.ending === 'abort') controller.abort()
        if (plan.ending === 'break') {
          out.stoppedByCaller = true
          break
        }
        if (plan.ending === 'throw') {
          out.stoppedByCaller = true
          await stream.throw(thrown)
        }
      }
    }
  } catch (e) {
    if (e !== thrown) {
      out.error = { code: e.code, message: e.message }
      out.ends++
    }
  }
  // After the end the stream stays ended.
  const after = await stream.next()
  if (!after.done) out.error = { code: 'TEST', message: 'next() after the end gave a value' }
  return out
}

function startsWith(ids, prefix) {
  return prefix.length <= ids.length && prefix.every((id, i) => ids[i] === id)
}

/** What is wrong with `got` (batched) given `alone`, or undefined. */
function judge({ plan }, alone, got) {
  if (alone.error) return `alone it failed: ${alone.error.code} ${alone.error.message}`
  if (got.ends > 1) return 'ended twice'
  const same = () => {
    if (got.error) return `failed: ${got.error.code} ${got.error.message}`
    if (!got.final) return 'no final chunk'
    if (got.final.finishReason !== alone.final.finishReason) return `finishReason ${got.final.finishReason}, alone ${alone.final.finishReason}`
    if (!startsWith(got.ids, alone.ids) || got.ids.length !== alone.ids.length) return `tokens ${JSON.stringify(got.ids)}, alone ${JSON.stringify(alone.ids)}`
    if (got.text !== alone.text) return `text ${JSON.stringify(got.text)}, alone ${JSON.stringify(alone.text)}`
    // Tool calls (ids are random): the same names and arguments.
    const calls = (c) => JSON.stringify((c.final.toolCalls ?? []).map(({ name, arguments: a }) => [name, a]))
    if (calls(got) !== calls(alone)) return `tool calls ${calls(got)}, alone ${calls(alone)}`
    return undefined
  }
  const prefix = () => (startsWith(alone.ids, got.ids) ? undefined : `tokens ${JSON.stringify(got.ids)} are not a prefix of alone's ${JSON.stringify(alone.ids)}`)
  switch (plan.ending) {
    case 'natural':
    case 'length':
    case 'stop':
      return same()
    case 'break':
    case 'throw':
      if (alone.chunks < plan.after) return same()
      if (got.error) return `failed: ${got.error.code} ${got.error.message}`
      if (got.chunks !== plan.after) return `${got.chunks} chunks before ${plan.ending}, expected ${plan.after}`
      return prefix()
    case 'abort':
    case 'timeout': {
      const code = plan.ending === 'abort' ? 'ABORTED' : 'TIMEOUT'
      if (!got.error) return same()
      if (got.error.code !== code) return `failed: ${got.error.code} ${got.error.message}`
      if (plan.ending === 'abort' && got.chunks < plan.after) return `aborted after ${got.chunks} chunks, expected at least ${plan.after}`
      return prefix()
    }
  }
  return `unknown ending ${plan.ending}`
}

/** Runs the requests together, each starting as drawn. */
async function together(engine, items) {
  const counts = items.map(() => 0)
  const waiters = items.map(() => [])
  const ended = items.map(() => false)
  const notify = (i) => {
    for (const w of waiters[i].splice(0)) w()
  }
  const reached = (of, count) =>
    new Promise((resolve) => {
      const check = () => (ended[of] || counts[of] >= count ? resolve() : waiters[of].push(check))
      check()
    })
  return Promise.all(
    items.map(async (item, i) => {
      const { start } = item
      if (start.at === 'delay') await new Promise((r) => setTimeout(r, start.ms))
      if (start.at === 'tokens') await reached(start.of, start.count)
      try {
        return await run(engine, item, (count) => {
          counts[i] = count
          notify(i)
        })
      } finally {
        ended[i] = true
        notify(i)
      }
    }),
  )
}

function describeItem({ request, plan, start }) {
  const { model, messages, prompt, ...rest } = request
  const text = messages ? `chat(${messages[0].content.length} chars)` : JSON.stringify(prompt)
  return `${text} ${JSON.stringify(rest)} ending=${plan.ending}${plan.ending === 'natural' ? '' : ` after=${plan.after}`}${plan.timeoutMs ? ` timeoutMs=${plan.timeoutMs}` : ''} start=${JSON.stringify(start)}`
}

/** The seeds of `cases` cases drawn from `seed`. */
export function caseSeeds(seed, cases) {
  const master = rng(seed)
  return Array.from({ length: cases }, () => master.int(0, 2 ** 31 - 1))
}

export async function runCases({ engine, seeds, log = () => {} }) {
  const report = { mode: modeName, cases: 0, requests: 0, failures: [], endings: {} }
  for (const [c, caseSeed] of seeds.entries()) {
    const items = drawCase(caseSeed).map((item) => ({ ...item, request: { ...item.request, ...mode.request } }))
    const alone = []
    for (const item of items) alone.push(await run(engine, { ...item, plan: { ending: 'natural' } }))
    const got = await together(engine, items)
    report.cases++
    for (let i = 0; i < items.length; i++) {
      report.requests++
      const how = got[i].error ? got[i].error.code : got[i].stoppedByCaller ? items[i].plan.ending : got[i].final?.finishReason
      report.endings[how] = (report.endings[how] ?? 0) + 1
      const wrong = judge(items[i], alone[i], got[i])
      if (wrong) report.failures.push({ caseSeed, request: i, what: describeItem(items[i]), wrong })
    }
    log(`case ${c + 1}/${seeds.length} (case seed ${caseSeed}): ${items.length} requests, ${report.failures.length} failures so far`)
  }
  return report
}

async function main() {
  const seed = args.seed !== undefined ? Number(args.seed) : Math.floor(Math.random() * 2 ** 31)
  const engine = await Engine.create({ maxBatchSize: MAX_BATCH, ...mode.engine })
  await engine.loadModel({ id: MODEL, path: MODEL_PATH })
  const log = args.json ? () => {} : (line) => console.error(`[${modeName}] ${line}`)
  log(`seed ${seed}`)
  // `--case-seed` replays one case.
  const seeds = args['case-seed'] !== undefined ? [Number(args['case-seed'])] : caseSeeds(seed, Number(args.cases ?? 10))
  const report = { seed, ...(await runCases({ engine, seeds, log })) }
  // Every request has left the worker.
  const stats = engine.stats().models[0]
  report.activeAfter = stats.activeRequests + stats.queuedRequests
  await engine.shutdown()
  if (args.json) console.log(JSON.stringify(report))
  else console.log(JSON.stringify(report, null, 2))
  process.exitCode = report.failures.length || report.activeAfter ? 1 : 0
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}
