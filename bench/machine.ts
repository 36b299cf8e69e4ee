import { cpus, release, totalmem } from 'node:os';
import { run } from '../test/fixtures/run.js';

export interface MachineFacts {
  kernel: string;
  cpus: string;
  memory: string;
  filesystem: string;
  node: string;
  tar: string;
}

const firstLine = async (cmd: string, args: string[]) => {
  const r = await run(cmd, args).catch(() => null);
  return r && r.code === 0 ? r.stdout.trim().split('\n')[0]! : 'unknown';
};

/** What the numbers depend on: kernel, CPUs, memory, the filesystem the bench writes to, tool versions. */
export async function machineFacts(benchDir: string): Promise<MachineFacts> {
  const c = cpus();
  return {
    kernel: `Linux ${release()}`,
    cpus: `${c.length} × ${c[0]?.model.trim() ?? 'unknown'}`,
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    filesystem: `${(await firstLine('findmnt', ['-n', '-o', 'FSTYPE,OPTIONS', '-T', benchDir])).replace(/\s+/, ' ')} (${benchDir})`,
    node: process.version,
    tar: await firstLine('tar', ['--version']),
  };
}
