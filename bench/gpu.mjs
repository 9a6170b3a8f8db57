// The GPU benchmark (scripts/gpu.sh runs it): this engine; mlx-lm when a
// Python with mlx-lm and MLX's CUDA runtime is given; node-llama-cpp's CUDA
// build for GGUF models when BENCH_LLAMA_GPU=cuda; same weights and token ids. Unlike bench/run.mjs it needs no Rust and no network, so it runs
// on a GPU machine that only received the built addon.
//
//   node bench/gpu.mjs MODEL[=MLX_DIR] ...     # MLX_DIR: the same weights for mlx-lm
//   MLX_LM_PYTHON=/path/to/python node bench/gpu.mjs ...
//
// Workload: single-stream decode (128 tokens), first token at 32/512/4096-token
// prompts (from bench/prompt.md), aggregate tokens/s at 1/8/32/64 streams (64
// tokens each), peak MLX memory (device memory on a GPU). Results go to
// bench/results/<device>-<date>-<build>-bench.{json,md} (scripts/result_name.sh).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { build, resultPath } from './engines/common.mjs'

const require = createRequire(import.meta.url)
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const bench = path.join(root, 'bench')
const log = (...a) => console.error('[bench:gpu]', ...a)
const python = process.env.MLX_LM_PYTHON
const streams = (process.env.BENCH_STREAMS ?? '1,8,32,64').split(',').map(Number)
const repeats = Number(process.env.BENCH_REPEATS ?? 3)
const { Engine } = require('../lib/index.js')

function child(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26 })
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
  const error = (r.stderr || r.stdout || `exit ${r.status ?? r.signal}`).trim().split('\n').slice(-3).join(' ')
  if (!line) return { error }
  // A child that died part-way keeps what it printed before (its last JSON line).
  return r.status === 0 ? JSON.parse(line) : { ...JSON.parse(line), failed: `exit ${r.status ?? r.signal}: ${error}` }
}

const runs = []
let device
for (const spec of process.argv.slice(2)) {
  const [model, mlxModel] = spec.split('=')
  const engine = await Engine.create()
  await engine.loadModel({ id: 'm', path: model })
  device = engine.stats().device
  const tok = (t) => engine.tokenize('m', t)
  const text = tok(fs.readFileSync(path.join(bench, 'prompt.md'), 'utf8'))
  const workload = {
    model,
    decodePrompt: tok('1, 2, 3, 4, 5, 6, 7, 8, 9, 10,'),
    decodeTokens: 128,
    ttftPrompts: { 32: text.slice(0, 32), 512: text.slice(0, 512), 4096: text.slice(0, 4096) },
    streamPrefixes: Array.from({ length: 16 }, (_, i) => tok(`Sequence ${i + 1}: `)),
    streamTokens: 64,
    streams,
    repeats,
  }
  await engine.shutdown()
  log(`${path.basename(model)}: mlx-serving`)
  const ours = child(process.execPath, [path.join(bench, 'engines', 'ours.mjs'), JSON.stringify(workload)])
  let mlxlm = { error: 'not run (no MLX_LM_PYTHON or no MLX directory)' }
  if (python && mlxModel) {
    log(`${path.basename(model)}: mlx-lm on ${mlxModel}`)
    mlxlm = child(python, [path.join(bench, 'engines', 'mlx_lm_bench.py'), JSON.stringify({ ...workload, mlxModel })])
  }
  let llamacpp = { error: 'not run (not a GGUF, or BENCH_LLAMA_GPU unset)' }
  if (process.env.BENCH_LLAMA_GPU && model.endsWith('.gguf')) {
    log(`${path.basename(model)}: node-llama-cpp (${process.env.BENCH_LLAMA_GPU})`)
    llamacpp = child(process.execPath, [path.join(bench, 'engines', 'llamacpp.mjs'), JSON.stringify(workload)])
  }
  runs.push({ model: path.basename(model), mlxModel: mlxModel && path.basename(mlxModel), ours, mlxlm, llamacpp })
}

const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : 'n/a')
const ratio = (a, b) => (a && b ? (a / b).toFixed(2) + 'x' : 'n/a')
const measured = build(root)
let md = `Build ${measured}, \`node bench/gpu.mjs\`, ${new Date().toISOString().slice(0, 10)}. Device: ${device?.backend} (${device?.name}); ${os.cpus()[0]?.model}, ${os.availableParallelism()} cores; Node ${process.version}. Greedy, medians of ${repeats}.\n`
for (const r of runs) {
  md += `\n### ${r.model}${r.mlxModel ? ` (mlx-lm: ${r.mlxModel})` : ''}\n\n| | mlx-serving | mlx-lm | llama.cpp | vs mlx-lm | vs llama.cpp |\n| --- | ---: | ---: | ---: | ---: | ---: |\n`
  const row = (label, get, d = 1) => {
    const [a, b, c] = [r.ours, r.mlxlm, r.llamacpp].map((x) => (x.error ? undefined : get(x)))
    const lowerIsBetter = label.includes('(ms)') || label.includes('MiB')
    const vs = (other) => (lowerIsBetter ? ratio(other, a) : ratio(a, other))
    md += `| ${label} | ${f(a, d)} | ${f(b, d)} | ${f(c, d)} | ${vs(b)} | ${vs(c)} |\n`
  }
  row('single-stream decode (tok/s)', (x) => x.decodeTps)
  for (const n of Object.keys(r.ours.ttftMs ?? { 32: 0, 512: 0, 4096: 0 })) row(`first token, ${n}-token prompt (ms)`, (x) => x.ttftMs?.[n], 0)
  for (const n of streams) row(`aggregate, ${n} stream${n > 1 ? 's' : ''} (tok/s)`, (x) => x.aggregateTps?.[n])
  row('peak MLX memory (MiB)', (x) => x.peakMlxMiB, 0)
  for (const [name, x] of [['mlx-serving', r.ours], ['mlx-lm', r.mlxlm], ['llama.cpp', r.llamacpp]]) {
    if (x.error) md += `\n${name}: ${x.error}\n`
    if (x.failed) md += `\n${name} stopped part-way (n/a after that): ${x.failed}\n`
  }
}
md += '\nRatios: mlx-serving over the other (for times and memory, the other over mlx-serving): above 1 is better for mlx-serving. llama.cpp peak memory is not read (n/a).\n'
fs.mkdirSync(path.join(bench, 'results'), { recursive: true })
const out = resultPath(root, 'bench', device)
fs.writeFileSync(`${out}.json`, JSON.stringify({ device, build: measured, runs }, null, 2))
fs.writeFileSync(`${out}.md`, md)
console.log(md)
