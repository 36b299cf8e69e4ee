/**
 * The gets this process holds, per layer, so that shutdown releases exactly those: mount reference counts
 * live on disk and other processes' mounts must stay up.
 */
export class HeldMounts {
  private readonly counts = new Map<string, number>();

  add(id: string): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
  }

  release(id: string): void {
    const n = this.counts.get(id) ?? 0;
    if (n > 1) this.counts.set(id, n - 1);
    else this.counts.delete(id);
  }

  /** The layer is gone: nothing of it is held any more. */
  forget(id: string): void {
    this.counts.delete(id);
  }

  /** Put every get still held, ignoring failures (shutdown goes on). */
  async releaseAll(put: (id: string) => Promise<void>): Promise<void> {
    for (const [id, n] of [...this.counts]) {
      for (let i = 0; i < n; i++) await put(id).catch(() => undefined);
    }
    this.counts.clear();
  }
}
