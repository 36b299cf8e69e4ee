import { readFileSync } from 'node:fs';

export interface MountEntry {
  mountPoint: string;
  fstype: string;
  /** Per-superblock options, e.g. `rw,prjquota` for xfs with project quota. */
  superOptions: string;
}

// mountinfo escapes space, tab, newline and backslash as \ooo octal.
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));

/** This process's mount table (its mount namespace), from /proc/self/mountinfo: the truth about what is mounted. */
export function mountTable(): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    if (line === '') continue;
    const [pre, post] = line.split(' - ');
    const fields = pre!.split(' ');
    const rest = (post ?? '').split(' ');
    out.push({ mountPoint: unescape(fields[4] ?? ''), fstype: rest[0] ?? '', superOptions: rest[2] ?? '' });
  }
  return out;
}

export function isMountPoint(path: string): boolean {
  return mountTable().some((m) => m.mountPoint === path);
}

/** Mount points at or below `dir`, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string): string[] {
  return mountTable()
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** The mount that holds `path` (a canonical path): the longest mount point that prefixes it. */
export function mountOf(path: string): MountEntry {
  let best: MountEntry | undefined;
  for (const m of mountTable()) {
    const covers = m.mountPoint === '/' || path === m.mountPoint || path.startsWith(m.mountPoint + '/');
    if (covers && (best === undefined || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  return best!;
}
