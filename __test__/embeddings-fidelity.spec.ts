// Embedding models against sentence-transformers (PyTorch on the CPU, f32)
// on the same directories: 200 sentences in several languages, from one
// character to past each model's maximum length. `scripts/setup.sh
// --embeddings` (run by `npm test`) fetches the models and makes the
// references with scripts/embedding_reference.py.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Engine } from './helpers'

const root = path.resolve(__dirname, '..')
const fixture = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'embedding-sentences.json'), 'utf8')) as {
  sentences: string[]
  retrieval: { document: string; query: string }[]
}

interface Reference {
  versions: Record<string, string>
  maxSeqLength: number
  tokenIds: number[][]
  embeddings: number[][]
  prompted: Record<string, number[][]>
  truncated?: { dimensions: number; embeddings: number[][] }
}

const MODELS = [
  { id: 'minilm', dir: 'all-MiniLM-L6-v2', dimensions: 384, maxTokens: 256, architecture: 'bert' },
  { id: 'embeddinggemma', dir: 'embeddinggemma-300m', dimensions: 768, maxTokens: 2048, architecture: 'gemma3' },
] as const

function cosine(a: ArrayLike<number>, b: ArrayLike<number>) {
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

/** The lowest cosine similarity of pairs, and where it is. */
function worst(ours: ArrayLike<number>[], theirs: number[][]) {
  expect(ours.length).toBe(theirs.length)
  let min = { cos: 1, at: -1 }
  ours.forEach((v, i) => {
    expect(v.length).toBe(theirs[i].length)
    const c = cosine(v, theirs[i])
    if (c < min.cos) min = { cos: c, at: i }
  })
  return min
}

for (const m of MODELS) {
  const dir = path.join(root, 'models', m.dir)
  const referencePath = path.join(root, '.data', 'embeddings', `${m.dir}.json`)
  const present = fs.existsSync(path.join(dir, 'modules.json')) && fs.existsSync(referencePath)
  if (!present) console.warn(`SKIPPED: ${dir} or ${referencePath} is missing; run scripts/setup.sh --embeddings`)

  describe.skipIf(!present)(`${m.dir} against sentence-transformers`, () => {
    let engine: InstanceType<typeof Engine>
    let reference: Reference

    beforeAll(async () => {
      reference = JSON.parse(fs.readFileSync(referencePath, 'utf8'))
      engine = await Engine.create()
      await engine.loadModel({ id: m.id, path: dir })
    })
    afterAll(() => engine?.shutdown())

    it('is reported as an embedding model with its width and limits', () => {
      const info = engine.modelInfo(m.id)
      expect(info).toMatchObject({ kind: 'embedding', dimensions: m.dimensions, maxTokens: m.maxTokens, architecture: m.architecture })
      expect(info.maxTokens).toBe(reference.maxSeqLength)
      expect(info.pooling).toBe('mean')
      expect(info.normalized).toBe(true)
    })

    it('tokenizes every sentence into the ids sentence-transformers feeds the model', () => {
      const mismatches = fixture.sentences.filter((s, i) => JSON.stringify(engine.tokenize(m.id, s)) !== JSON.stringify(reference.tokenIds[i]))
      expect(mismatches).toEqual([])
      // The set reaches the model's maximum, so truncation is checked too.
      expect(Math.max(...reference.tokenIds.map((t) => t.length))).toBe(m.maxTokens)
    })

    it('embeds every sentence with cosine similarity >= 0.9999 to sentence-transformers', async () => {
      const { embeddings, usage } = await engine.embed({ model: m.id, input: fixture.sentences })
      const min = worst(embeddings, reference.embeddings)
      console.log(`${m.dir}: lowest cosine ${min.cos.toFixed(7)} (sentence ${min.at}), references by ${JSON.stringify(reference.versions)}`)
      expect(min.cos).toBeGreaterThanOrEqual(0.9999)
      expect(usage.promptTokens).toBe(reference.tokenIds.reduce((n, t) => n + t.length, 0))
      for (const v of embeddings) expect(Math.abs(Math.hypot(...v) - 1)).toBeLessThan(1e-5)
    })

    it('gives an input the same vector alone as in a batch of other lengths', async () => {
      const picks = [0, 80, 125, 185, 188].map((i) => fixture.sentences[i])
      const batched = (await engine.embed({ model: m.id, input: picks })).embeddings
      const alone = await Promise.all(picks.map(async (s) => (await engine.embed({ model: m.id, input: s })).embeddings[0]))
      alone.forEach((v, i) => expect(cosine(v, batched[i])).toBeGreaterThan(0.999999))
    })

    if (m.id === 'embeddinggemma') {
      it('puts the named prompts before the texts as sentence-transformers does', async () => {
        const texts = fixture.sentences.slice(0, 40)
        for (const name of ['query', 'document']) {
          const { embeddings } = await engine.embed({ model: m.id, input: texts, prompt: name })
          const min = worst(embeddings, reference.prompted[name])
          console.log(`${m.dir} with prompt '${name}': lowest cosine ${min.cos.toFixed(7)}`)
          expect(min.cos).toBeGreaterThanOrEqual(0.9999)
        }
      })

      it('truncates to fewer dimensions and normalizes again (Matryoshka)', async () => {
        const t = reference.truncated!
        const { embeddings } = await engine.embed({ model: m.id, input: fixture.sentences.slice(0, 40), dimensions: t.dimensions })
        expect(embeddings[0].length).toBe(t.dimensions)
        expect(worst(embeddings, t.embeddings).cos).toBeGreaterThanOrEqual(0.9999)
        for (const v of embeddings) expect(Math.abs(Math.hypot(...v) - 1)).toBeLessThan(1e-5)
      })
    }

    it('finds each query its own document', async () => {
      const docs = fixture.retrieval.map((r) => r.document)
      const queries = fixture.retrieval.map((r) => r.query)
      const withPrompts = m.id === 'embeddinggemma'
      const [d, q] = await Promise.all([
        engine.embed({ model: m.id, input: docs, ...(withPrompts ? { prompt: 'document' } : {}) }),
        engine.embed({ model: m.id, input: queries, ...(withPrompts ? { prompt: 'query' } : {}) }),
      ])
      const found = q.embeddings.map((qv) => {
        const scores = d.embeddings.map((dv) => cosine(qv, dv))
        return scores.indexOf(Math.max(...scores))
      })
      expect(found).toEqual(docs.map((_, i) => i))
    })
  })
}
