import type { UnionFs } from '../../../src/union/union-fs.js';
import type { Op } from './sequence.js';

/** Apply one operation to the userspace union; returns the error code it ended with, or 'OK'. */
export async function unionOp(u: UnionFs, o: Op): Promise<string> {
  const P = (x: string) => '/' + x;
  try {
    switch (o.op) {
      case 'write':
        await u.writeFile(P(o.p), o.data);
        break;
      case 'append':
        await u.appendFile(P(o.p), o.data);
        break;
      case 'truncate':
        await u.truncate(P(o.p), o.len);
        break;
      case 'mkdir':
        await u.mkdir(P(o.p));
        break;
      case 'rmdir':
        await u.rmdir(P(o.p));
        break;
      case 'unlink':
        await u.unlink(P(o.p));
        break;
      case 'link':
        await u.link(P(o.p), P(o.q));
        break;
      case 'symlink':
        await u.symlink(o.target, P(o.p));
        break;
      case 'chmod':
        await u.chmod(P(o.p), o.mode);
        break;
      case 'chown':
        await u.chown(P(o.p), o.uid, o.gid);
        break;
      case 'utimes':
        await u.utimes(P(o.p), o.t, o.t);
        break;
      case 'rename':
        await u.rename(P(o.p), P(o.q));
    }
    return 'OK';
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string') throw e;
    return code;
  }
}
