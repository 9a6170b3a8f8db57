// `npm run bench`: this engine through Node, node-llama-cpp and mlx-lm, side by
// side in one run on the same GGUF and token ids, plus the engine without Node
// (Rust bench) for the binding overhead, then the embedding benchmark
// (bench/embeddings.mjs), speculative decoding (bench/speculative.mjs). Writes bench/results/<device>-<date>-<build>-bench.{json,md}
// (scripts/result_name.sh).
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { build, median, resultPath } from './engines/common.mjs'
import { markdown as structuredMarkdown } from './structured.mjs'

const require = createRequire(import.meta.url)
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const bench = path.join(root, 'bench')
const work = path.join(bench, '.work')
const model = process.env.MLX_SERVING_MODEL ?? path.join(root, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf')
const log = (...a) => console.error('[bench]', ...a)
fs.mkdirSync(work, { recursive: true })

// --- the workload: the same token ids for every engine ---------------------
const { Engine } = require('../lib/index.js')
const engine = await Engine.create()
await engine.loadModel({ id: 'm', path: model })
const tok = (t) => engine.tokenize('m', t)
// A fixed text (bench/prompt.md), so that the prompts stay the same from run to run.
const longText = fs.readFileSync(path.join(bench, 'prompt.md'), 'utf8')
const workload = {
  model,
  decodePrompt: tok('1, 2, 3, 4, 5, 6, 7, 8, 9, 10,'),
  decodeTokens: 128,
  ttftPrompts: { 32: tok(longText).slice(0, 32), 512: tok(longText).slice(0, 512) },
  longPrompt: tok(longText).slice(0, 3000),
  // Conversation histories of 2000 tokens, one per repeat, none sharing a start.
  histories: [0, 1, 2, 3, 4].map((i) => tok(longText).slice(600 * i, 600 * i + 2000)),
  streamPrefixes: Array.from({ length: 16 }, (_, i) => tok(`Sequence ${i + 1}: `)),
  streamTokens: 96,
  streams: [1, 4, 8, 16],
  repeats: Number(process.env.BENCH_REPEATS ?? 3),
}
const decodeText = engine.detokenize('m', workload.decodePrompt)
const device = engine.stats().device
// BENCH_WORKLOAD_ONLY=path: write the workload there and stop (for running one engine's script alone).
if (process.env.BENCH_WORKLOAD_ONLY) {
  fs.writeFileSync(process.env.BENCH_WORKLOAD_ONLY, JSON.stringify(workload))
  await engine.shutdown()
  process.exit(0)
}
await engine.shutdown()

// --- mlx-lm: its own venv, our weights and tokenizer -----------------------
const host = execFileSync('rustc', ['-vV'], { encoding: 'utf8' }).match(/host: (\S+)/)[1]
const venv = path.join(bench, '.venv')
const python = path.join(venv, 'bin', 'python')
const mlxModel = path.join(work, 'smollm2-mlx')
function prepareMlxLm() {
  if (!fs.existsSync(python)) {
    log('installing mlx-lm[cpu]==0.32.2 into bench/.venv')
    execFileSync('python3', ['-m', 'venv', venv], { stdio: 'inherit' })
    execFileSync(python, ['-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'mlx-lm[cpu]==0.32.2', 'mlx[cpu]==0.32.2'], { stdio: 'inherit' })
  }
  if (!fs.existsSync(path.join(mlxModel, 'config.json'))) {
    log('converting the GGUF for mlx-lm (same weights, same tokenizer)')
    execFileSync('cargo', ['run', '--release', '--quiet', '--target', host, '--example', 'export_tokenizer', '--', model, mlxModel], { cwd: root, stdio: 'inherit' })
    execFileSync(python, [path.join(bench, 'convert_gguf.py'), model, mlxModel], { stdio: 'inherit' })
  }
}

// Each engine's result is kept in bench/.work/<name>.json as soon as it exists;
// BENCH_REUSE=name,name reuses those instead of measuring again.
const reuse = new Set((process.env.BENCH_REUSE ?? '').split(',').filter(Boolean))
function runChild(name, cmd, args, env = {}) {
  const saved = path.join(work, `${name}.json`)
  if (reuse.has(name) && fs.existsSync(saved)) return JSON.parse(fs.readFileSync(saved, 'utf8'))
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 1 << 26 })
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
  if (r.status !== 0 || !line) return { error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n').slice(-3).join(' ') }
  fs.writeFileSync(saved, line)
  return JSON.parse(line)
}

const results = {}
log('mlx-serving (Node)')
results.ours = runChild('ours', process.execPath, [path.join(bench, 'engines', 'ours.mjs'), JSON.stringify(workload)])
log('mlx-serving: conversation turn 2 with prefix reuse')
results.conversation = runChild('ours-conversation', process.execPath, [path.join(bench, 'engines', 'ours.mjs'), JSON.stringify(workload)], {
  BENCH_SCENARIO: 'conversation',
}).conversation
log('node-llama-cpp')
results.llamacpp = runChild('llamacpp', process.execPath, [path.join(bench, 'engines', 'llamacpp.mjs'), JSON.stringify(workload)])
// BENCH_SKIP=mlxlm,structured,embeddings,speculative leaves those parts out
// (on a CPU mlx-lm's runs take most of the bench's time).
const skipped = (part) => (process.env.BENCH_SKIP ?? '').split(',').includes(part)
if (skipped('mlxlm')) {
  results.mlxlm = { error: 'skipped (BENCH_SKIP)' }
} else {
  log('mlx-lm')
  try {
    prepareMlxLm()
    results.mlxlm = runChild('mlxlm', python, [path.join(bench, 'engines', 'mlx_lm_bench.py'), JSON.stringify({ ...workload, mlxModel })])
  } catch (e) {
    results.mlxlm = { error: String(e.message ?? e).split('\n')[0] }
  }
}
// Binding overhead: single-stream decode through Node and from Rust without
// Node, alternated round by round so that drift in the machine's speed (this
// kind of machine is shared) hits both alike; the ratio is of the medians.
const rounds = Number(process.env.BENCH_OVERHEAD_ROUNDS ?? 3)
const overhead = { node: [], rust: [] }
for (let i = 0; i < rounds; i++) {
  log(`binding overhead, round ${i + 1} of ${rounds}: Node, then Rust (cargo bench)`)
  const node = runChild(`overhead-node-${i}`, process.execPath, [path.join(bench, 'engines', 'ours.mjs'), JSON.stringify(workload)], { BENCH_DECODE_ONLY: '1' })
  const rust = runChild(`overhead-rust-${i}`, 'cargo', ['bench', '--quiet', '--target', host, '--bench', 'engine', '--', model, decodeText, String(workload.decodeTokens), String(workload.repeats)])
  for (const [k, r] of [['node', node], ['rust', rust]]) {
    if (r.error) overhead.error = `${k}: ${r.error}`
    else overhead[k].push(r.decodeTps)
  }
}
results.overhead = { ...overhead, nodeTps: median(overhead.node), rustTps: median(overhead.rust) }
// Constrained decoding: a JSON schema against free text, here and in node-llama-cpp.
if (!skipped('structured')) {
  log('constrained decoding (bench/structured.mjs)')
  results.structured = runChild('structured', process.execPath, [path.join(bench, 'structured.mjs')], { MLX_SERVING_MODEL: model, BENCH_NO_SAVE: '1' })
}

// --- report -----------------------------------------------------------------
const version = (cmd, args) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return 'n/a'
  }
}
const machine = {
  date: new Date().toISOString(),
  build: build(root),
  device: device.name,
  cpu: os.cpus()[0]?.model,
  cores: os.availableParallelism(),
  memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
  os: `${os.type()} ${os.release()}`,
  node: process.version,
  mlxServing: require('../package.json').version,
  nodeLlamaCpp: JSON.parse(fs.readFileSync(path.join(root, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version,
  mlxLm: fs.existsSync(python) ? version(python, ['-c', 'import mlx_lm, mlx.core as mx; print(mlx_lm.__version__, "/ mlx", mx.__version__)']) : 'n/a',
  rustc: version('rustc', ['--version']),
  model: path.basename(model),
}
const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : 'n/a')
const rows = [
  ['single-stream decode (tok/s)', (r) => f(r.decodeTps)],
  ['first token, 32-token prompt (ms)', (r) => f(r.ttftMs?.['32'], 0)],
  ['first token, 512-token prompt (ms)', (r) => f(r.ttftMs?.['512'], 0)],
  ...workload.streams.map((n) => [`aggregate, ${n} stream${n > 1 ? 's' : ''} (tok/s)`, (r) => f(r.aggregateTps?.[n])]),
  ['peak RSS (MiB)', (r) => f(r.peakRssMiB, 0)],
  ['event-loop p99 during 8 streams (ms)', (r) => f(r.eventLoopP99Ms, 2)],
]
const engines = [
  ['mlx-serving', results.ours],
  ['node-llama-cpp', results.llamacpp],
  ['mlx-lm', results.mlxlm],
]
let md = `| | ${engines.map(([n]) => n).join(' | ')} |\n| --- | ${engines.map(() => '---:').join(' | ')} |\n`
for (const [label, get] of rows) md += `| ${label} | ${engines.map(([, r]) => (r.error ? 'error' : get(r))).join(' | ')} |\n`
const ratio = (a, b) => (a && b ? (a / b).toFixed(2) + 'x' : 'n/a')
md += `\nmlx-serving vs node-llama-cpp: single stream ${ratio(results.ours.decodeTps, results.llamacpp.decodeTps)}, 8 streams ${ratio(results.ours.aggregateTps?.[8], results.llamacpp.aggregateTps?.[8])}; `
md += `vs mlx-lm: single ${ratio(results.ours.decodeTps, results.mlxlm.decodeTps)}, 8 streams ${ratio(results.ours.aggregateTps?.[8], results.mlxlm.aggregateTps?.[8])}.\n`
const o = results.overhead
md += `Node binding overhead (single stream, ${rounds} alternated rounds, medians): ${f(o.nodeTps)} tok/s through Node vs ${f(o.rustTps)} tok/s from Rust (${ratio(o.nodeTps, o.rustTps)}).\n`
const sm = results.ours.smooth
if (sm) {
  md += `Smooth streams (8 running streams; a ${sm.promptTokens}-token prompt arrives): inter-token gap median ${f(sm.medianGapMs, 0)} ms on their own `
  md += `(p99 ${f(sm.p99GapAloneMs, 0)} ms), p99 ${f(sm.p99GapDuringMs, 0)} ms while it prefills (${ratio(sm.p99GapDuringMs, sm.medianGapMs)} the median); `
  md += `its first token after ${f(sm.longTtftMs / 1000, 1)} s (${f(sm.longAloneTtftMs / 1000, 1)} s alone, ${ratio(sm.longTtftMs, sm.longAloneTtftMs)}).\n`
}
// The CPU targets, each against node-llama-cpp measured in this run (or, for
// the smooth-stream ones, against our own figures without the long prompt).
const ours = results.ours
const lc = results.llamacpp
const targets = [
  ['single-stream decode vs node-llama-cpp', ours.decodeTps / lc.decodeTps, '>=', 1.3],
  ['aggregate, 8 streams vs node-llama-cpp', ours.aggregateTps?.[8] / lc.aggregateTps?.[8], '>=', 2.5],
  ['aggregate, 16 streams vs node-llama-cpp', ours.aggregateTps?.[16] / lc.aggregateTps?.[16], '>=', 3],
  ['first token, 512-token prompt vs node-llama-cpp', ours.ttftMs?.['512'] / lc.ttftMs?.['512'], '<=', 0.5],
  ['peak RSS vs node-llama-cpp', ours.peakRssMiB / lc.peakRssMiB, '<=', 0.25],
  [`inter-token p99 of 8 streams while a ${sm?.promptTokens ?? '?'}-token prompt prefills vs their median alone`, sm?.p99GapDuringMs / sm?.medianGapMs, '<=', 2],
  ["that prompt's first token vs its time alone", sm?.longTtftMs / sm?.longAloneTtftMs, '<=', 1.5],
]
md += `\n| target | measured | wanted | met |\n| --- | ---: | ---: | :---: |\n`
for (const [what, x, op, want] of targets) {
  const met = Number.isFinite(x) ? ((op === '>=' ? x >= want : x <= want) ? 'yes' : 'no') : 'n/a'
  md += `| ${what} | ${Number.isFinite(x) ? x.toFixed(2) + 'x' : 'n/a'} | ${op} ${want}x | ${met} |\n`
}
const cv = results.conversation
if (cv) {
  md += `Conversation turn 2 (history of ${cv.runs[0].historyTokens} tokens + a 32-token answer, turn 2 of ${cv.runs[0].turn2Tokens} tokens): `
  md += `first token ${f(cv.warmMs, 0)} ms with prefix reuse (${cv.runs[0].reused} tokens reused) vs ${f(cv.coldMs, 0)} ms cold (${(100 * cv.ratio).toFixed(1)}%; target <= 15%).\n`
}
if (results.structured && !results.structured.error) md += structuredMarkdown(results.structured)
for (const [name, r] of [...engines, ['overhead pairing', o], ['conversation', cv ?? {}], ['constrained decoding', results.structured ?? {}]]) if (r.error) md += `\n${name} failed: ${r.error}\n`
md += `\nBuild ${machine.build}, \`npm run bench\`, ${machine.date.slice(0, 10)}. Machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}. Node ${machine.node}, node-llama-cpp ${machine.nodeLlamaCpp} (${results.llamacpp.threads ?? '?'} threads), mlx-lm ${machine.mlxLm}, ${machine.rustc}. Model ${machine.model}; greedy; medians of ${workload.repeats} runs; ${workload.decodeTokens} decode tokens single-stream, ${workload.streamTokens} per stream in aggregate runs.\n`

// Embeddings: this engine against sentence-transformers (bench/embeddings.mjs).
if (!skipped('embeddings')) {
  log('embeddings (bench/embeddings.mjs)')
  const embeddings = spawnSync(process.execPath, [path.join(bench, 'embeddings.mjs')], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 })
  md += `\n## Embeddings\n\n${embeddings.status === 0 ? embeddings.stdout.trim() : `failed (exit ${embeddings.status})`}\n`
}

// Speculative decoding: this engine and node-llama-cpp's predictors (bench/speculative.mjs).
if (!skipped('speculative')) {
  log('speculative decoding (bench/speculative.mjs)')
  const speculative = spawnSync(process.execPath, [path.join(bench, 'speculative.mjs')], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 })
  md += `\n## Speculative decoding\n\n${speculative.status === 0 ? speculative.stdout.trim() : `failed (exit ${speculative.status})`}\n`
}

fs.mkdirSync(path.join(bench, 'results'), { recursive: true })
const out = resultPath(root, 'bench', device)
fs.writeFileSync(`${out}.json`, JSON.stringify({ machine, workload: { ...workload, decodePrompt: undefined, ttftPrompts: undefined, streamPrefixes: undefined }, results }, null, 2))
fs.writeFileSync(`${out}.md`, md)
console.log(md)
