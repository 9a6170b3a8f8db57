export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Prompts for n concurrent streams: the decode prompt with a distinct prefix each. */
export function streamsPlan(work, n) {
  return Array.from({ length: n }, (_, i) => [...work.streamPrefixes[i % work.streamPrefixes.length], ...work.decodePrompt])
}
