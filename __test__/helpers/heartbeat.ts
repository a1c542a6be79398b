// The event loop's heartbeat, for the fixtures that show the loop keeps
// turning: an interval's firings and the largest gap between two of them.
import { performance } from 'node:perf_hooks'

export interface Heartbeat {
  /** Firings since the start or the last reset(). */
  readonly ticks: number
  /** The largest gap between two firings since the start or the last reset(); after stop(), the gap up to it counts too. */
  readonly maxGapMs: number
  /** Counts from now on. */
  reset(): void
  stop(): void
}

export function heartbeat(periodMs: number): Heartbeat {
  let ticks = 0
  let maxGap = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    maxGap = Math.max(maxGap, now - last)
    last = now
    ticks++
  }, periodMs)
  return {
    get ticks() {
      return ticks
    },
    get maxGapMs() {
      return maxGap
    },
    reset() {
      ticks = 0
      maxGap = 0
      last = performance.now()
    },
    stop() {
      clearInterval(timer)
      maxGap = Math.max(maxGap, performance.now() - last)
    },
  }
}
