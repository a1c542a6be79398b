// Network namespaces for the kernel tests: created by the test, removed by it.
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import * as path from 'node:path'
import test from 'ava'

const execFileP = promisify(execFile)

export const isRoot = process.getuid?.() === 0
export const ROOT = path.resolve(__dirname, '..', '..')
export const FIXTURES = path.join(ROOT, '__test__', 'fixtures')

let warned = false
/** `test`, or a loudly skipped test when not root (skips never count as passes). */
export function rootTest(title: string, fn: Parameters<typeof test>[1]): void {
  if (isRoot) {
    test.serial(title, fn)
    return
  }
  if (!warned) {
    warned = true
    console.warn('\n*** SKIPPING kernel tests: they need root (CAP_NET_ADMIN) to create network namespaces and tun devices. Run `npm test` as root. ***\n')
  }
  test.skip(`${title} [needs root]`, fn)
}

let counter = 0

export async function sh(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { maxBuffer: 64 << 20 })
  return stdout
}

/** A network namespace named `tgso-<pid>-<n>` with `lo` up. */
export class Netns {
  readonly name: string
  private constructor(name: string) {
    this.name = name
  }

  static async create(): Promise<Netns> {
    const name = `tgso-${process.pid}-${++counter}`
    await sh('ip', ['netns', 'add', name])
    const ns = new Netns(name)
    await ns.exec('ip', ['link', 'set', 'lo', 'up'])
    return ns
  }

  /** Runs a command inside the namespace; resolves with stdout. */
  exec(cmd: string, args: string[]): Promise<string> {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args])
  }

  /** `ip -j ...` inside the namespace, parsed. */
  async ipJson<T = unknown>(...args: string[]): Promise<T> {
    const out = await sh('ip', ['-n', this.name, '-j', ...args])
    return JSON.parse(out || '[]') as T
  }

  /**
   * Runs a fixture script (`__test__/fixtures/<name>.ts`) inside the namespace
   * and returns the JSON it prints on its last line of stdout. Rejects on a
   * non-zero exit, with the fixture's stderr.
   */
  runFixture<T>(fixture: string, args: string[] = [], opts: { uid?: number; gid?: number; timeoutMs?: number; nodeFlags?: string[]; env?: Record<string, string> } = {}): Promise<T> {
    const script = path.join(FIXTURES, `${fixture}.ts`)
    const nodeArgs = [...(opts.nodeFlags ?? []), '--import', 'tsx', script, ...args]
    let argv: string[]
    if (opts.uid !== undefined) {
      // An unprivileged process: its own mount namespace (from `ip netns exec`)
      // with a world-accessible /dev/net/tun node bound over the real one.
      const shell = [
        'set -e',
        'd=$(mktemp -d)',
        'mount -t tmpfs -o mode=755 none "$d"',
        'mknod -m 666 "$d/tun" c 10 200',
        'mount --bind "$d/tun" /dev/net/tun',
        `exec setpriv --reuid=${opts.uid} --regid=${opts.gid ?? opts.uid} --clear-groups --inh-caps=-all "$@"`,
      ].join('; ')
      argv = ['netns', 'exec', this.name, 'sh', '-c', shell, 'sh', process.execPath, ...nodeArgs]
    } else {
      argv = ['netns', 'exec', this.name, process.execPath, ...nodeArgs]
    }
    return new Promise((resolve, reject) => {
      const child = spawn('ip', argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env: { ...process.env, ...opts.env, TSX_TSCONFIG_PATH: path.join(ROOT, 'tsconfig.json') } })
      let out = ''
      let err = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.stderr.on('data', (d: Buffer) => (err += d.toString()))
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
      child.on('close', (code, signal) => {
        clearTimeout(timer)
        const lines = out.trim().split('\n')
        if (code !== 0) {
          reject(new Error(`fixture ${fixture} exited with ${code ?? signal}\nstdout:\n${out}\nstderr:\n${err}`))
          return
        }
        try {
          resolve(JSON.parse(lines[lines.length - 1] ?? '') as T)
        } catch {
          reject(new Error(`fixture ${fixture} printed no JSON result\nstdout:\n${out}\nstderr:\n${err}`))
        }
      })
    })
  }

  async destroy(): Promise<void> {
    // Kill anything still running in the namespace, then remove it.
    const pids = await sh('ip', ['netns', 'pids', this.name]).catch(() => '')
    for (const pid of pids.split(/\s+/).filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
    await sh('ip', ['netns', 'del', this.name]).catch(() => {})
  }
}

/** Creates a namespace for the duration of `fn`, and removes it after, whatever happens. */
export async function withNetns<T>(fn: (ns: Netns) => Promise<T>): Promise<T> {
  const ns = await Netns.create()
  try {
    return await fn(ns)
  } finally {
    await ns.destroy()
  }
}
