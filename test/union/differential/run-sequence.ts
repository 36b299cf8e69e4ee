import { lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { exportOverlayUpper, exportTree } from '../../../src/archive/export-changes.js';
import { native } from '../../../src/native/native.js';
import { openUnion } from '../../../src/union/open-union.js';
import type { KernelSide } from './kernel-side.js';
import { layerEntries } from './layer-entries.js';
import { manifest } from './manifest.js';
import { opText, type Sequence } from './sequence.js';
import { unionOp } from './union-ops.js';
import { writeLower } from './write-lower.js';

export interface Divergence {
  /** 0: the initial trees; 1..ops.length: after that operation; ops.length + 1: the exported layers. */
  step: number;
  text: string;
}

/** Every entry of a host tree with the metadata any write would change (ctime included). */
function hostTree(dir: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir).sort()) {
    const p = `${dir}/${n}`;
    const st = lstatSync(p);
    out.push(`${p} ${st.mode} ${st.uid}:${st.gid} ${st.size} ${st.nlink} ${st.mtimeMs} ${st.ctimeMs}`);
    if (st.isDirectory()) out.push(...hostTree(p));
  }
  return out;
}

function difference(step: number, head: string, kernel: string[], union: string[]): Divergence | null {
  const onlyK = kernel.filter((l) => !union.includes(l));
  const onlyU = union.filter((l) => !kernel.includes(l));
  if (onlyK.length === 0 && onlyU.length === 0 && kernel.length === union.length) return head.includes(' != ') ? { step, text: head } : null;
  return { step, text: [head, ...onlyK.map((l) => `  kernel only: ${l}`), ...onlyU.map((l) => `  union only:  ${l}`)].join('\n') };
}

/**
 * Run one sequence: its lower branches written twice (overlay form for the kernel, AUFS form for the
 * union), a kernel overlay mount over one set and the union over the other, each operation applied to
 * both; after every step the error codes and the visible trees must agree, at the end the two upper
 * branches exported as layer tars must hold the same entries and the union's lower branches must be
 * untouched. `readOnly`: no upper branch on either side (overlayfs mounted from lower layers only, the
 * union's top branch `ro`; needs two lowers). `codes` collects the union's answer to each operation.
 * Returns the first divergence, or null.
 */
export async function runSequence(tmp: string, kernel: KernelSide, seq: Sequence, opts: { readOnly?: boolean; codes?: string[] } = {}): Promise<Divergence | null> {
  const dir = mkdtempSync(join(tmp, `s${seq.seed}-`));
  const kLowers = seq.lowers.map((_, i) => join(dir, `k${i}`));
  const uLowers = seq.lowers.map((_, i) => join(dir, `u${i}`));
  const [ku, kw, km, uu] = ['ku', 'kw', 'km', 'uu'].map((x) => join(dir, x)) as [string, string, string, string];
  let mounted = false;
  let entered = false;
  try {
    seq.lowers.forEach((entries, i) => {
      writeLower(kLowers[i]!, entries, 'overlay');
      writeLower(uLowers[i]!, entries, 'aufs');
    });
    for (const d of [ku, kw, km, uu]) mkdirSync(d);
    const lowersBefore = uLowers.flatMap(hostTree);
    const upper = opts.readOnly ? '' : `,upperdir=${ku},workdir=${kw}`;
    native.mount('overlay', km, 'overlay', 0, `lowerdir=${kLowers.join(':')}${upper},redirect_dir=off,index=off,metacopy=off`);
    mounted = true;
    await kernel.enter(relative(tmp, km));
    entered = true;
    const u = await openUnion([...(opts.readOnly ? [] : [{ path: uu, mode: 'rw' as const }]), ...uLowers.map((path) => ({ path, mode: 'ro' as const }))]);
    const ufs = u as unknown as Parameters<typeof manifest>[0];
    const trees = () => Promise.all([kernel.manifest(), manifest(ufs)]);
    let [k, un] = await trees();
    let d = difference(0, 'initial trees differ', k, un);
    if (d) return d;
    for (let i = 0; i < seq.ops.length; i++) {
      const o = seq.ops[i]!;
      const [kc, uc] = await Promise.all([kernel.op(o), unionOp(u, o)]);
      opts.codes?.push(uc);
      [k, un] = await trees();
      d = difference(i + 1, `step ${i + 1} ${opText(o)}: kernel ${kc}${kc === uc ? ', union ' : ' != union '}${uc}`, k, un);
      if (d) return d;
    }
    const [kl, ul] = await Promise.all([layerEntries(exportOverlayUpper(ku)), layerEntries(exportTree(uu))]);
    d = difference(seq.ops.length + 1, 'the upper branches exported as layers differ', kl, ul);
    if (d) return d;
    return difference(seq.ops.length + 1, 'the union wrote into a lower branch', lowersBefore, uLowers.flatMap(hostTree));
  } finally {
    if (entered) await kernel.leave();
    if (mounted) native.umount(km, 0);
    rmSync(dir, { recursive: true, force: true });
  }
}
