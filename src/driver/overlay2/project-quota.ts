import { readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { invalidArgument } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { withFileLock } from '../../util/lock.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { backingFsName } from '../fs-magic.js';
import { mountOf } from '../mount-table.js';

// Project ids start high to stay clear of ids an administrator assigns by hand in /etc/projects.
const FIRST_PROJECT_ID = 100000;

/**
 * XFS project quotas on layer directories (Docker's quota.Control, done with xfs_quota from xfsprogs).
 * Every layer with a size limit gets its own project id; the directory's inherit flag makes everything
 * later created below it count against that project.
 */
export class ProjectQuota {
  private constructor(
    private readonly home: string,
    private readonly mountPoint: string,
  ) {}

  /** A quota control for `home`, or the reason there cannot be one. */
  static async detect(home: string): Promise<ProjectQuota | string> {
    const canonical = await realpath(home);
    const fs = backingFsName(canonical);
    if (fs !== 'xfs') return `only supported for backingFS XFS. Found ${fs}`;
    const m = mountOf(canonical);
    if (!/(^|,)(prjquota|pquota)(,|$)/.test(m.superOptions)) {
      return `not supported. Filesystem does not support Project Quota: ${m.mountPoint} is not mounted with prjquota`;
    }
    return new ProjectQuota(canonical, m.mountPoint);
  }

  /** Limit what `dir` (and everything created below it later) may hold to `bytes`. */
  async setQuota(dir: string, bytes: number): Promise<void> {
    // xfs_quota splits its -c command on blanks.
    if (/\s/.test(dir)) throw invalidArgument(`overlay2: cannot set a quota on a path with blanks: ${dir}`);
    const id = await this.nextProjectID();
    await execTool('xfs_quota', ['-x', '-c', `project -s -p ${dir} ${id}`, this.mountPoint]);
    await execTool('xfs_quota', ['-x', '-c', `limit -p bhard=${bytes} ${id}`, this.mountPoint]);
  }

  // Allocated under a lock: two processes on one data-root must never share a project.
  private nextProjectID(): Promise<number> {
    const counter = join(this.home, 'project-quota-next');
    return withFileLock(join(this.home, 'project-quota.lock'), async () => {
      const stored = parseInt(await readFile(counter, 'utf8').catch(() => ''), 10);
      const id = Number.isSafeInteger(stored) && stored >= FIRST_PROJECT_ID ? stored : FIRST_PROJECT_ID;
      await writeFileAtomic(counter, String(id + 1));
      return id;
    });
  }
}
