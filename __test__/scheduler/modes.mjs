// Every switch that changes the decode step's path, each in its other
// setting (environment, engine options, request fields): the randomized scheduler test (scheduler.spec.ts) runs its cases
// once per mode, each in a process of its own (the switches are read once).
// A new kernel, fusion, queueing, chunking or speculation switch is added here.
export const MODES = {
  // Everything at its default: greedy steps queued ahead, int8 activations,
  // prefix reuse on.
  default: { env: {}, engine: {} },
  // Each step issued only after the previous one's tokens were read.
  'lookahead-off': { env: { MLX_SERVING_LOOKAHEAD: '0' }, engine: {} },
  // Activations kept in f32 in the CPU matmul (the exact mode).
  f32: { env: { MLX_SERVING_ACTIVATIONS: 'f32' }, engine: {} },
  // A long prompt's prefill chunks in forward passes of their own between
  // decode steps, not inside them.
  'mixed-off': { env: { MLX_SERVING_MIXED_STEPS: '0' }, engine: {} },
  // No prefix reuse: every prompt prefilled from scratch.
  'prefix-off': { env: {}, engine: { prefixCacheMb: 0 } },
  // Speculative decoding (prompt lookup) for every request, every guess
  // verified: a sequence decoding alone verifies guesses, in a batch it
  // decodes plainly, and both must give the same answer.
  speculative: { env: { MLX_SERVING_SPECULATE: 'always' }, engine: {}, request: { speculative: { type: 'prompt_lookup' } } },
}
