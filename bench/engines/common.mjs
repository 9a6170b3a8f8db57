import { execFileSync } from 'node:child_process'
import path from 'node:path'

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** Prompts for n concurrent streams: the decode prompt with a distinct prefix each. */
export function streamsPlan(work, n) {
  return Array.from({ length: n }, (_, i) => [...work.streamPrefixes[i % work.streamPrefixes.length], ...work.decodePrompt])
}

/**
 * Where a result file goes (scripts/result_name.sh names them all):
 * bench/results/<device>-<date>-<build>-<what>, `what` e.g. 'bench'. On the
 * CPU backend <device> is 'cpu'; otherwise the GPU's model.
 */
export function resultPath(root, what, device) {
  const args = device?.backend === 'cpu' ? [what, 'cpu'] : [what]
  return path.join(root, execFileSync(path.join(root, 'scripts', 'result_name.sh'), args, { encoding: 'utf8' }).trim())
}

/** The build measured: the checked-out commit, `-dirty` when tracked files differ from it. */
export function build(root) {
  return execFileSync(path.join(root, 'scripts', 'result_name.sh'), ['--build'], { encoding: 'utf8' }).trim()
}
