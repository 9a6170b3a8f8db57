// node-llama-cpp (llama.cpp) decoding with and without its JSON-schema grammar
// (createGrammarForJsonSchema) on the same GGUF, prompt ids and schema as
// bench/structured.mjs; rounds alternated. Prints the results as JSON.
import os from 'node:os'
import { getLlama, LlamaGrammarEvaluationState } from 'node-llama-cpp'
import { median } from './common.mjs'

const work = JSON.parse(process.argv[2])
const threads = os.availableParallelism()
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' })
const model = await llama.loadModel({ modelPath: work.model })
const grammar = await llama.createGrammarForJsonSchema(work.schema)

async function run(sequence, ids, constrained) {
  const grammarEvaluationState = constrained ? new LlamaGrammarEvaluationState({ model, grammar }) : undefined
  let first
  let end
  let tokens = 0
  for await (const token of sequence.evaluate(ids, { temperature: 0, grammarEvaluationState })) {
    void token
    tokens++
    end = performance.now()
    first ??= end
    if (tokens >= work.tokens) break
  }
  await sequence.clearHistory()
  return { first, end, tokens }
}

const tps = {}
for (const n of work.streams) {
  const context = await model.createContext({ sequences: n, contextSize: 1024, threads, batchSize: 512 })
  const sequences = Array.from({ length: n }, () => context.getSequence())
  const measure = async (constrained) => {
    const done = await Promise.all(sequences.map((s, i) => run(s, work.promptIds[i], constrained)))
    const from = Math.max(...done.map((d) => d.first))
    const to = Math.max(...done.map((d) => d.end))
    return (done.reduce((a, d) => a + d.tokens, 0) - done.length) / ((to - from) / 1000)
  }
  await measure(false)
  await measure(true)
  const got = { free: [], grammar: [] }
  for (let r = 0; r < work.rounds; r++) {
    for (const kind of r % 2 ? ['grammar', 'free'] : ['free', 'grammar']) got[kind].push(await measure(kind === 'grammar'))
  }
  tps[n] = { free: median(got.free), grammar: median(got.grammar), rounds: got }
  await context.dispose()
}
await model.dispose()
await llama.dispose()
console.log(JSON.stringify({ tps, threads }))
