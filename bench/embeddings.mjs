// The embedding benchmark (`npm run bench` runs it after the generation
// benchmark; alone: `node bench/embeddings.mjs`): sentences/s at a batch of
// 1, 32 and 256 inputs per call and the latency of one short query, for this
// engine and for sentence-transformers (PyTorch, f32, on the CPU with the same
// number of threads), on the same model directories and sentences. The two
// are run in alternate rounds, each in a fresh process, so that drift in a
// shared machine's speed hits both alike; figures are medians over rounds.
// Each round also checks that the two agree (lowest cosine similarity over
// the first 64 sentences). On a GPU (MLX's CUDA runtime in .mlx), PyTorch runs
// there too (BENCH_EMBED_DEVICE=cuda); BENCH_EMBED_PYTHON names a Python with
// sentence-transformers other than .data/embeddings/venv's.
// Writes bench/results/<device>-<date>-<build>-embeddings.{json,md}.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { median, resultPath } from './engines/common.mjs'

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const bench = path.join(root, 'bench')
const log = (...a) => console.error('[bench:embeddings]', ...a)
const python = process.env.BENCH_EMBED_PYTHON ?? path.join(root, '.data', 'embeddings', 'venv', 'bin', 'python')
const stDevice = process.env.BENCH_EMBED_DEVICE ?? 'cpu'
const gpu = stDevice !== 'cpu'
const rounds = Number(process.env.BENCH_EMBED_ROUNDS ?? 3)
const batches = [1, 32, 256]
const models = (process.env.BENCH_EMBED_MODELS ?? 'all-MiniLM-L6-v2,embeddinggemma-300m').split(',').filter(Boolean)

// Sentences of everyday length (the fixture's, without its long paragraphs), 512 in all.
const fixture = JSON.parse(fs.readFileSync(path.join(root, '__test__', 'fixtures', 'embedding-sentences.json'), 'utf8'))
const base = fixture.sentences.filter((s) => s.length <= 300)
const sentences = Array.from({ length: 512 }, (_, i) => base[i % base.length] + (i >= base.length ? ` (${Math.floor(i / base.length)})` : ''))
const query = 'Which mountain is the highest in the world?'

function cosine(a, b) {
  let ab = 0, aa = 0, bb = 0
  for (let i = 0; i < a.length; i++) (ab += a[i] * b[i]), (aa += a[i] * a[i]), (bb += b[i] * b[i])
  return ab / Math.sqrt(aa * bb)
}

function child(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 28 })
  const line = r.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop()
  if (r.status !== 0 || !line) return { error: (r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n').slice(-3).join(' ') }
  return JSON.parse(line)
}

const results = {}
for (const name of models) {
  const model = path.join(root, 'models', name)
  if (!fs.existsSync(path.join(model, 'modules.json'))) {
    log(`${name} is missing (scripts/setup.sh --embeddings); skipped`)
    continue
  }
  // EmbeddingGemma is 15x the work of MiniLM per token: fewer sentences.
  const count = name.startsWith('embeddinggemma') ? 256 : 512
  const workload = { model, sentences: sentences.slice(0, count), batches, query, queries: 20, check: 64 }
  const runs = { ours: [], st: [] }
  for (let i = 0; i < rounds; i++) {
    log(`${name}, round ${i + 1} of ${rounds}: mlx-serving, then sentence-transformers`)
    runs.ours.push(child(process.execPath, [path.join(bench, 'engines', 'embed_ours.mjs'), JSON.stringify(workload)]))
    runs.st.push(fs.existsSync(python) ? child(python, [path.join(bench, 'engines', 'embed_st.py'), JSON.stringify(workload)]) : { error: `no ${python} (scripts/setup.sh --embeddings-bench)` })
  }
  // Agreement of the last round that both finished: the lowest cosine similarity.
  const pair = runs.ours.map((o, i) => [o, runs.st[i]]).filter(([o, s]) => o.check && s.check).pop()
  const lowestCosine = pair ? Math.min(...pair[0].check.map((a, i) => cosine(a, pair[1].check[i]))) : undefined
  const summary = (list) => {
    const ok = list.filter((r) => !r.error)
    if (ok.length === 0) return { error: list[0]?.error }
    return {
      throughput: Object.fromEntries(batches.map((b) => [b, median(ok.map((r) => r.throughput[b]))])),
      queryMs: median(ok.map((r) => r.queryMs)),
      rounds: ok.map(({ check, ...r }) => r),
      torch: ok[0].torch,
      threads: ok[0].threads,
      device: ok[0].device,
    }
  }
  results[name] = { sentences: count, lowestCosine, ours: summary(runs.ours), st: summary(runs.st) }
}

const f = (x, d = 1) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : 'n/a')
const ratio = (a, b) => (a && b ? (a / b).toFixed(2) + 'x' : 'n/a')
let md = ''
for (const [name, r] of Object.entries(results)) {
  md += `### ${name}\n\n| | mlx-serving | sentence-transformers | ratio |\n| --- | ---: | ---: | ---: |\n`
  for (const b of batches) md += `| sentences/s, batch ${b} | ${f(r.ours.throughput?.[b])} | ${f(r.st.throughput?.[b])} | ${ratio(r.ours.throughput?.[b], r.st.throughput?.[b])} |\n`
  md += `| one query (ms) | ${f(r.ours.queryMs)} | ${f(r.st.queryMs)} | ${ratio(r.st.queryMs, r.ours.queryMs)} faster |\n\n`
  md += `Lowest cosine similarity between the two over the first 64 sentences: ${f(r.lowestCosine, 7)}. Devices: ${r.ours.device ?? 'n/a'} / ${r.st.device ?? 'n/a'}.\n\n`
  for (const [k, x] of [['mlx-serving', r.ours], ['sentence-transformers', r.st]]) if (x.error) md += `${k} failed: ${x.error}\n\n`
}
const machine = { date: new Date().toISOString(), cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), node: process.version }
const st = Object.values(results).find((r) => r.st.torch)?.st
md += `Medians of ${rounds} alternated rounds; ${Object.values(results).map((r) => r.sentences).join(' / ')} sentences of the test fixture (everyday lengths) per batch size, f32 ${gpu ? 'on the GPU' : 'on the CPU'}. `
md += `sentence-transformers with PyTorch ${st?.torch ?? 'n/a'}${gpu ? '' : ` on ${st?.threads ?? '?'} threads`}. Machine: ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, ${machine.date}.\n`
md += `transformers.js is not measured: it reads ONNX weights, and none of these models ships them offline (they would have to be exported from PyTorch first).\n`

fs.mkdirSync(path.join(bench, 'results'), { recursive: true })
const out = resultPath(root, 'embeddings', { backend: gpu ? 'gpu' : 'cpu' })
fs.writeFileSync(`${out}.json`, JSON.stringify({ machine, results }, null, 2))
fs.writeFileSync(`${out}.md`, md)
console.log(md)
