import type { Stats } from 'node:fs';

/** The calls a manifest needs, synchronous (the kernel side's node:fs) or not (the union). */
export interface ManifestFs {
  readdir(p: string): string[] | Promise<string[]>;
  lstat(p: string): Stats | Promise<Stats>;
  readFile(p: string): Buffer | Promise<Buffer>;
  readlink(p: string): string | Promise<string>;
}

/**
 * The visible tree below `/` as comparable lines: path, type and mode, owner, for files link count,
 * content and (when it is not "now") mtime, for symlinks the target; then one line per hardlink group
 * (paths sharing an inode), since inode numbers themselves differ between the two sides.
 */
export async function manifest(fs: ManifestFs, opts: { skipListedAbsent?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  const inodes = new Map<string, string[]>();
  const walk = async (dir: string): Promise<void> => {
    for (const n of (await fs.readdir(dir || '/')).sort()) {
      const p = `${dir}/${n}`;
      let st: Stats;
      try {
        st = await fs.lstat(p);
      } catch (e) {
        if (opts.skipListedAbsent && (e as { code?: string }).code === 'ENOENT') continue;
        throw e;
      }
      let line = `${p} ${st.mode.toString(8)} ${st.uid}:${st.gid}`;
      if (st.isFile()) {
        line += ` n=${st.nlink} ${JSON.stringify((await fs.readFile(p)).toString())}`;
        // Times set by the test or kept by copy-up are old; a fresh write is "now" on both sides, never equal.
        if (st.mtimeMs < 1.5e12) line += ` t=${Math.floor(st.mtimeMs / 1000)}`;
      }
      if (st.isSymbolicLink()) line += ` -> ${await fs.readlink(p)}`;
      out.push(line);
      if (st.isDirectory()) await walk(p);
      else {
        const key = `${st.dev}:${st.ino}`;
        const group = inodes.get(key);
        if (group) group.push(p);
        else inodes.set(key, [p]);
      }
    }
  };
  await walk('');
  for (const g of inodes.values()) if (g.length > 1) out.push(`hardlinks ${g.join(' ')}`);
  return out;
}
