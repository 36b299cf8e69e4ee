/**
 * Delta debugging (Zeller's ddmin): the smallest list of items, found by dropping chunks of ever finer
 * size while `fails` still holds, such that removing any single item makes it pass (1-minimal).
 */
export async function shrink<T>(items: readonly T[], fails: (xs: readonly T[]) => Promise<boolean>): Promise<T[]> {
  let cur = [...items];
  let n = 2;
  while (cur.length >= 2) {
    const size = Math.ceil(cur.length / n);
    let reduced = false;
    for (let i = 0; i < cur.length; i += size) {
      const complement = [...cur.slice(0, i), ...cur.slice(i + size)];
      if (await fails(complement)) {
        cur = complement;
        n = Math.max(n - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced) {
      if (n >= cur.length) break;
      n = Math.min(n * 2, cur.length);
    }
  }
  if (cur.length === 1 && (await fails([]))) return [];
  return cur;
}
