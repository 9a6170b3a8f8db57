// Inference never runs on the JS thread: the event loop stays responsive.
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { drain, Engine, engineWithModel, MODEL } from './helpers'

let engine: InstanceType<typeof Engine>

beforeAll(async () => {
  engine = await engineWithModel({ maxBatchSize: 8 })
})
afterAll(async () => {
  await engine?.shutdown()
})

it('event-loop delay p99 stays under 10 ms while 8 streams generate', async () => {
  const histogram = monitorEventLoopDelay({ resolution: 1 })
  histogram.enable()
  const results = await Promise.all(
    Array.from({ length: 8 }, (_, i) => drain(engine.generate({ model: MODEL, prompt: `Story number ${i}: Once upon a time`, maxTokens: 64 }))),
  )
  histogram.disable()
  for (const r of results) expect(r.ids).toHaveLength(64)
  const p99 = histogram.percentile(99) / 1e6
  expect(p99).toBeLessThan(10)
})
