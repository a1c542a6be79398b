// Long-running processes inside namespaces (the CLI, peers), with their logs.
import { spawn, type ChildProcess } from 'node:child_process'
import * as path from 'node:path'
import { Netns, ROOT } from './netns.js'

export const CLI = [process.execPath, '--import', 'tsx', path.join(ROOT, 'ts', 'cli.ts')]

export class Proc {
  readonly child: ChildProcess
  out = ''
  readonly exited: Promise<number | null>
  #waiters: Array<() => void> = []

  /** Runs `argv` inside `ns`, or directly when `ns` is null (for commands that make their own namespaces). */
  constructor(ns: Netns | null, argv: string[]) {
    const [cmd, ...args] = ns ? ['ip', 'netns', 'exec', ns.name, ...argv] : argv
    this.child = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'], cwd: ROOT })
    const onData = (d: Buffer) => {
      this.out += d.toString()
      for (const w of this.#waiters.splice(0)) w()
    }
    this.child.stdout!.on('data', onData)
    this.child.stderr!.on('data', onData)
    this.exited = new Promise((resolve) => this.child.on('close', (code) => {
      for (const w of this.#waiters.splice(0)) w()
      resolve(code)
    }))
  }

  /** Resolves when the output matches `re`; rejects after `ms` or if the process exits first. */
  async waitFor(re: RegExp, ms = 20_000): Promise<void> {
    const deadline = Date.now() + ms
    let exited = false
    void this.exited.then(() => (exited = true))
    while (!re.test(this.out)) {
      if (exited) throw new Error(`process exited before ${re}; output:\n${this.out}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${re}; output:\n${this.out}`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200))
        this.#waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  /** Sends SIGTERM and waits for the exit code (SIGKILL after 5 s). */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode
    // `ip netns exec` execs the command, so the child is the process itself.
    this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000)
    const code = await this.exited
    clearTimeout(t)
    return code
  }
}

/** Two namespaces joined by a veth pair: server 198.18.100.1/30 and client 198.18.100.2/30. */
export async function underlay(): Promise<{ s: Netns; c: Netns; destroy: () => Promise<void> }> {
  const s = await Netns.create()
  const c = await Netns.create()
  const { sh } = await import('./netns.js')
  const vs = `v${s.name.slice(-8)}s`.replace(/[^a-z0-9]/gi, '')
  const vc = `v${c.name.slice(-8)}c`.replace(/[^a-z0-9]/gi, '')
  await sh('ip', ['link', 'add', vs, 'netns', s.name, 'type', 'veth', 'peer', 'name', vc, 'netns', c.name])
  await s.exec('ip', ['addr', 'add', '198.18.100.1/30', 'dev', vs])
  await c.exec('ip', ['addr', 'add', '198.18.100.2/30', 'dev', vc])
  await s.exec('ip', ['link', 'set', vs, 'up'])
  await c.exec('ip', ['link', 'set', vc, 'up'])
  return {
    s,
    c,
    destroy: async () => {
      await s.destroy()
      await c.destroy()
    },
  }
}
