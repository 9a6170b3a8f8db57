// Speculative decoding side by side: this engine and node-llama-cpp (llama.cpp),
// each plain and with guesses, on the same GGUF files and token ids, rounds
// alternated so that drift in a shared machine's speed hits every variant alike.
//
//   node bench/speculative.mjs [TARGET.gguf] [DRAFT.gguf]
//
// - edit: rewrite a given ~300-token function with one change, greedy;
//   guesses looked up in the prompt (ours: prompt_lookup; llama.cpp:
//   InputLookupTokenPredictor).
// - chat: chat prompts, greedy; guesses from the draft model (ours: draft;
//   llama.cpp: DraftSequenceTokenPredictor).
// Prints a table and writes bench/results/<device>-<date>-<build>-speculative.{json,md}.
// BENCH_ROUNDS (default 3), BENCH_MAX_TOKENS (default 320), BENCH_ONLY=edit|chat.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { getLlama, InputLookupTokenPredictor, DraftSequenceTokenPredictor } from 'node-llama-cpp'
import { build, median, resultPath } from './engines/common.mjs'

const require = createRequire(import.meta.url)
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)))
const models = path.join(root, 'models')
const targetPath = process.argv[2] ?? path.join(models, 'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf')
const draftPath = process.argv[3] ?? path.join(models, 'qwen2.5-coder-0.5b-instruct-q4_k_m.gguf')
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const maxTokens = Number(process.env.BENCH_MAX_TOKENS ?? 320)
const only = process.env.BENCH_ONLY
const log = (...a) => console.error('[speculative]', ...a)

const FUNCTION = `def summarize_orders(orders, currency="EUR", min_total=0.0):
    """Group orders by customer and return per-customer totals."""
    totals = {}
    counts = {}
    for order in orders:
        customer = order.get("customer")
        if customer is None:
            continue
        amount = float(order.get("amount", 0.0))
        if order.get("currency", currency) != currency:
            rate = order.get("rate", 1.0)
            amount = amount * rate
        if amount < 0:
            raise ValueError(f"negative amount in order {order.get('id')}")
        totals[customer] = totals.get(customer, 0.0) + amount
        counts[customer] = counts.get(customer, 0) + 1
    summary = []
    for customer, total in totals.items():
        if total < min_total:
            continue
        average = total / counts[customer]
        summary.append({
            "customer": customer,
            "total": round(total, 2),
            "orders": counts[customer],
            "average": round(average, 2),
            "currency": currency,
        })
    summary.sort(key=lambda row: row["total"], reverse=True)
    return summary
`
const workloads = {
  edit: {
    speculative: { type: 'prompt_lookup' },
    prompts: [`Rename the parameter \`orders\` to \`records\` everywhere in this function and reply with the whole function only, in a code block.\n\n\`\`\`python\n${FUNCTION}\`\`\``],
  },
  chat: {
    speculative: { type: 'draft', model: 'draft' },
    prompts: ['Explain what a hash map is and when to use one.', 'Write a Python function that checks whether a string is a palindrome, with a docstring.'],
  },
}

const { Engine } = require('../lib/index.js')
// A busy machine may take long over a 1.5B model's prefill chunk: not a hang.
const engine = await Engine.create({ maxBatchSize: 1, hangTimeoutMs: 600_000 })
await engine.loadModel({ id: 'target', path: targetPath })
await engine.loadModel({ id: 'draft', path: draftPath })
const render = (content) => {
  const text = engine.applyChatTemplate('target', [{ role: 'user', content }])
  return { text, ids: engine.tokenize('target', text) }
}

const llama = await getLlama({ build: 'never', logLevel: 'error' })
const threads = os.availableParallelism()
const lTarget = await llama.loadModel({ modelPath: targetPath })
const lDraft = await llama.loadModel({ modelPath: draftPath })

async function ours({ text }, speculative) {
  const started = performance.now()
  let first
  let tokens = []
  let final
  for await (const chunk of engine.generate({ model: 'target', prompt: text, maxTokens, speculative })) {
    if (chunk.done) final = chunk
    else {
      first ??= performance.now()
      tokens.push(...chunk.tokenIds)
    }
  }
  const end = performance.now()
  return { tokens, ms: end - started, decodeTps: (tokens.length - 1) / ((end - first) / 1000), drafted: final.usage.draftedTokens, accepted: final.usage.acceptedTokens }
}

async function llamacpp({ ids }, kind) {
  const contextSize = ids.length + maxTokens + 64
  const context = await lTarget.createContext({ contextSize, threads })
  let draftContext
  let tokenPredictor
  if (kind === 'edit') tokenPredictor = new InputLookupTokenPredictor()
  if (kind === 'chat') {
    draftContext = await lDraft.createContext({ contextSize, threads })
    tokenPredictor = new DraftSequenceTokenPredictor(draftContext.getSequence())
  }
  const sequence = context.getSequence(tokenPredictor ? { tokenPredictor } : {})
  try {
    const started = performance.now()
    let first
    const tokens = []
    for await (const token of sequence.evaluate(ids, { temperature: 0 })) {
      first ??= performance.now()
      if (lTarget.isEogToken(token)) break
      tokens.push(token)
      if (tokens.length >= maxTokens) break
    }
    const end = performance.now()
    const stats = sequence.tokenPredictions
    return { tokens, ms: end - started, decodeTps: (tokens.length - 1) / ((end - first) / 1000), drafted: stats ? stats.validated + stats.refuted : 0, accepted: stats?.validated ?? 0 }
  } finally {
    await context.dispose()
    await draftContext?.dispose()
  }
}

const results = {}
for (const [kind, w] of Object.entries(workloads)) {
  if (only && only !== kind) continue
  const runs = { oursPlain: [], oursSpec: [], llamaPlain: [], llamaSpec: [] }
  const sameAsPlain = []
  for (let round = 0; round < rounds; round++) {
    for (const prompt of w.prompts) {
      const input = render(prompt)
      log(`${kind}, round ${round + 1}/${rounds}, prompt of ${input.ids.length} tokens`)
      const plain = await ours(input, false)
      const spec = await ours(input, w.speculative)
      sameAsPlain.push(JSON.stringify(plain.tokens) === JSON.stringify(spec.tokens))
      runs.oursPlain.push(plain)
      runs.oursSpec.push(spec)
      runs.llamaPlain.push(await llamacpp(input, 'plain'))
      runs.llamaSpec.push(await llamacpp(input, kind))
    }
  }
  const summary = Object.fromEntries(
    Object.entries(runs).map(([k, rs]) => [
      k,
      {
        decodeTps: median(rs.map((r) => r.decodeTps)),
        ms: median(rs.map((r) => r.ms)),
        tokens: median(rs.map((r) => r.tokens.length)),
        acceptance: rs.reduce((a, r) => a + r.accepted, 0) / Math.max(1, rs.reduce((a, r) => a + r.drafted, 0)),
      },
    ]),
  )
  results[kind] = { ...summary, sameAsPlain: sameAsPlain.every(Boolean) }
}
await engine.shutdown()
await lTarget.dispose()
await lDraft.dispose()
await llama.dispose()

const machine = { date: new Date().toISOString(), build: build(root), cpu: os.cpus()[0]?.model, cores: threads, target: path.basename(targetPath), draft: path.basename(draftPath), rounds, maxTokens }
const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a')
const lines = [
  `# Speculative decoding (${machine.date.slice(0, 10)}, build ${machine.build}, ${machine.cpu}, ${threads} cores)`,
  '',
  `\`node bench/speculative.mjs\`: ${machine.target}, draft ${machine.draft}; greedy, at most ${maxTokens} tokens, medians of ${rounds} alternated rounds.`,
  '',
  '| workload | ours plain | ours speculative | speed-up | llama.cpp plain | llama.cpp speculative | speed-up | ours / llama.cpp speculative | acceptance ours / llama.cpp | same tokens as plain |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
  ...Object.entries(results).map(
    ([k, r]) =>
      `| ${k} (decode tok/s) | ${f(r.oursPlain.decodeTps)} | ${f(r.oursSpec.decodeTps)} | ${f(r.oursSpec.decodeTps / r.oursPlain.decodeTps, 2)}x | ${f(r.llamaPlain.decodeTps)} | ${f(r.llamaSpec.decodeTps)} | ${f(r.llamaSpec.decodeTps / r.llamaPlain.decodeTps, 2)}x | ${f(r.oursSpec.decodeTps / r.llamaSpec.decodeTps, 2)}x | ${f(r.oursSpec.acceptance, 2)} / ${f(r.llamaSpec.acceptance, 2)} | ${r.sameAsPlain ? 'yes' : 'NO'} |`,
  ),
]
console.log(lines.join('\n'))
const out = resultPath(root, 'speculative', { backend: 'cpu' })
fs.writeFileSync(`${out}.json`, JSON.stringify({ machine, results }, null, 2))
fs.writeFileSync(`${out}.md`, lines.join('\n') + '\n')
log(`wrote ${path.relative(root, out)}.{json,md}`)
