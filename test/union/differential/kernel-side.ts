import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { WorkerRequest } from './kernel-worker.js';
import type { Op } from './sequence.js';

/** The parent's handle on the chrooted kernel-side worker (see kernel-worker.ts); one request at a time. */
export class KernelSide {
  private waiting: Array<{ resolve: (v: unknown) => void; reject: (e: Error) => void }> = [];

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { value?: unknown; error?: string }) => {
      const w = this.waiting.shift();
      if (m.error !== undefined) w?.reject(new Error(`kernel-side worker: ${m.error}`));
      else w?.resolve(m.value);
    });
    child.on('exit', (code) => {
      for (const w of this.waiting.splice(0)) w.reject(new Error(`kernel-side worker exited (${code})`));
    });
  }

  /** `cwd` is the directory the mount points of `enter` are relative to. */
  static start(cwd: string): KernelSide {
    const worker = fileURLToPath(new URL('./kernel-worker.ts', import.meta.url));
    return new KernelSide(fork(worker, { cwd, execArgv: ['--import', import.meta.resolve('tsx')], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  }

  private call<T>(m: WorkerRequest): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.waiting.push({ resolve: resolve as (v: unknown) => void, reject });
      this.child.send(m);
    });
  }

  enter(root: string): Promise<void> {
    return this.call({ t: 'enter', root });
  }
  leave(): Promise<void> {
    return this.call({ t: 'leave' });
  }
  /** The error code the operation ended with, or 'OK'. */
  op(op: Op): Promise<string> {
    return this.call({ t: 'op', op });
  }
  manifest(): Promise<string[]> {
    return this.call({ t: 'manifest' });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill();
    await exited;
  }
}
