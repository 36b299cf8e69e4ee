/** An error as one short line for a markdown report. */
export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.split('\n').map((l) => l.trim()).filter(Boolean).slice(0, 3).join(' / ').replaceAll('|', '\\|').slice(0, 400);
}

/**
 * Run one side of a comparison; a failure is recorded in `errors` and yields null, so the other side is
 * still measured and reported.
 */
export async function attempt<T>(what: string, errors: string[], fn: () => Promise<T>): Promise<T | null> {
  try {
    return await fn();
  } catch (e) {
    errors.push(`${what}: ${oneLine(e)}`);
    return null;
  }
}
