// Constrained decoding's price: decode tok/s with a JSON schema against free
// text, at 1 and 8 streams, on this engine (rounds alternated in one process,
// so that drift in a shared machine's speed hits both alike), the mean mask
// time per token, and node-llama-cpp's JSON-schema grammar on the same model,
// prompt and schema (its own child process, also alternated).
//
//   node bench/structured.mjs            # prints markdown, then the JSON on its last line
//   BENCH_ROUNDS=5 node bench/structured.mjs
//
// Every request generates exactly TOKENS tokens (greedy): the schema asks for
// more than that, so a constrained answer never ends early.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { median, resultPath } from './engines/common.mjs'

const require = createRequire(import.meta.url)
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const model = process.env.MLX_SERVING_MODEL ?? path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
const log = (...a) => console.error('[bench:structured]', ...a)

export const TOKENS = 64
export const STREAMS = [1, 8]
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)

/** A list of 40-60 cities: always longer than TOKENS tokens. */
export const SCHEMA = {
  type: 'object',
  properties: {
    cities: {
      type: 'array',
      minItems: 40,
      maxItems: 60,
      items: {
        type: 'object',
        properties: { name: { type: 'string', maxLength: 24 }, country: { type: 'string', maxLength: 24 }, population: { type: 'integer' } },
        required: ['name', 'country', 'population'],
      },
    },
  },
  required: ['cities'],
}
// The same raw prompt for both, different per stream: free text continues a
// count (it never ends by itself); with the schema it is a list of cities.
const prompt = (i) => `Sequence ${i + 1}: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,`

/** Runs n requests at once; the decode rate over the time all of them were decoding. */
async function measure(engine, n, constrained) {
  const started = performance.now()
  const runs = Array.from({ length: n }, async (_, i) => {
    const request = { model: 'm', prompt: prompt(i), maxTokens: TOKENS }
    if (constrained) request.responseFormat = { type: 'json_schema', schema: SCHEMA }
    let first
    let tokens = 0
    for await (const chunk of engine.generate(request)) {
      if (chunk.done) {
        if (chunk.finishReason !== 'length') throw new Error(`a request ended early (${chunk.finishReason})`)
        break
      }
      first ??= performance.now()
      tokens += chunk.tokenIds.length
    }
    return { first, end: performance.now(), tokens }
  })
  const done = await Promise.all(runs)
  const from = Math.max(...done.map((d) => d.first))
  const to = Math.max(...done.map((d) => d.end))
  // Tokens after the last stream's first one, over the time since then.
  const tokens = done.reduce((a, d) => a + d.tokens, 0) - done.length
  return { tps: tokens / ((to - from) / 1000), wallMs: to - started }
}

async function ours() {
  const { Engine } = require('../lib/index.js')
  const engine = await Engine.create({ maxBatchSize: 8 })
  await engine.loadModel({ id: 'm', path: model })
  const masks = () => engine.stats().models[0].constraintMasks
  await measure(engine, 1, false)
  await measure(engine, 1, true)
  const tps = Object.fromEntries(STREAMS.map((n) => [n, { free: [], schema: [] }]))
  let maskTime = { masks: 0, totalMs: 0 }
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first, round by round.
    const order = r % 2 ? ['schema', 'free'] : ['free', 'schema']
    for (const n of STREAMS) {
      for (const kind of order) {
        const before = masks()
        const { tps: t } = await measure(engine, n, kind === 'schema')
        tps[n][kind].push(t)
        const after = masks()
        maskTime = { masks: maskTime.masks + after.masks - before.masks, totalMs: maskTime.totalMs + after.totalMs - before.totalMs }
        log(`round ${r + 1}/${rounds}, ${n} stream(s), ${kind}: ${t.toFixed(1)} tok/s`)
      }
    }
  }
  await engine.shutdown()
  return {
    tps: Object.fromEntries(Object.entries(tps).map(([n, v]) => [n, { free: median(v.free), schema: median(v.schema), rounds: v }])),
    maskMsPerToken: maskTime.totalMs / maskTime.masks,
    masks: maskTime.masks,
  }
}

function llamaCpp(promptIds) {
  const r = spawnSync(process.execPath, [path.join(root, 'bench', 'engines', 'llamacpp_grammar.mjs'), JSON.stringify({ model, promptIds, schema: SCHEMA, tokens: TOKENS, streams: STREAMS, rounds })], {
    cwd: root,
    encoding: 'utf8',
    maxBuffer: 1 << 26,
  })
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
  if (r.status !== 0 || !line) return { error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n').slice(-3).join(' ') }
  return JSON.parse(line)
}

export async function run() {
  log('mlx-serving: free text and JSON schema, alternated')
  const mine = await ours()
  // The same prompts as token ids (llama.cpp tokenizes SmolLM2 as we do,
  // __test__/fidelity.spec.ts).
  const { Engine } = require('../lib/index.js')
  const engine = await Engine.create()
  await engine.loadModel({ id: 'm', path: model })
  const promptIds = Array.from({ length: Math.max(...STREAMS) }, (_, i) => engine.tokenize('m', prompt(i)))
  await engine.shutdown()
  // BENCH_LLAMACPP=0 leaves node-llama-cpp out (to compare builds of this engine).
  log("node-llama-cpp: free text and its JSON-schema grammar, alternated")
  const theirs = process.env.BENCH_LLAMACPP === '0' ? { error: 'left out (BENCH_LLAMACPP=0)' } : llamaCpp(promptIds)
  return { tokens: TOKENS, rounds, ours: mine, llamacpp: theirs }
}

export function markdown(r) {
  const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : 'n/a')
  const pct = (a, b) => (a && b ? (a <= b ? `${(100 * (1 - a / b)).toFixed(1)}% slower` : `${(100 * (a / b - 1)).toFixed(1)}% faster`) : 'n/a')
  let md = `\n### Constrained decoding (JSON schema vs free text, ${r.tokens} tokens per stream, medians of ${r.rounds} alternated rounds)\n\n`
  md += '| | mlx-serving free | mlx-serving schema | | node-llama-cpp free | node-llama-cpp grammar | |\n| --- | ---: | ---: | --- | ---: | ---: | --- |\n'
  for (const n of STREAMS) {
    const o = r.ours.tps[n]
    const l = r.llamacpp.error ? {} : r.llamacpp.tps[n] ?? {}
    md += `| ${n} stream${n > 1 ? 's' : ''} (tok/s) | ${f(o.free)} | ${f(o.schema)} | ${pct(o.schema, o.free)} | ${f(l.free)} | ${f(l.grammar)} | ${pct(l.grammar, l.free)} |\n`
  }
  md += `\nMask time per token (mlx-serving, computed while the forward pass runs): ${f(r.ours.maskMsPerToken, 3)} ms over ${r.ours.masks} masks.`
  const o8 = r.ours.tps[8]?.schema
  const l8 = r.llamacpp.tps?.[8]?.grammar
  if (o8 && l8) md += ` With the schema at 8 streams: mlx-serving ${f(o8)} tok/s vs node-llama-cpp's grammar ${f(l8)} tok/s (${(o8 / l8).toFixed(2)}x).`
  if (r.llamacpp.error) md += `\nnode-llama-cpp failed: ${r.llamacpp.error}`
  return md + '\n'
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await run()
  const machine = {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model,
    cores: os.availableParallelism(),
    load: os.loadavg().map((l) => +l.toFixed(2)),
    node: process.version,
    model: path.basename(model),
    command: `BENCH_ROUNDS=${rounds} node bench/structured.mjs`,
  }
  const md = `${markdown(r)}\nMachine: ${machine.cpu}, ${machine.cores} cores, load average ${machine.load.join(' / ')} at the end (shared). Model ${machine.model}. \`${machine.command}\`, ${machine.date}.\n`
  // A standalone run keeps its results; `npm run bench` puts them in its own report.
  if (!process.env.BENCH_NO_SAVE) {
    const out = resultPath(root, 'structured', { backend: 'cpu' })
    fs.writeFileSync(`${out}.json`, JSON.stringify({ machine, ...r }, null, 2))
    fs.writeFileSync(`${out}.md`, md)
  }
  console.log(md)
  console.log(JSON.stringify(r))
}
