// Model directories in the Hugging Face / MLX layout, made from the SmolLM2
// GGUF by scripts/make_mlx_model.py: a bf16 directory (our dequantization
// under HF names and conventions) and an MLX 4-bit one (quantized by mlx-lm
// itself). The bf16 directory must tokenize, template and decode as the GGUF
// does (greedy tokens judged against llama.cpp on the GGUF as reference.ts
// says: the bf16 rounding of the weights is below its near-tie rule); the
// 4-bit directory's greedy tokens are compared with mlx-lm's own on the same
// directory (MLX_LM_PYTHON, default bench/.venv/bin/python).
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ask, drain, Engine, loadExact, MODEL_PATH } from './helpers'
import { describeAgreement, Reference } from './reference'

const ROOT = path.resolve(__dirname, '..')
const BF16 = path.join(ROOT, 'models', 'SmolLM2-135M-Instruct-bf16')
const Q4 = path.join(ROOT, 'models', 'SmolLM2-135M-Instruct-mlx-4bit')
const PYTHON = process.env.MLX_LM_PYTHON ?? path.join(ROOT, 'bench', '.venv', 'bin', 'python')
const present = fs.existsSync(path.join(BF16, 'config.json')) && fs.existsSync(path.join(Q4, 'config.json'))
if (!present) console.warn('model-dirs.spec: skipped, models/SmolLM2-135M-Instruct-{bf16,mlx-4bit} are missing (python3 scripts/make_mlx_model.py)')

const GREEDY_TOKENS = 24
/**
 * mlx-lm (bf16 activations) and we may part at near-ties: we accept one of ours
 * within `nats` of mlx-lm's choice, and want at least `share` of our tokens to be
 * its argmax. Our exact mode (f32 activations) is held to the tighter bound; the
 * default int8 activations round each 32-block too, so the two roundings add up.
 */
const MLX_TIES = {
  exact: { nats: 0.5, share: 0.9 },
  int8: { nats: 1.0, share: 0.75 },
}
const prompts = [ask('What is the capital of France?'), ask('List three prime numbers greater than 100.'), ask('How do I reverse a string in Python?')]

let engine: InstanceType<typeof Engine>
let infos: Record<string, Awaited<ReturnType<InstanceType<typeof Engine>['loadModel']>>> = {}

describe.skipIf(!present)('model directories (SmolLM2 bf16 and MLX 4-bit)', () => {
  beforeAll(async () => {
    engine = await Engine.create({ maxBatchSize: 4 })
    infos = {
      gguf: await engine.loadModel({ id: 'gguf', path: MODEL_PATH }),
      bf16: await engine.loadModel({ id: 'bf16', path: BF16 }),
      q4: await engine.loadModel({ id: 'q4', path: Q4 }),
      'q4-exact': await loadExact(engine, { id: 'q4-exact', path: Q4 }),
    }
  })
  afterAll(async () => {
    await engine?.shutdown()
  })

  it('loads both directories and reports them', () => {
    const { bf16, q4, gguf } = infos
    expect(bf16).toMatchObject({ format: 'safetensors', quantization: 'bf16', architecture: 'llama', layers: 30, hiddenSize: 576, heads: 9, kvHeads: 3, vocabSize: 49152, contextLength: 8192, hasChatTemplate: true })
    expect(bf16.tensorTypes).toEqual(['BF16'])
    expect(q4).toMatchObject({ format: 'mlx', quantization: '4-bit g64', architecture: 'llama', layers: 30, vocabSize: 49152, hasChatTemplate: true })
    expect(q4.tensorTypes).toEqual(['BF16', 'U32'])
    // Tied embeddings: the same parameters in all three.
    expect(bf16.parameters).toBe(gguf.parameters)
    expect(q4.parameters).toBe(gguf.parameters)
  })

  it('tokenizes, detokenizes and templates exactly as the GGUF', () => {
    const texts = ['Grüße, 日本語, Русский, مرحبا, 😀🎉 and 12345 digits   spaced\n\nlines', '<|im_start|>user\nhi<|im_end|>', '  x  ']
    for (const id of ['bf16', 'q4']) {
      for (const text of texts) {
        const ids = engine.tokenize('gguf', text)
        expect(engine.tokenize(id, text)).toEqual(ids)
        expect(engine.detokenize(id, ids)).toBe(engine.detokenize('gguf', ids))
      }
      for (const messages of [...prompts, [{ role: 'system' as const, content: 'Be brief.' }, ...ask('Hi')]]) {
        expect(engine.applyChatTemplate(id, messages)).toBe(engine.applyChatTemplate('gguf', messages))
      }
    }
  })

  it('the bf16 directory decodes greedily as the GGUF, judged against llama.cpp on the GGUF', async () => {
    const reference = await Reference.load(MODEL_PATH)
    try {
      for (const [i, messages] of prompts.entries()) {
        const promptIds = engine.tokenize('gguf', engine.applyChatTemplate('gguf', messages))
        const dir = await drain(engine.generate({ model: 'bf16', messages, maxTokens: GREEDY_TOKENS }))
        const gguf = await drain(engine.generate({ model: 'gguf', messages, maxTokens: GREEDY_TOKENS }))
        expect(dir.error).toBeUndefined()
        const same = dir.ids.findIndex((t, k) => t !== gguf.ids[k])
        console.log(`bf16 dir prompt ${i}: ${same < 0 ? dir.ids.length : same}/${dir.ids.length} tokens equal to our GGUF's`)
        const agreement = await reference.compareGreedy(promptIds, dir.ids, dir.final?.finishReason === 'stop')
        console.log(describeAgreement(`bf16 dir prompt ${i} vs llama.cpp`, agreement))
      }
    } finally {
      await reference.dispose()
    }
  })

  it.skipIf(!fs.existsSync(PYTHON)).each([
    ['q4-exact', 'exact'],
    ['q4', 'int8'],
  ] as const)("the MLX 4-bit directory's greedy tokens agree with mlx-lm's on the same directory (%s)", async (model, mode) => {
    const bound = MLX_TIES[mode]
    const cases = []
    for (const messages of prompts) {
      const prompt = engine.tokenize(model, engine.applyChatTemplate(model, messages))
      const { ids, error } = await drain(engine.generate({ model, messages, maxTokens: GREEDY_TOKENS }))
      expect(error).toBeUndefined()
      cases.push({ prompt, ours: ids })
    }
    const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'mlx_lm_reference.py')], { input: JSON.stringify({ model: Q4, cases }), encoding: 'utf8', maxBuffer: 1 << 26 })
    expect(r.status, r.stderr).toBe(0)
    const out: { cases: { greedy: number[]; argmax: number[]; gap: number[] }[] } = JSON.parse(r.stdout)
    let total = 0
    let exact = 0
    for (const [i, c] of cases.entries()) {
      const ref = out.cases[i]
      // Free-running: how long our tokens and mlx-lm's stay the same.
      const parted = c.ours.findIndex((t, k) => t !== ref.greedy[k])
      const prefix = parted < 0 ? c.ours.length : parted
      // Teacher-forced on our tokens: every one is mlx-lm's argmax or within its near-tie margin.
      const ties = ref.gap.map((g, k) => ({ k, g })).filter(({ k }) => ref.argmax[k] !== c.ours[k])
      total += c.ours.length
      exact += c.ours.length - ties.length
      console.log(`mlx 4-bit (${mode}) prompt ${i}: ${prefix}/${c.ours.length} tokens equal to mlx-lm's free greedy run; teacher-forced ${c.ours.length - ties.length}/${c.ours.length} are mlx-lm's argmax${ties.length ? `, near-ties at ${ties.map(({ k, g }) => `${k} (${g} nats)`).join(', ')}` : ''}`)
      for (const { k, g } of ties) expect(g, `prompt ${i} token ${k}`).toBeLessThanOrEqual(bound.nats)
      expect(prefix).toBeGreaterThanOrEqual(Math.min(c.ours.length, (ties[0]?.k ?? c.ours.length)))
    }
    expect(exact / total).toBeGreaterThanOrEqual(bound.share)
  })

  it('a greedy result is identical alone and batched, for a directory model', async () => {
    const requests = ['Say hi.', 'Name a color.', 'What is 2+2?', 'Tell me a fact.'].map((q) => ({ model: 'q4', messages: ask(q), maxTokens: 16 }))
    const alone = []
    for (const r of requests) alone.push(await drain(engine.generate(r)))
    const together = await Promise.all(requests.map((r) => drain(engine.generate(r))))
    for (let i = 0; i < requests.length; i++) {
      expect(together[i].error).toBeUndefined()
      expect(together[i].ids).toEqual(alone[i].ids)
    }
  })

  it("prompt caches carry the directory's fingerprint: reloaded by the same directory, refused by another model", async () => {
    const file = path.join(fs.mkdtempSync(path.join(ROOT, 'target', 'cache-')), 'q4.safetensors')
    try {
      const saved = await engine.saveCache({ model: 'q4', prompt: 'The quick brown fox jumps over the lazy dog.' }, file)
      expect(saved.tokens).toBeGreaterThan(5)
      expect(await engine.loadCache('q4', file)).toEqual({ tokens: saved.tokens })
      // Same architecture, vocabulary and shapes: only the fingerprint tells them apart.
      await expect(engine.loadCache('bf16', file)).rejects.toMatchObject({ code: 'CACHE_INVALID', message: expect.stringMatching(/fingerprints differ/) })
      await expect(engine.loadCache('gguf', file)).rejects.toMatchObject({ code: 'CACHE_INVALID', message: expect.stringMatching(/fingerprints differ/) })
    } finally {
      fs.rmSync(path.dirname(file), { recursive: true, force: true })
    }
  })

  it('an unsupported model_type and a corrupt directory are MODEL_LOAD_FAILED', async () => {
    const tmp = fs.mkdtempSync(path.join(ROOT, 'target', 'dir-'))
    try {
      for (const f of fs.readdirSync(BF16)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(BF16, f), path.join(tmp, f))
      const config = JSON.parse(fs.readFileSync(path.join(BF16, 'config.json'), 'utf8'))
      fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({ ...config, model_type: 'gpt_neox' }))
      await expect(engine.loadModel({ id: 'neox', path: tmp })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringContaining('not supported (llama, mistral, qwen2, qwen3, phi3, gemma3_text)') })
      fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config))
      await expect(engine.loadModel({ id: 'noweights', path: tmp })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringContaining('no model.safetensors') })
      // A header length far past the file.
      const bytes = Buffer.alloc(64)
      bytes.writeBigUInt64LE(1n << 40n)
      fs.writeFileSync(path.join(tmp, 'model.safetensors'), bytes)
      await expect(engine.loadModel({ id: 'hostile', path: tmp })).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED', message: expect.stringContaining('not a valid safetensors file') })
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true })
    }
  })
})


// Gemma 3 270M: a SentencePiece vocabulary, norms stored without the +1,
// sliding-window layers, a BOS from the tokenizer's post-processor.
const GEMMA_GGUF = path.join(ROOT, 'models', 'gemma-3-270m-q4_k_m.gguf')
const GEMMA_BF16 = path.join(ROOT, 'models', 'gemma-3-270m-bf16')
const GEMMA_Q4 = path.join(ROOT, 'models', 'gemma-3-270m-mlx-4bit')
const gemmaPresent = [GEMMA_GGUF, path.join(GEMMA_BF16, 'config.json'), path.join(GEMMA_Q4, 'config.json')].every((f) => fs.existsSync(f))
if (!gemmaPresent) console.warn('model-dirs.spec: gemma3 skipped, models/gemma-3-270m-{bf16,mlx-4bit} are missing (scripts/setup.sh --gemma3, then python3 scripts/make_mlx_model.py --gemma3)')

describe.skipIf(!gemmaPresent)('model directories (Gemma 3 270M bf16 and MLX 4-bit)', () => {
  let gemma: InstanceType<typeof Engine>
  beforeAll(async () => {
    gemma = await Engine.create({ maxBatchSize: 4 })
    const gguf = await gemma.loadModel({ id: 'gguf', path: GEMMA_GGUF })
    const bf16 = await gemma.loadModel({ id: 'bf16', path: GEMMA_BF16 })
    const q4 = await gemma.loadModel({ id: 'q4', path: GEMMA_Q4 })
    await loadExact(gemma, { id: 'q4-exact', path: GEMMA_Q4 })
    expect(bf16).toMatchObject({ format: 'safetensors', quantization: 'bf16', architecture: 'gemma3', layers: 18, vocabSize: 262144, parameters: gguf.parameters })
    expect(q4).toMatchObject({ format: 'mlx', quantization: '4-bit g64', architecture: 'gemma3', parameters: gguf.parameters })
  })
  afterAll(async () => {
    await gemma?.shutdown()
  })

  it('tokenizes as the GGUF, BOS included', () => {
    for (const text of ['The capital of France is', "def f(x):\n    return x**2  # 12345 Grüße 😀", '<start_of_turn>user\nhi<end_of_turn>']) {
      const ids = gemma.tokenize('gguf', text)
      expect(ids[0]).toBe(2)
      expect(gemma.tokenize('bf16', text)).toEqual(ids)
      expect(gemma.tokenize('q4', text)).toEqual(ids)
      expect(gemma.detokenize('q4', ids.slice(1))).toBe(text)
    }
  })

  it('the bf16 directory decodes greedily as the GGUF, judged against llama.cpp on the GGUF', async () => {
    const reference = await Reference.load(GEMMA_GGUF)
    try {
      for (const [i, prompt] of ['The days of the week are Monday, Tuesday, Wednesday,', 'def fibonacci(n):'].entries()) {
        const dir = await drain(gemma.generate({ model: 'bf16', prompt, maxTokens: 16 }))
        const gguf = await drain(gemma.generate({ model: 'gguf', prompt, maxTokens: 16 }))
        const same = dir.ids.findIndex((t, k) => t !== gguf.ids[k])
        console.log(`gemma bf16 dir prompt ${i}: ${same < 0 ? dir.ids.length : same}/${dir.ids.length} tokens equal to our GGUF's`)
        const agreement = await reference.compareGreedy(gemma.tokenize('gguf', prompt), dir.ids, dir.final?.finishReason === 'stop')
        console.log(describeAgreement(`gemma bf16 dir prompt ${i} vs llama.cpp`, agreement))
      }
    } finally {
      await reference.dispose()
    }
  })

  it.skipIf(!fs.existsSync(PYTHON)).each([
    ['q4-exact', 'exact'],
    ['q4', 'int8'],
  ] as const)("the MLX 4-bit directory's greedy tokens agree with mlx-lm's (%s)", async (model, mode) => {
    const bound = MLX_TIES[mode]
    const prompt = gemma.tokenize(model, 'The capital of France is')
    const { ids } = await drain(gemma.generate({ model, prompt: 'The capital of France is', maxTokens: 16 }))
    const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'mlx_lm_reference.py')], { input: JSON.stringify({ model: GEMMA_Q4, cases: [{ prompt, ours: ids }] }), encoding: 'utf8', maxBuffer: 1 << 26 })
    expect(r.status, r.stderr).toBe(0)
    const ref = JSON.parse(r.stdout).cases[0] as { greedy: number[]; argmax: number[]; gap: number[] }
    const parted = ids.findIndex((t, k) => t !== ref.greedy[k])
    const ties = ref.gap.map((g, k) => ({ k, g })).filter(({ k }) => ref.argmax[k] !== ids[k])
    console.log(`gemma mlx 4-bit (${mode}): ${parted < 0 ? ids.length : parted}/${ids.length} tokens equal to mlx-lm's free greedy run; teacher-forced ${ids.length - ties.length}/${ids.length} are mlx-lm's argmax${ties.length ? `, near-ties at ${ties.map(({ k, g }) => `${k} (${g} nats)`).join(', ')}` : ''}`)
    for (const { k, g } of ties) expect(g, `token ${k}`).toBeLessThanOrEqual(bound.nats)
    expect(ids.length - ties.length).toBeGreaterThanOrEqual(Math.ceil(bound.share * ids.length))
  })
})
