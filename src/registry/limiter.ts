/** At most `max` tasks at once, started in the order they were queued. */
export class Limiter {
  private running = 0;
  private readonly queue: Array<() => void> = [];

  constructor(private readonly max: number) {}

  /** `onQueued` is called when the task has to wait for a free slot. */
  async run<T>(fn: () => Promise<T>, onQueued?: () => void): Promise<T> {
    if (this.running >= this.max) {
      onQueued?.();
      await new Promise<void>((resolve) => this.queue.push(resolve));
    } else {
      this.running++;
    }
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.running--;
    }
  }
}
