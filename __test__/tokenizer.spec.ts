import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { engineWithModel, MODEL } from './helpers'

let engine: Awaited<ReturnType<typeof engineWithModel>>

beforeAll(async () => {
  engine = await engineWithModel()
})
afterAll(async () => {
  await engine?.shutdown()
})

describe('tokenizer', () => {
  it.each([
    'Hello, world!',
    'Grüße aus Köln — naïve café, déjà vu.',
    '日本語のテキストと中文文本。',
    'Русский текст и ελληνικά.',
    'emoji 😀🎉👩‍👩‍👧‍👦 and flags 🇫🇷🇯🇵',
    'مرحبا بالعالم',
    '  leading spaces\n\ttabs and 12345 digits 3.14159',
  ])('round-trips %s', (text) => {
    const ids = engine.tokenize(MODEL, text)
    expect(ids.length).toBeGreaterThan(0)
    expect(engine.detokenize(MODEL, ids)).toBe(text)
  })

  it('recognises special tokens written in the text', () => {
    const ids = engine.tokenize(MODEL, '<|im_start|>user\nhi<|im_end|>')
    const [start] = engine.tokenize(MODEL, '<|im_start|>')
    const [end] = engine.tokenize(MODEL, '<|im_end|>')
    expect(ids[0]).toBe(start)
    expect(ids.at(-1)).toBe(end)
    expect(engine.tokenize(MODEL, '<|im_start|>')).toHaveLength(1)
  })

  it('splits digits one by one, as the smollm pre-tokenizer does', () => {
    const ids = engine.tokenize(MODEL, '2024')
    expect(ids).toHaveLength(4)
  })

  it('renders the GGUF chat template (ChatML with its default system prompt)', () => {
    const text = engine.applyChatTemplate(MODEL, [{ role: 'user', content: 'Hi there' }])
    expect(text).toBe(
      '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' +
        '<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n',
    )
    const withSystem = engine.applyChatTemplate(MODEL, [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ])
    expect(withSystem).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n')
  })

  it('rejects token ids outside the vocabulary with INVALID_ARGUMENT', () => {
    expect(() => engine.detokenize(MODEL, [10_000_000])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }))
  })
})
