/**
 * Everything the bench leaves behind (dockerd, mounts, temp dirs) registers an undo here. The undos run
 * newest first, once: at the end of the run, on an exception, or on SIGINT/SIGTERM/SIGHUP.
 */
const undos: { what: string; fn: () => Promise<void> }[] = [];
let running: Promise<void> | null = null;

export function onCleanup(what: string, fn: () => Promise<void>): void {
  undos.push({ what, fn });
}

export function cleanupAll(): Promise<void> {
  running ??= (async () => {
    while (undos.length) {
      const u = undos.pop()!;
      try {
        await u.fn();
      } catch (e) {
        process.stderr.write(`cleanup: ${u.what} failed: ${(e as Error).message}\n`);
      }
    }
  })();
  return running;
}

/** On a signal: clean up, then exit with 128+signo as a shell would report it. */
export function cleanupOnSignals(): void {
  const codes = { SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const;
  for (const [sig, no] of Object.entries(codes)) {
    process.once(sig, () => {
      process.stderr.write(`\n${sig}: cleaning up...\n`);
      void cleanupAll().finally(() => process.exit(128 + no));
    });
  }
}
