import { invalidArgument } from '../errors.js';
import type { ContainerConfig } from './manifest.js';

/** Parse `["a","b"]` JSON form or shell form (run through /bin/sh -c, as a Dockerfile does). */
function commandForm(args: string): string[] {
  const t = args.trim();
  if (t.startsWith('[')) {
    try {
      const v = JSON.parse(t) as unknown;
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
    } catch {
      // not JSON: shell form, like docker
    }
  }
  return ['/bin/sh', '-c', t];
}

function keyValues(args: string, what: string): Array<[string, string]> {
  const t = args.trim();
  // Legacy `ENV key value` form: one pair, the rest of the line is the value.
  if (!t.includes('=')) {
    const sp = t.search(/\s/);
    if (sp < 0) throw invalidArgument(`${what} requires at least one argument: ${what} key=value`);
    return [[t.slice(0, sp), t.slice(sp).trim()]];
  }
  const out: Array<[string, string]> = [];
  const re = /([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (const m of t.matchAll(re)) {
    const raw = m[2]!;
    out.push([m[1]!, raw.startsWith('"') ? (JSON.parse(raw) as string) : raw]);
  }
  return out;
}

/**
 * Apply `commit -c` / `import -c` instructions (the Dockerfile subset docker accepts there:
 * CMD ENTRYPOINT ENV EXPOSE LABEL ONBUILD USER VOLUME WORKDIR) to a container config, returning a new one.
 */
export function applyConfigChanges(base: ContainerConfig, changes: readonly string[]): ContainerConfig {
  const c: ContainerConfig = structuredClone(base);
  for (const change of changes) {
    const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(change);
    if (!m) throw invalidArgument(`invalid change "${change}": want INSTRUCTION arguments`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!;
    switch (op) {
      case 'CMD':
        c.Cmd = commandForm(args);
        break;
      case 'ENTRYPOINT':
        c.Entrypoint = commandForm(args);
        break;
      case 'ENV': {
        const env = (c.Env ??= []);
        for (const [k, v] of keyValues(args, 'ENV')) {
          const i = env.findIndex((e) => e.split('=')[0] === k);
          if (i >= 0) env[i] = `${k}=${v}`;
          else env.push(`${k}=${v}`);
        }
        break;
      }
      case 'LABEL':
        for (const [k, v] of keyValues(args, 'LABEL')) (c.Labels ??= {})[k] = v;
        break;
      case 'EXPOSE':
        for (const p of args.trim().split(/\s+/)) (c.ExposedPorts ??= {})[p.includes('/') ? p : `${p}/tcp`] = {};
        break;
      case 'USER':
        c.User = args.trim();
        break;
      case 'WORKDIR':
        c.WorkingDir = args.trim();
        break;
      case 'VOLUME': {
        const t = args.trim();
        const vols = t.startsWith('[') ? (JSON.parse(t) as string[]) : t.split(/\s+/);
        for (const v of vols) (c.Volumes ??= {})[v] = {};
        break;
      }
      case 'ONBUILD':
        (c.OnBuild ??= []).push(args.trim());
        break;
      default:
        throw invalidArgument(`${op} is not a valid change command`);
    }
  }
  return c;
}
