import type { TestContext } from 'node:test';

/**
 * Skip a test for a missing capability, or fail it when STRATA_REQUIRE_CAPS=1 (CI here runs as root
 * with every capability, so a skip there would hide a failure).
 */
export function requireCap(t: TestContext, what: string, present: boolean): boolean {
  if (present) return true;
  if (process.env.STRATA_REQUIRE_CAPS === '1') throw new Error(`required capability missing: ${what}`);
  t.skip(`missing capability: ${what}`);
  return false;
}

export const isRoot = (process.getuid?.() ?? 1) === 0;
